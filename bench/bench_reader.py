"""The input layer's reader against plain pandas, one process, one file.

Writes the UCI file repeated ``--times`` times (header once) to a temp dir, then times, best of
``--reps``: ``pandas.read_csv`` as the peer (no layout scan, no checks), and netsec's
``table_io.load_table`` (layout scan + read + row-count cross-check), ``read_csv`` on bytes (the
upload door) and ``iter_table_chunks`` (training files, bounded memory). Prints seconds, rows,
the ratio to pandas, and the chunked reader's peak traced memory (tracemalloc) beside pandas'
whole-file read.

    .venv/bin/python bench/bench_reader.py --times 100
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
UCI = REPO.parent / "shared" / "data" / "phishing_websites.csv"


def best_of(fn: Callable[[], int], reps: int) -> tuple[float, int]:
    """The fastest of ``reps`` calls (seconds) and the rows the call returned."""
    best, rows = float("inf"), 0
    for _ in range(reps):
        start = time.perf_counter()
        rows = fn()
        best = min(best, time.perf_counter() - start)
    return best, rows


def peak_mib(fn: Callable[[], int]) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def main() -> None:
    from netsec_tasks.dataset_schema import load_schema
    from netsec_tasks.table_io import iter_table_chunks, load_table, read_csv

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=UCI, help="a CSV with a header (default: the UCI file)")
    ap.add_argument("--times", type=int, default=100, help="how many copies of its rows to read")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    options = load_schema(REPO / "config" / "schema" / "phishing.yaml").read_options(labelled=True)
    lines = args.source.read_text().splitlines()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.csv"
        path.write_text(lines[0] + "\n" + "\n".join(lines[1:] * args.times) + "\n")
        data = path.read_bytes()
        print(
            f"file: {len(lines) - 1:,} rows x {args.times} = {(len(lines) - 1) * args.times:,} rows, "
            f"{len(data) / 2**20:.0f} MiB"
        )
        cases: list[tuple[str, Callable[[], int]]] = [
            ("pandas.read_csv (peer)", lambda: len(pd.read_csv(path))),
            ("netsec load_table", lambda: len(load_table(path, **options).frame)),
            ("netsec read_csv(bytes)", lambda: len(read_csv(data, **options).frame)),
            ("netsec iter_table_chunks", lambda: sum(len(c) for c in iter_table_chunks(path, **options))),
        ]
        peer = None
        for name, fn in cases:
            sec, rows = best_of(fn, args.reps)
            peer = peer or sec
            print(f"{name:28s} {sec:6.2f} s  {rows:,} rows  x{sec / peer:.2f} of pandas")
        print(
            f"peak traced memory: pandas.read_csv {peak_mib(cases[0][1]):.0f} MiB, "
            f"netsec iter_table_chunks {peak_mib(cases[3][1]):.0f} MiB"
        )


if __name__ == "__main__":
    main()
