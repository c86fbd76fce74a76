"""Benchmark: the netsec serving service vs ``mlflow models serve``, same model version, same machine.

    .venv/bin/python bench/bench_serving.py [--model random_forest,xgboost,hist_gradient_boosting]
    .venv/bin/python bench/bench_serving.py --registry sqlite:///.netsec/mlflow.db \
        --model-name netsec-phishing [--version 3]      # the version `netsec run` promoted

Without ``--registry`` it trains each ``--model`` (netsec_tasks.candidates, at the sizes
the search produces: 300 trees for forests and XGBoost...) as the netsec Pipeline (the schema's
preprocessor: KNNImputer; then the estimator) on the UCI file ``../shared/data/
phishing_websites.csv`` (80/20 split), logs it like ``netsec_tasks.train`` (skops, signature) with
the test split as a Parquet file named by the version's ``netsec.test_uri`` tag, and promotes it
in a temp MLflow store. With ``--registry``
it uses the Production version there (``--version`` must be that version: the service serves
Production only), and its logged test split for the request rows.

Then it starts both servers as subprocesses on loopback ports (one worker each) and drives them
with a lean asyncio HTTP/1.1 keep-alive client (:class:`Connection`; httpx's ~1 ms of CPU per
request made the client the bottleneck): one-row requests and 1000-row batches at a few concurrency levels,
each level bounded by time and request count. Prints requests/s, rows/s, p50/p99 client latency,
the p50 server time of a one-row request (our ``Server-Timing`` header), the ratios, and the
goals of issue 11: one-row p50 server time < 1 ms, one-row throughput >= 20x, 1000-row batches
>= 3x ``mlflow models serve``.

The load client runs on the same (small) machine, so absolute figures include its CPU use; the
ratios are the point.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
UCI = REPO.parent / "shared" / "data" / "phishing_websites.csv"
MODEL = "netsec-phishing"
TARGET = "Result"
# Bench sizes: the measurements (300 trees; XGBoost depth 6) and the upper end of the
# search spaces in netsec_tasks.candidates.
SIZES = {
    "random_forest": {"n_estimators": 300},
    "decision_tree": {},
    "hist_gradient_boosting": {"max_iter": 300, "early_stopping": False},
    "logistic_regression": {},
    "adaboost": {"n_estimators": 80, "estimator__max_depth": 3},
    "xgboost": {"n_estimators": 300, "max_depth": 6},
}
GOAL_SERVER_MS, GOAL_ONE_ROW, GOAL_BATCH = 1.0, 20.0, 3.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_and_register(tracking_uri: str, artifacts: Path, kind: str) -> str:
    """Train ``kind`` as the netsec Pipeline, log it the netsec way, promote it; its name."""
    import mlflow
    import skops.io
    from mlflow import MlflowClient
    from mlflow.models import infer_signature
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline

    from netsec_tasks.candidates import get_candidate
    from netsec_tasks.dataset_schema import load_schema
    from netsec_tasks.transform import build_preprocessor

    schema = load_schema(REPO / "config" / "schema" / "phishing.yaml")
    frame = pd.read_csv(UCI)
    train, test = train_test_split(frame, test_size=0.2, random_state=0)
    x = train[schema.features]
    y = (train[TARGET] == -1).astype(int)  # is_threat: -1 = phishing
    est = get_candidate(kind).build(0).set_params(**SIZES[kind])
    pipe = Pipeline([("preprocess", build_preprocessor(schema)), ("model", est)])
    t0 = time.perf_counter()
    pipe.fit(x, y)
    print(f"trained {kind} {SIZES[kind]} on {len(x)} rows in {time.perf_counter() - t0:.1f}s", flush=True)

    name = f"{MODEL}-{kind}"
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    if client.get_experiment_by_name("netsec-bench") is None:
        client.create_experiment("netsec-bench", artifact_location=artifacts.as_uri())
    mlflow.set_experiment("netsec-bench")
    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(pipe))
    with mlflow.start_run(run_name=f"bench-{kind}"):
        info = mlflow.sklearn.log_model(
            pipe,
            name="model",
            serialization_format="skops",
            skops_trusted_types=trusted,
            signature=infer_signature(x.head(50), pipe.predict(x.head(50))),
            input_example=x.head(5),
        )
    mv = mlflow.register_model(info.model_uri, name)
    # The test split in storage, named by the version's netsec.test_uri (as netsec_tasks.registry).
    test_path = artifacts / f"{name}-test.parquet"
    test_path.parent.mkdir(parents=True, exist_ok=True)
    test.to_parquet(test_path, index=False)
    for k, v in {
        "netsec.features": json.dumps(schema.features),
        "netsec.target": TARGET,
        "netsec.positive_label": "-1",
        "netsec.negative_label": "1",
        "netsec.dataset": schema.name,
        "netsec.test_uri": test_path.as_uri(),
    }.items():
        client.set_model_version_tag(name, mv.version, k, v)
    client.set_registered_model_alias(name, "production", mv.version)
    return name


def production_version(tracking_uri: str, name: str, version: str | None):
    """The Production ModelVersion of ``name`` (alias "production", else stage Production)."""
    from mlflow import MlflowClient

    from serving.loading import resolve_production_version

    settings = SimpleNamespace(
        tracking_uri=tracking_uri, model_name=name, model_alias="production", model_stage="Production"
    )
    _client, mv = resolve_production_version(settings)
    if version is not None and str(mv.version) != str(version):
        sys.exit(
            f"{name} version {version} is not the Production version ({mv.version}) at "
            f"{tracking_uri}: the service serves Production only; promote it or omit --version"
        )
    return MlflowClient(tracking_uri), mv


def request_rows(tracking_uri: str, mv) -> pd.DataFrame:
    """The version's own test split (what serving verifies on), feature columns only."""
    from serving.loading import test_split

    frame, _source = test_split(SimpleNamespace(tracking_uri=tracking_uri), mv)
    features = json.loads((mv.tags or {}).get("netsec.features", "null")) or [
        c for c in frame.columns if c != (mv.tags or {}).get("netsec.target", TARGET)
    ]
    # Rows with gaps are left out: JSON has no NaN, and mlflow's schema refuses nulls in ints.
    return frame[features].dropna().reset_index(drop=True)


