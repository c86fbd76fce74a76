"""Ingestion from MongoDB: throughput and peak memory against the cursor batch size.

Starts an nx-27017 server in a temp dir, loads N synthetic rows with push-data, then ingests
them with several ``source.mongo.batch_size`` values, printing rows/s (a plain run) and the peak
Python heap (tracemalloc, a second run: tracing slows it down). The peak should follow the batch
size, not N: documents are never all held as dicts.

    /work/venv/bin/python bench/bench_ingest.py --rows 20000 --batch-sizes 500 5000 20000
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(workdir: Path) -> tuple[subprocess.Popen, str]:
    exe = shutil.which("nx-27017", path=str(Path(sys.executable).parent)) or "nx-27017"
    port = free_port()
    proc = subprocess.Popen(
        [
            exe,
            "--db",
            str(workdir / "mongo.db"),
            "-p",
            str(port),
            "--log-file",
            str(workdir / "nx.log"),
            "--pid-file",
            str(workdir / "nx.pid"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"mongodb://127.0.0.1:{port}/netsec"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("nx-27017 did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[500, 5000, 20_000])
    args = parser.parse_args()

    from netsec_tasks.config import load_config
    from netsec_tasks.ingest import ingest
    from netsec_tasks.records import RunContext
    from netsec_tasks.sample import make_sample
    from netsec_tasks.sources.mongo import push_data

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        proc, uri = start_server(tmp)
        try:
            csv = tmp / "rows.csv"
            make_sample(args.rows, seed=1).to_csv(csv, index=False)
            base = {"workdir": str(tmp / "work"), "source.kind": "mongo", "source.mongo.uri": uri}
            cfg = load_config(REPO / "config" / "pipeline.yaml", environ={}, overrides=base)
            t0 = time.perf_counter()
            pushed = push_data(csv, cfg, batch_size=5000)
            push_s = time.perf_counter() - t0
            print(
                f"push-data: {pushed.inserted} rows in {push_s:.1f} s "
                f"({pushed.inserted / push_s:,.0f} rows/s)"
            )
            print(f"{'batch_size':>10} {'seconds':>8} {'rows/s':>9} {'py heap peak MB':>16}")
            for batch in args.batch_sizes:
                # Not incremental: every ingest reads the whole collection, which is what is timed.
                cfg_b = cfg.with_overrides(
                    {"source.mongo.batch_size": batch, "source.mongo.incremental": False}
                )
                t0 = time.perf_counter()
                rec = ingest(cfg_b, RunContext.create(cfg_b, f"bench-{batch}"))
                secs = time.perf_counter() - t0
                tracemalloc.start()
                ingest(cfg_b, RunContext.create(cfg_b, f"bench-{batch}-traced"))
                _, py_peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                print(f"{batch:>10} {secs:>8.2f} {rec.rows / secs:>9,.0f} {py_peak / 2**20:>16.1f}")
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
