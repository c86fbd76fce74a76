"""Benchmark: the netsec serving service vs ``mlflow models serve``, same model, same machine.

    /work/venv/bin/python bench/bench_serving.py [--seconds 5] [--levels 1,8,32] [--trees 300]

Trains a random forest (300 trees, the netsec pipeline shape: ColumnTransformer with a KNN
imputer, then the forest) on the UCI file ``../shared/data/phishing_websites.csv``, logs it with
skops and registers it as ``netsec-phishing@production`` in a temp MLflow store. Then starts both
servers as subprocesses on loopback ports (one worker each) and drives them with an async httpx
client: one-row requests and 1000-row batches at a few concurrency levels, each level bounded by
time and request count. Prints requests/s, rows/s, p50/p99 client latency, the p50 server time of
a one-row request (our ``Server-Timing`` header), and the ratios.

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

import httpx
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
UCI = REPO.parent / "shared" / "data" / "phishing_websites.csv"
MODEL = "netsec-phishing"
TARGET = "Result"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_and_register(tracking_uri: str, artifacts: Path, trees: int) -> pd.DataFrame:
    import mlflow
    import skops.io
    from mlflow import MlflowClient
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import KNNImputer
    from sklearn.pipeline import Pipeline

    frame = pd.read_csv(UCI)
    x = frame.drop(columns=[TARGET])
    y = (frame[TARGET] == -1).astype(int)  # is_threat: -1 = phishing
    pipe = Pipeline([
        ("preprocess", ColumnTransformer([("numeric", KNNImputer(), list(x.columns))])),
        ("model", RandomForestClassifier(n_estimators=trees, random_state=0, n_jobs=2)),
    ])
    t0 = time.perf_counter()
    pipe.fit(x, y)
    print(f"trained RF({trees}) on {len(x)} rows in {time.perf_counter() - t0:.1f}s", flush=True)
    pipe.set_params(model__n_jobs=1)

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    client.create_experiment("netsec-bench", artifact_location=artifacts.as_uri())
    mlflow.set_experiment("netsec-bench")
    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(pipe))
    with mlflow.start_run(run_name="bench"):
        info = mlflow.sklearn.log_model(
            pipe, name="model", serialization_format="skops", skops_trusted_types=trusted,
            signature=infer_signature(x.head(50), pipe.predict(x.head(50))), input_example=x.head(5))
    mv = mlflow.register_model(info.model_uri, MODEL)
    for k, v in {"netsec.features": json.dumps(list(x.columns)), "netsec.target": TARGET,
                 "netsec.positive_label": "-1", "netsec.negative_label": "1"}.items():
        client.set_model_version_tag(MODEL, mv.version, k, v)
    client.set_registered_model_alias(MODEL, "production", mv.version)
    return x


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
        idx = rng.choice(len(x), size=rows, replace=False)
        part = x.iloc[idx]
        if kind == "netsec":
            body = {"records": part.to_dict(orient="records")}
        else:  # MLflow scoring protocol
            body = {"dataframe_split": {"columns": list(part.columns), "data": part.values.tolist()}}
        out.append(json.dumps(body).encode())
    return out


async def load(url: str, bodies: list[bytes], concurrency: int, seconds: float,
               max_requests: int) -> dict:
    latencies: list[float] = []
    server_ms: list[float] = []
    errors = 0
    sent = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        for b in bodies[:3]:  # warm-up (connections, first-call allocations)
            await client.post(url, content=b, headers={"Content-Type": "application/json"})
        deadline = time.perf_counter() + seconds

        async def worker(w: int):
            nonlocal errors, sent
            i = w
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                t0 = time.perf_counter()
                r = await client.post(url, content=bodies[i % len(bodies)],
                                      headers={"Content-Type": "application/json"})
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors += 1
                st = r.headers.get("server-timing", "")
                if "dur=" in st:
                    server_ms.append(float(st.split("dur=")[1].split(";")[0]))
                i += concurrency

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        elapsed = time.perf_counter() - t0
    lat = sorted(latencies)
    return {"requests": len(lat), "elapsed": elapsed, "errors": errors,
            "rps": len(lat) / elapsed, "p50": lat[len(lat) // 2] * 1000,
            "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
            "server_p50": statistics.median(server_ms) if server_ms else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="per level and server")
    ap.add_argument("--max-requests", type=int, default=20_000, help="per level and server")
    ap.add_argument("--levels", default="1,8,32")
    ap.add_argument("--trees", type=int, default=300)
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args()
    levels = [int(v) for v in args.levels.split(",")]
    if not UCI.is_file():
        sys.exit(f"the UCI data set is expected at {UCI}")

    tmp = Path(tempfile.mkdtemp(prefix="netsec-bench-"))
    procs: list[subprocess.Popen] = []
    try:
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        x = train_and_register(uri, tmp / "artifacts", args.trees)
        # The pipeline's NETSEC_* settings are not the bench's business; the service's own
        # (NETSEC_SERVING_*) pass through, so a setting's effect can be measured.
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("NETSEC_")}
        ours_env = {k: v for k, v in os.environ.items() if k.startswith("NETSEC_SERVING_")}
        if ours_env:
            print("netsec settings from the environment: "
                  + " ".join(f"{k}={v}" for k, v in sorted(ours_env.items())), flush=True)
        base_env.update(MLFLOW_TRACKING_URI=uri, MLFLOW_ALLOW_PICKLE_DESERIALIZATION="true",
                        GIT_PYTHON_REFRESH="quiet",
                        # mlflow models serve execs `uvicorn` by name: the venv must be on PATH.
                        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        ours_port, mlflow_port = free_port(), free_port()
        ours_log, mlflow_log = tmp / "netsec.log", tmp / "mlflow.log"
        procs.append(start([sys.executable, "-m", "uvicorn", "serving.app:app", "--host", "127.0.0.1",
                            "--port", str(ours_port), "--no-access-log", "--log-level", "warning"],
                           {**base_env, "NETSEC_SERVING_LOG_DIR": str(tmp / "predictions"), **ours_env},
                           ours_log))
        mlflow_exe = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
        procs.append(start([mlflow_exe, "models", "serve", "-m", f"models:/{MODEL}@production",
                            "--env-manager", "local", "-h", "127.0.0.1", "-p", str(mlflow_port),
                            "-w", "1"], base_env, mlflow_log))
        wait_http(f"http://127.0.0.1:{ours_port}/ready", procs[0], ours_log)
        wait_http(f"http://127.0.0.1:{mlflow_port}/ping", procs[1], mlflow_log)
        path = httpx.get(f"http://127.0.0.1:{ours_port}/model").json()["inference_path"]
        print(f"netsec inference path: {path}", flush=True)

        servers = {"netsec": f"http://127.0.0.1:{ours_port}/predict",
                   "mlflow": f"http://127.0.0.1:{mlflow_port}/invocations"}
        results: dict[tuple[str, str, int], dict] = {}
        for mode, rows in (("1 row", 1), (f"{args.batch} rows", args.batch)):
            bodies = {name: payloads(name, x, rows) for name in servers}
            for c in levels:
                for name, url in servers.items():
                    r = asyncio.run(load(url, bodies[name], c, args.seconds, args.max_requests))
                    r["rows_per_s"] = r["rps"] * rows
                    results[(mode, name, c)] = r
                    st = f"{r['server_p50']:.3f}" if r["server_p50"] is not None else "-"
                    print(f"{mode:>10} {name:>7} c={c:<3} {r['requests']:>6} req "
                          f"{r['rps']:>8.1f} req/s {r['rows_per_s']:>10.0f} rows/s "
                          f"p50 {r['p50']:>8.2f} ms p99 {r['p99']:>8.2f} ms "
                          f"server p50 {st} ms errors {r['errors']}", flush=True)
        report(results, levels, args.batch)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def report(results: dict, levels: list[int], batch: int) -> None:
    print("\n| mode | conc | server | req/s | rows/s | p50 ms | p99 ms | server p50 ms | errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (mode, name, c), r in results.items():
        st = f"{r['server_p50']:.3f}" if r["server_p50"] is not None else "-"
        print(f"| {mode} | {c} | {name} | {r['rps']:.1f} | {r['rows_per_s']:.0f} | {r['p50']:.2f} | "
              f"{r['p99']:.2f} | {st} | {r['errors']} |")
    print()
    best = {}
    for mode in ("1 row", f"{batch} rows"):
        for name in ("netsec", "mlflow"):
            best[(mode, name)] = max(results[(mode, name, c)]["rows_per_s"] for c in levels)
        print(f"{mode:>10}: best rows/s netsec {best[(mode, 'netsec')]:.0f} vs mlflow "
              f"{best[(mode, 'mlflow')]:.0f} -> {best[(mode, 'netsec')] / best[(mode, 'mlflow')]:.1f}x")
    for c in levels:
        one = results[("1 row", "netsec", c)]["rps"] / results[("1 row", "mlflow", c)]["rps"]
        many = (results[(f"{batch} rows", "netsec", c)]["rows_per_s"]
                / results[(f"{batch} rows", "mlflow", c)]["rows_per_s"])
        print(f"  c={c:<3} one-row throughput {one:.1f}x, batch rows/s {many:.1f}x")
    server = results[("1 row", "netsec", levels[0])]["server_p50"]
    print(f"netsec p50 server time, one row, c={levels[0]}: {server:.3f} ms (goal < 2 ms)")
    ok1 = best[("1 row", "netsec")] >= 5 * best[("1 row", "mlflow")]
    ok2 = best[(f"{batch} rows", "netsec")] >= 2 * best[(f"{batch} rows", "mlflow")]
    print(f"goals: one-row >= 5x: {'met' if ok1 else 'NOT met'}; batch >= 2x: "
          f"{'met' if ok2 else 'NOT met'}; server p50 < 2 ms: {'met' if server < 2 else 'NOT met'}")


if __name__ == "__main__":
    main()