def start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited ({proc.returncode}); log:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    sys.exit(f"{url} not ready after {timeout}s; log:\n{log.read_text()[-3000:]}")


def payloads(kind: str, x: pd.DataFrame, rows: int, n: int = 64) -> list[bytes]:
    """Distinct request bodies, cycled by the load loop."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        idx = rng.choice(len(x), size=rows, replace=rows > len(x))
        part = x.iloc[idx]
        if kind == "netsec":
            body = {"records": part.to_dict(orient="records")}
        else:  # MLflow scoring protocol
            body = {"dataframe_split": {"columns": list(part.columns), "data": part.values.tolist()}}
        out.append(json.dumps(body).encode())
    return out


class Connection:
    """One keep-alive HTTP/1.1 connection that sends prepared POSTs and reads the status, the
    headers and the body (Content-Length or chunked).

    A load generator on the same 2-core machine must cost little per request: httpx spends ~1 ms
    of CPU on each, which capped both servers at the client's speed rather than theirs.
    """

    def __init__(self, url: str):
        parsed = httpx.URL(url)
        self.host, self.port, self.path = parsed.host, parsed.port, parsed.raw_path.decode()
        self.reader = self.writer = None

    async def open(self) -> Connection:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    def request(self, body: bytes) -> bytes:
        return (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    async def post(self, request: bytes) -> tuple[int, dict[str, str]]:
        self.writer.write(request)
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            # The server closed the idle keep-alive connection (uvicorn: after 5 s): reconnect
            # and send again, as a client's connection pool does.
            await self.close()
            await self.open()
            self.writer.write(request)
            head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
        }
        if "content-length" in headers:
            await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        return status, headers

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (OSError, asyncio.IncompleteReadError):
            pass


async def load(url: str, bodies: list[bytes], concurrency: int, seconds: float, max_requests: int) -> dict:
    latencies: list[float] = []
    server_ms: list[float] = []
    errors = 0
    sent = 0
    conns = [await Connection(url).open() for _ in range(concurrency)]
    requests = [conns[0].request(b) for b in bodies]
    for conn in conns[:3]:  # warm-up (first-call allocations)
        await conn.post(requests[0])
    deadline = time.perf_counter() + seconds

    async def worker(w: int):
        nonlocal errors, sent
        i = w
        conn = conns[w]
        while time.perf_counter() < deadline and sent < max_requests:
            sent += 1
            t0 = time.perf_counter()
            status, headers = await conn.post(requests[i % len(requests)])
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                errors += 1
            st = headers.get("server-timing", "")
            if "dur=" in st:
                server_ms.append(float(st.split("dur=")[1].split(";")[0]))
            i += concurrency

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    finally:
        elapsed = time.perf_counter() - t0
        for conn in conns:
            await conn.close()
    lat = sorted(latencies)
    return {
        "requests": len(lat),
        "elapsed": elapsed,
        "errors": errors,
        "rps": len(lat) / elapsed,
        "p50": lat[len(lat) // 2] * 1000,
        "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
        "server_p50": statistics.median(server_ms) if server_ms else None,
    }


def main() -> None:
    from netsec_tasks.candidates import CANDIDATES

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--model",
        default="random_forest",
        help=f"comma-separated candidate types to train and bench: {', '.join(CANDIDATES)} "
        "(or 'all'); ignored with --registry",
    )
    ap.add_argument(
        "--registry",
        help="bench the Production version of an existing registry (tracking URI) instead of training",
    )
    ap.add_argument("--model-name", default=MODEL, help="with --registry")
    ap.add_argument("--version", help="with --registry: must be the Production version")
    ap.add_argument("--seconds", type=float, default=5.0, help="per level and server")
    ap.add_argument("--max-requests", type=int, default=20_000, help="per level and server")
    ap.add_argument("--levels", default="1,8,32")
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args()
    levels = [int(v) for v in args.levels.split(",")]
    kinds = list(CANDIDATES) if args.model == "all" else [k.strip() for k in args.model.split(",")]
    unknown = [k for k in kinds if k not in CANDIDATES]
    if unknown:
        sys.exit(f"unknown --model {unknown}; choose from {sorted(CANDIDATES)} or 'all'")
    if not args.registry and not UCI.is_file():
        sys.exit(f"the UCI data set is expected at {UCI}")
    print(
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} "
        "(shared: figures move with other users' load)",
        flush=True,
    )

    tmp = Path(tempfile.mkdtemp(prefix="netsec-bench-"))
    summary = []
    try:
        if args.registry:
            summary.append(bench_version(args.registry, args.model_name, args.version, tmp, args, levels))
        else:
            uri = f"sqlite:///{tmp / 'mlflow.db'}"
            for kind in kinds:
                name = train_and_register(uri, tmp / "artifacts", kind)
                summary.append(bench_version(uri, name, None, tmp, args, levels))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_summary(summary, args.batch)


def bench_version(uri: str, name: str, version: str | None, tmp: Path, args, levels) -> dict:
    """Serve the Production version of ``name`` with both servers and drive them."""
    _client, mv = production_version(uri, name, version)
    x = request_rows(uri, mv)
    procs: list[subprocess.Popen] = []
    try:
        # The pipeline's NETSEC_* settings are not the bench's business; the service's own
        # (NETSEC_SERVING_*) pass through, so a setting's effect can be measured, and so does
        # the storage the version's test split is read from (NETSEC_STORAGE__*).
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("NETSEC_")}
        ours_env = {
            k: v for k, v in os.environ.items() if k.startswith(("NETSEC_SERVING_", "NETSEC_STORAGE__"))
        }
        if ours_env:
            print(
                "netsec settings from the environment: "
                + " ".join(f"{k}={v}" for k, v in sorted(ours_env.items())),
                flush=True,
            )
        base_env.update(
            MLFLOW_TRACKING_URI=uri,
            MLFLOW_ALLOW_PICKLE_DESERIALIZATION="true",
            GIT_PYTHON_REFRESH="quiet",
            # mlflow models serve execs `uvicorn` by name: the venv must be on PATH.
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        ours_port, mlflow_port = free_port(), free_port()
        ours_log, mlflow_log = tmp / f"netsec-{name}.log", tmp / f"mlflow-{name}.log"
        procs.append(
            start(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "serving.app:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(ours_port),
                    "--no-access-log",
                    "--log-level",
                    "warning",
                ],
                {
                    **base_env,
                    "NETSEC_SERVING_LOG_DIR": str(tmp / "predictions"),
                    "NETSEC_SERVING_MODEL_NAME": name,
                    **ours_env,
                },
                ours_log,
            )
        )
        mlflow_exe = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
        procs.append(
            start(
                [
                    mlflow_exe,
                    "models",
                    "serve",
                    "-m",
                    f"models:/{name}/{mv.version}",
                    "--env-manager",
                    "local",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(mlflow_port),
                    "-w",
                    "1",
                ],
                base_env,
                mlflow_log,
            )
        )
        wait_http(f"http://127.0.0.1:{ours_port}/ready", procs[0], ours_log)
        wait_http(f"http://127.0.0.1:{mlflow_port}/ping", procs[1], mlflow_log)
        info = httpx.get(f"http://127.0.0.1:{ours_port}/model").json()
        print(
            f"\n== {name} v{mv.version}: {info['model_class']}; netsec inference path: "
            f"{info['inference_path']}",
            flush=True,
        )

        servers = {
            "netsec": f"http://127.0.0.1:{ours_port}/predict",
            "mlflow": f"http://127.0.0.1:{mlflow_port}/invocations",
        }
        results: dict[tuple[str, str, int], dict] = {}
        for mode, rows in (("1 row", 1), (f"{args.batch} rows", args.batch)):
            bodies = {server: payloads(server, x, rows) for server in servers}
            for c in levels:
                for server, url in servers.items():
                    r = asyncio.run(load(url, bodies[server], c, args.seconds, args.max_requests))
                    r["rows_per_s"] = r["rps"] * rows
                    results[(mode, server, c)] = r
                    st = f"{r['server_p50']:.3f}" if r["server_p50"] is not None else "-"
                    print(
                        f"{mode:>10} {server:>7} c={c:<3} {r['requests']:>6} req "
                        f"{r['rps']:>8.1f} req/s {r['rows_per_s']:>10.0f} rows/s "
                        f"p50 {r['p50']:>8.2f} ms p99 {r['p99']:>8.2f} ms "
                        f"server p50 {st} ms errors {r['errors']}",
                        flush=True,
                    )
        return report(
            results,
            levels,
            args.batch,
            name=name,
            model_class=info["model_class"],
            path=info["inference_path"],
        )
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()


def report(results: dict, levels: list[int], batch: int, **about) -> dict:
    print("\n| mode | conc | server | req/s | rows/s | p50 ms | p99 ms | server p50 ms | errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (mode, name, c), r in results.items():
        st = f"{r['server_p50']:.3f}" if r["server_p50"] is not None else "-"
        print(
            f"| {mode} | {c} | {name} | {r['rps']:.1f} | {r['rows_per_s']:.0f} | {r['p50']:.2f} | "
            f"{r['p99']:.2f} | {st} | {r['errors']} |"
        )
    print()
    best = {}
    for mode in ("1 row", f"{batch} rows"):
        for name in ("netsec", "mlflow"):
            best[(mode, name)] = max(results[(mode, name, c)]["rows_per_s"] for c in levels)
        print(
            f"{mode:>10}: best rows/s netsec {best[(mode, 'netsec')]:.0f} vs mlflow "
            f"{best[(mode, 'mlflow')]:.0f} -> {best[(mode, 'netsec')] / best[(mode, 'mlflow')]:.1f}x"
        )
    for c in levels:
        one = results[("1 row", "netsec", c)]["rps"] / results[("1 row", "mlflow", c)]["rps"]
        many = (
            results[(f"{batch} rows", "netsec", c)]["rows_per_s"]
            / results[(f"{batch} rows", "mlflow", c)]["rows_per_s"]
        )
        print(f"  c={c:<3} one-row throughput {one:.1f}x, batch rows/s {many:.1f}x")
    server = results[("1 row", "netsec", levels[0])]["server_p50"]
    one_row = best[("1 row", "netsec")] / best[("1 row", "mlflow")]
    batch_x = best[(f"{batch} rows", "netsec")] / best[(f"{batch} rows", "mlflow")]
    print(f"netsec p50 server time, one row, c={levels[0]}: {server:.3f} ms")
    print(
        f"goals: server p50 < {GOAL_SERVER_MS:g} ms: {_met(server < GOAL_SERVER_MS)}; one-row >= "
        f"{GOAL_ONE_ROW:g}x: {_met(one_row >= GOAL_ONE_ROW)}; {batch}-row batches >= {GOAL_BATCH:g}x: "
        f"{_met(batch_x >= GOAL_BATCH)}",
        flush=True,
    )
    return {
        **about,
        "server_p50": server,
        "one_row_x": one_row,
        "batch_x": batch_x,
        "one_row_rps": best[("1 row", "netsec")],
        "mlflow_one_row_rps": best[("1 row", "mlflow")],
        "batch_rows_s": best[(f"{batch} rows", "netsec")],
        "mlflow_batch_rows_s": best[(f"{batch} rows", "mlflow")],
    }


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def print_summary(summary: list[dict], batch: int) -> None:
    print(
        f"\n| model | estimator | server p50 ms (< {GOAL_SERVER_MS:g}) | one-row req/s netsec / mlflow "
        f"| x (>= {GOAL_ONE_ROW:g}) | {batch}-row rows/s netsec / mlflow | x (>= {GOAL_BATCH:g}) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in summary:
        print(
            f"| {r['name']} | {r['model_class']} | {r['server_p50']:.3f} | {r['one_row_rps']:.0f} / "
            f"{r['mlflow_one_row_rps']:.0f} | {r['one_row_x']:.1f} | {r['batch_rows_s']:.0f} / "
            f"{r['mlflow_batch_rows_s']:.0f} | {r['batch_x']:.1f} |"
        )
    for r in summary:
        print(f"{r['name']}: {r['path']}")


if __name__ == "__main__":
    main()
