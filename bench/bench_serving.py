"""Benchmark: the netsec serving service vs ``mlflow models serve``, same model version, same machine.

    .venv/bin/python bench/bench_serving.py [--model random_forest,xgboost,hist_gradient_boosting]
    .venv/bin/python bench/bench_serving.py --model all --shadow   # also with a challenger in shadow
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

``--shadow`` (issue 25) also registers a challenger of the same type (trained on another split,
alias ``challenger``) and starts a second netsec server that loads it and scores every row with it
in shadow; both netsec servers and ``mlflow models serve`` are driven in turn at each level. It
prints both netsec servers' ratios against MLflow, the p50 (client and server) with and without the
challenger, the rows the challenger scored (its /metrics), and the goal: with a challenger,
the one-row p50 rises by at most 10%.

The load client runs on the same (small) machine, so absolute figures include its CPU use; the
ratios are the point.

``--explain K`` (issue 24) also drives the same netsec server with ``/predict?explain=K`` (each
row's K strongest reasons, netsec_tasks.explain): one-row requests at every level, 1000-row
batches at the first level only (a batch of a 300-tree forest takes minutes), and prints where
the time of one explained row goes, stage by stage, measured in process on the model the server
loaded (fast-path preprocessing, prediction, contributions, folding, reasons). Goal: one-row
server p50 with explain=K <= 3 ms; explain off unchanged. ``--baseline REV`` serves the same
version from the code at git revision REV as a third server (same venv, same run), so "explain
off is unchanged" is measured against the code before the change, not remembered.
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
sys.path.insert(0, str(REPO / "tests"))

from netsec_testing import log_skops_model, serving_command  # noqa: E402

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
GOAL_EXPLAIN_MS = 3.0  # issue 24: one-row server p50 with explain=K
# Issue 25: with a challenger in shadow, Production's one-row p50 rises by at most this much.
GOAL_SHADOW_RISE = 0.10
CHALLENGER = "challenger"  # the registry alias serving scores in shadow
SHADOWED = "netsec+challenger"
BENCH_KEY = "bench-scoring-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_and_register(
    tracking_uri: str, artifacts: Path, kind: str, *, seed: int = 0, alias: str = "production"
) -> str:
    """Train ``kind`` as the netsec Pipeline, log it the netsec way, give it ``alias``; its name.

    ``seed`` picks the 80/20 split and the estimator's seed: a challenger (``seed=1``,
    ``alias="challenger"``) is the same type trained on other rows, as a nightly retrain is."""
    import mlflow
    from mlflow import MlflowClient
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline

    from netsec_tasks.candidates import get_candidate
    from netsec_tasks.dataset_schema import load_schema
    from netsec_tasks.operating_point import DecisionPolicy, choose_threshold, with_threshold
    from netsec_tasks.preprocessing import build_preprocessor

    schema = load_schema(REPO / "config" / "schema" / "phishing.yaml")
    frame = pd.read_csv(UCI)
    train, test = train_test_split(frame, test_size=0.2, random_state=seed)
    x = train[schema.features]
    y = (train[TARGET] == -1).astype(int)  # is_threat: -1 = phishing
    est = get_candidate(kind).build(seed).set_params(**SIZES[kind])
    pipe = Pipeline([("preprocess", build_preprocessor(schema)), ("model", est)])
    t0 = time.perf_counter()
    pipe.fit(x, y)
    print(f"trained {kind} {SIZES[kind]} on {len(x)} rows in {time.perf_counter() - t0:.1f}s", flush=True)
    # The registered artifact, as netsec_tasks.train makes it: the Pipeline in a
    # FixedThresholdClassifier. The threshold is chosen for the schema's budget on the training
    # rows' scores (the pipeline uses out-of-fold scores; only the artifact's form matters here).
    spec = schema.decision
    policy = DecisionPolicy(spec.max_false_positive_rate, spec.expected_threat_rate, spec.objective, 0.95)
    model = with_threshold(pipe, choose_threshold(y, pipe.predict_proba(x)[:, 1], policy).threshold)

    name = f"{MODEL}-{kind}"
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    if client.get_experiment_by_name("netsec-bench") is None:
        client.create_experiment("netsec-bench", artifact_location=artifacts.as_uri())
    mlflow.set_experiment("netsec-bench")
    with mlflow.start_run(run_name=f"bench-{kind}-{alias}"):
        info = log_skops_model(model, x, signature_rows=50)
    mv = mlflow.register_model(info.model_uri, name)
    # The test split in storage, named by the version's netsec.test_uri (as netsec_tasks.registry).
    test_path = artifacts / f"{name}-{mv.version}-test.parquet"
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
    client.set_registered_model_alias(name, alias, mv.version)
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


def start(cmd: list[str], env: dict, log: Path, cwd: Path = REPO) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)


def uvicorn_cmd(port: int) -> list[str]:
    return serving_command(port, "--no-access-log", "--log-level", "warning")


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

    def __init__(self, url: str, headers: dict[str, str] | None = None):
        self.headers = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        parsed = httpx.URL(url)
        self.host, self.port, self.path = parsed.host, parsed.port, parsed.raw_path.decode()
        self.reader = self.writer = None

    async def open(self) -> Connection:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    def request(self, body: bytes) -> bytes:
        return (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{self.headers}\r\n"
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


async def load(
    url: str,
    bodies: list[bytes],
    concurrency: int,
    seconds: float,
    max_requests: int,
    headers: dict[str, str] | None = None,
) -> dict:
    latencies: list[float] = []
    server_ms: list[float] = []
    errors = 0
    sent = 0
    conns = [await Connection(url, headers).open() for _ in range(concurrency)]
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
    ap.add_argument(
        "--shadow",
        action="store_true",
        help="also serve a challenger (alias 'challenger': a second model of the same type, or "
        "the registry's with --registry) and measure netsec with and without it",
    )
    ap.add_argument("--seconds", type=float, default=5.0, help="per level and server")
    ap.add_argument("--max-requests", type=int, default=20_000, help="per level and server")
    ap.add_argument("--levels", default="1,8,32")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument(
        "--explain", type=int, default=0, metavar="K", help="also drive /predict?explain=K (issue 24)"
    )
    ap.add_argument(
        "--baseline",
        metavar="REV",
        help="also serve the version from the code at this git revision (e.g. the commit before a "
        "change), in the same run",
    )
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
    if args.baseline:
        args.baseline_dir = baseline_tree(args.baseline, tmp / "baseline")
    summary = []
    try:
        if args.registry:
            summary.append(bench_version(args.registry, args.model_name, args.version, tmp, args, levels))
        else:
            uri = f"sqlite:///{tmp / 'mlflow.db'}"
            for kind in kinds:
                name = train_and_register(uri, tmp / "artifacts", kind)
                if args.shadow:
                    train_and_register(uri, tmp / "artifacts", kind, seed=1, alias=CHALLENGER)
                summary.append(bench_version(uri, name, None, tmp, args, levels))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_summary(summary, args.batch)
    if args.explain:
        print_explain_summary(summary, args.explain, args.batch)


def baseline_tree(rev: str, dest: Path) -> Path:
    """The repository at ``rev`` (``git archive``), to serve from: the same venv imports its
    ``serving`` and ``netsec_tasks`` because the server's working directory comes first on
    ``sys.path``."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    print(f"baseline: the code at {rev} ({commit}) in {dest}", flush=True)
    return dest


def bench_version(uri: str, name: str, version: str | None, tmp: Path, args, levels) -> dict:
    """Serve the Production version of ``name`` with netsec (and, with ``--shadow``, netsec with
    the challenger beside it) and with ``mlflow models serve``, and drive them in turn."""
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
        # With a scoring key, as deployed (compose sets one): it also opens /model's details.
        key = {"X-API-Key": BENCH_KEY}
        # "netsec" never loads a challenger; "netsec+challenger" loads the registry's.
        variants = {"netsec": ""} | ({SHADOWED: CHALLENGER} if args.shadow else {})
        servers: dict[str, tuple[str, dict[str, str] | None, str]] = {}
        ready: list[tuple[str, subprocess.Popen, Path]] = []
        for server, alias in variants.items():
            port, log = free_port(), tmp / f"{server}-{name}.log"
            env = {
                **base_env,
                "NETSEC_SERVING_LOG_DIR": str(tmp / f"predictions-{server}"),
                "NETSEC_SERVING_MODEL_NAME": name,
                "NETSEC_SERVING_API_KEY": BENCH_KEY,
                "NETSEC_SERVING_CHALLENGER_ALIAS": alias,
                **ours_env,
            }
            procs.append(start(uvicorn_cmd(port), env, log))
            ready.append((f"http://127.0.0.1:{port}/ready", procs[-1], log))
            servers[server] = (f"http://127.0.0.1:{port}/predict", key, "netsec")
            if server == "netsec" and args.explain:
                # The same server, asked for each row's reasons.
                servers["reasons"] = (
                    f"http://127.0.0.1:{port}/predict?explain={args.explain}",
                    key,
                    "netsec",
                )
        baseline = getattr(args, "baseline_dir", None)
        if baseline is not None:
            # The same version served by the code at --baseline REV (same venv, same run).
            port, log = free_port(), tmp / f"baseline-{name}.log"
            env = {
                **base_env,
                "NETSEC_SERVING_LOG_DIR": str(tmp / "predictions-baseline"),
                "NETSEC_SERVING_MODEL_NAME": name,
                "NETSEC_SERVING_API_KEY": BENCH_KEY,
                **ours_env,
            }
            procs.append(start(uvicorn_cmd(port), env, log, cwd=baseline))
            ready.append((f"http://127.0.0.1:{port}/ready", procs[-1], log))
            servers["baseline"] = (f"http://127.0.0.1:{port}/predict", key, "netsec")
        mlflow_port, mlflow_log = free_port(), tmp / f"mlflow-{name}.log"
        mlflow_exe = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
        cmd = [mlflow_exe, "models", "serve", "-m", f"models:/{name}/{mv.version}"]
        cmd += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(mlflow_port), "-w", "1"]
        procs.append(start(cmd, base_env, mlflow_log))
        ready.append((f"http://127.0.0.1:{mlflow_port}/ping", procs[-1], mlflow_log))
        servers["mlflow"] = (f"http://127.0.0.1:{mlflow_port}/invocations", None, "mlflow")
        for url, proc, log in ready:
            wait_http(url, proc, log)
        info = _model_info(servers["netsec"][0], key)
        print(
            f"\n== {name} v{mv.version}: {info['model_class']}; netsec inference path: "
            f"{info.get('inference_path')}",
            flush=True,
        )
        if args.explain:
            print(f"reasons: {info['reasons']['detail']}", flush=True)
        challenger = None
        if args.shadow:
            challenger = _challenger_info(servers[SHADOWED][0], key)
            print(
                f"   challenger v{challenger['version']}: {challenger['model_class']}; inference path: "
                f"{challenger.get('inference_path')}",
                flush=True,
            )

        results: dict[tuple[str, str, int], dict] = {}
        for mode, rows in (("1 row", 1), (f"{args.batch} rows", args.batch)):
            bodies = {kind: payloads(kind, x, rows) for kind in ("netsec", "mlflow")}
            for c in levels:
                for server, (url, headers, kind) in servers.items():
                    if server == "reasons" and rows > 1 and c != levels[0]:
                        continue  # explained batches of a big forest take minutes: one level
                    r = asyncio.run(load(url, bodies[kind], c, args.seconds, args.max_requests, headers))
                    r["rows_per_s"] = r["rps"] * rows
                    results[(mode, server, c)] = r
                    st = f"{r['server_p50']:.3f}" if r["server_p50"] is not None else "-"
                    print(
                        f"{mode:>10} {server:>17} c={c:<3} {r['requests']:>6} req "
                        f"{r['rps']:>8.1f} req/s {r['rows_per_s']:>10.0f} rows/s "
                        f"p50 {r['p50']:>8.2f} ms p99 {r['p99']:>8.2f} ms "
                        f"server p50 {st} ms errors {r['errors']}",
                        flush=True,
                    )
        shadowed = _shadow_counts(servers[SHADOWED][0], key) if args.shadow else None
        about = report(
            results,
            levels,
            args.batch,
            [s for s in servers if s != "reasons"],  # reasons: explain_report
            name=name,
            model_class=info["model_class"],
            path=info.get("inference_path"),
            challenger=challenger,
            shadowed=shadowed,
        )
        if args.explain:
            about.update(explain_report(results, levels, args.batch, args.explain, baseline is not None))
            about["breakdown"] = time_breakdown(uri, name, x, args.explain, tmp)
        return about
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()


def _model_info(predict_url: str, key: dict[str, str]) -> dict:
    return httpx.get(predict_url.replace("/predict", "/model"), headers=key).json()


def _challenger_info(predict_url: str, key: dict[str, str]) -> dict:
    """The challenger /model names; waits for its load (it loads after Production)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        challenger = _model_info(predict_url, key).get("challenger")
        if challenger:
            return challenger
        time.sleep(0.5)
    sys.exit(f"{predict_url}: no challenger loaded after 300 s; see its log")


def _shadow_counts(predict_url: str, key: dict[str, str]) -> dict[str, float]:
    """Rows the challenger scored, and rows it could not (/metrics, netsec_shadow_rows_total)."""
    text = httpx.get(predict_url.replace("/predict", "/metrics"), headers=key).text
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("netsec_shadow_rows_total{"):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            counts[outcome] = counts.get(outcome, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def report(results: dict, levels: list[int], batch: int, servers: list[str], **about) -> dict:
    print("\n| mode | conc | server | req/s | rows/s | p50 ms | p99 ms | server p50 ms | errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (mode, name, c), r in results.items():
        st = f"{r['server_p50']:.3f}" if r["server_p50"] is not None else "-"
        print(
            f"| {mode} | {c} | {name} | {r['rps']:.1f} | {r['rows_per_s']:.0f} | {r['p50']:.2f} | "
            f"{r['p99']:.2f} | {st} | {r['errors']} |"
        )
    print()
    modes = ("1 row", f"{batch} rows")
    best = {(m, s): max(results[(m, s, c)]["rows_per_s"] for c in levels) for m in modes for s in servers}
    ours = [s for s in servers if s != "mlflow"]
    out: dict = {**about}
    for server in ours:
        for mode in modes:
            print(
                f"{mode:>10}: best rows/s {server} {best[(mode, server)]:.0f} vs mlflow "
                f"{best[(mode, 'mlflow')]:.0f} -> {best[(mode, server)] / best[(mode, 'mlflow')]:.1f}x"
            )
        for c in levels:
            one = results[("1 row", server, c)]["rps"] / results[("1 row", "mlflow", c)]["rps"]
            many = (
                results[(modes[1], server, c)]["rows_per_s"] / results[(modes[1], "mlflow", c)]["rows_per_s"]
            )
            print(f"  {server} c={c:<3} one-row throughput {one:.1f}x, batch rows/s {many:.1f}x")
        server_p50 = results[("1 row", server, levels[0])]["server_p50"]
        one_row = best[("1 row", server)] / best[("1 row", "mlflow")]
        batch_x = best[(modes[1], server)] / best[(modes[1], "mlflow")]
        print(
            f"goals ({server}): server p50 < {GOAL_SERVER_MS:g} ms: {_met(server_p50 < GOAL_SERVER_MS)} "
            f"({server_p50:.3f} ms, one row, c={levels[0]}); one-row >= {GOAL_ONE_ROW:g}x: "
            f"{_met(one_row >= GOAL_ONE_ROW)} ({one_row:.1f}x); {batch}-row batches >= {GOAL_BATCH:g}x: "
            f"{_met(batch_x >= GOAL_BATCH)} ({batch_x:.1f}x)",
            flush=True,
        )
        out[server] = {
            "server_p50": server_p50,
            "one_row_x": one_row,
            "batch_x": batch_x,
            "one_row_rps": best[("1 row", server)],
            "batch_rows_s": best[(modes[1], server)],
        }
    out["mlflow"] = {"one_row_rps": best[("1 row", "mlflow")], "batch_rows_s": best[(modes[1], "mlflow")]}
    if SHADOWED in servers:
        rises = {}
        for mode in modes:
            for c in levels:
                alone, both = results[(mode, "netsec", c)], results[(mode, SHADOWED, c)]
                rises[(mode, c)] = both["p50"] / alone["p50"] - 1
                print(
                    f"  with the challenger, {mode} c={c}: p50 {alone['p50']:.2f} -> {both['p50']:.2f} ms "
                    f"({rises[(mode, c)]:+.0%}); server p50 {_ms(alone['server_p50'])} -> "
                    f"{_ms(both['server_p50'])} ms; rows/s {alone['rows_per_s']:.0f} -> {both['rows_per_s']:.0f}"
                )
        rise = rises[("1 row", levels[0])]
        print(
            f"goal: with a challenger, one-row p50 (c={levels[0]}) rises by at most "
            f"{GOAL_SHADOW_RISE:.0%}: {_met(rise <= GOAL_SHADOW_RISE)} ({rise:+.0%}); rows the "
            f"challenger scored: {about.get('shadowed')}",
            flush=True,
        )
        out["p50_rise"] = rise
        out["p50_rise_batch"] = rises[(modes[1], levels[0])]
    return out


def _ms(v: float | None) -> str:
    return f"{v:.3f}" if v is not None else "-"


def explain_report(results: dict, levels: list[int], batch: int, k: int, baseline: bool) -> dict:
    """With and without reasons on the same server (and the code before, with --baseline)."""
    one, many, c0 = "1 row", f"{batch} rows", levels[0]
    off, on = results[(one, "netsec", c0)], results[(one, "reasons", c0)]
    print(f"\nreasons (explain={k}) vs none, same server:")
    for c in levels:
        a, b = results[(one, "netsec", c)], results[(one, "reasons", c)]
        print(
            f"  1 row c={c:<3} req/s {a['rps']:8.1f} -> {b['rps']:8.1f} ({b['rps'] / a['rps']:.2f}x); "
            f"p50 {a['p50']:.2f} -> {b['p50']:.2f} ms; server p50 {a['server_p50']:.3f} -> "
            f"{b['server_p50']:.3f} ms"
        )
    a, b = results[(many, "netsec", c0)], results[(many, "reasons", c0)]
    print(
        f"  {many} c={c0:<3} rows/s {a['rows_per_s']:8.0f} -> {b['rows_per_s']:8.0f} "
        f"({b['rows_per_s'] / a['rows_per_s']:.3f}x); p50 {a['p50']:.1f} -> {b['p50']:.1f} ms"
    )
    out = {
        "explain_server_p50": on["server_p50"],
        "explain_p50": on["p50"],
        "off_server_p50": off["server_p50"],
        "off_p50": off["p50"],
        "explain_one_row_rps": max(results[(one, "reasons", c)]["rps"] for c in levels),
        "off_one_row_rps": max(results[(one, "netsec", c)]["rps"] for c in levels),
        "explain_batch_rows_s": b["rows_per_s"],
        "off_batch_rows_s": a["rows_per_s"],
        "explain_batch_p50": b["p50"],
        "off_batch_p50": a["p50"],
    }
    print(
        f"goal: one-row server p50 with explain={k} <= {GOAL_EXPLAIN_MS:g} ms: "
        f"{on['server_p50']:.3f} ms, {_met(on['server_p50'] <= GOAL_EXPLAIN_MS)}"
    )
    if baseline:
        base = results[(one, "baseline", c0)]
        out["baseline_server_p50"] = base["server_p50"]
        out["baseline_one_row_rps"] = max(results[(one, "baseline", c)]["rps"] for c in levels)
        out["baseline_batch_rows_s"] = results[(many, "baseline", c0)]["rows_per_s"]
        print(
            f"explain off vs the code before (--baseline), same run: one-row server p50 "
            f"{off['server_p50']:.3f} vs {base['server_p50']:.3f} ms; best one-row req/s "
            f"{out['off_one_row_rps']:.0f} vs {out['baseline_one_row_rps']:.0f}; {many} rows/s "
            f"{a['rows_per_s']:.0f} vs {out['baseline_batch_rows_s']:.0f}"
        )
    return out


def time_breakdown(uri: str, name: str, x: pd.DataFrame, k: int, tmp: Path, budget_s: float = 5.0) -> dict:
    """Where the time of one explained row goes: the version loaded in this process as the
    server loads it (serving.loading), each stage timed on rows of its test split, one at a
    time (median over as many rows as fit in ``budget_s``, at least 5; microseconds)."""
    import msgspec

    from netsec_tasks.explain import Contributions
    from serving.loading import load_version, resolve_production_version
    from serving.settings import Settings

    settings = Settings(mlflow_tracking_uri=uri, model_name=name, log_dir=str(tmp / "in-process"))
    client, mv = resolve_production_version(settings)
    model = load_version(settings, client, mv)
    ex, fast = model.explainer, model.fast
    if ex is None:
        print(f"no reasons for {name}: {model.reasons_status}")
        return {}
    rows = x.to_numpy(dtype=np.float64)
    stages: dict[str, list[float]] = {
        k_: []
        for k_ in ("preprocess", "predict", "contributions", "fold", f"top {k} reasons", "JSON", "total")
    }
    start = time.perf_counter()
    i = 0
    while i < len(rows) and (i < 5 or time.perf_counter() - start < budget_s):
        row = rows[i : i + 1]
        t0 = time.perf_counter()
        z = fast.preprocess(row) if fast is not None else ex.preprocessed(row)
        t1 = time.perf_counter()
        model.predict(row)
        t2 = time.perf_counter()
        values, base = ex.method.contributions(z)
        t3 = time.perf_counter()
        folded = ex.folding.fold(values)
        t4 = time.perf_counter()
        reasons = ex.reasons(row, k, z=z, contributions=Contributions(ex.features, folded, base, ex.unit))
        t5 = time.perf_counter()
        msgspec.json.encode([[r.as_dict() for r in reasons[0]]])
        t6 = time.perf_counter()
        for key, dt_ in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5, t6 - t0)):
            stages[key].append(dt_ * 1e6)
        i += 1
    med = {key: float(np.median(v)) for key, v in stages.items()}
    print(
        f"where one explained row's time goes, in process ({i} rows, median us; the prediction "
        f"is the served fast path, the rest is explain=K): "
        + ", ".join(f"{key} {v:.0f}" for key, v in med.items()),
        flush=True,
    )
    return med


def print_explain_summary(summary: list[dict], k: int, batch: int) -> None:
    print(
        f"\n| model | one-row server p50 ms: off / explain={k} (goal <= {GOAL_EXPLAIN_MS:g}) | one-row "
        f"client p50 ms off / on | best one-row req/s off / on | {batch}-row rows/s off / on | "
        f"{batch}-row p50 s off / on | off vs code before: server p50 ms, req/s |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in summary:
        before = (
            f"{r['off_server_p50']:.3f} vs {r['baseline_server_p50']:.3f}, {r['off_one_row_rps']:.0f} vs "
            f"{r['baseline_one_row_rps']:.0f}"
            if "baseline_server_p50" in r
            else "-"
        )
        print(
            f"| {r['name']} | {r['off_server_p50']:.3f} / {r['explain_server_p50']:.3f} "
            f"({_met(r['explain_server_p50'] <= GOAL_EXPLAIN_MS)}) | {r['off_p50']:.2f} / "
            f"{r['explain_p50']:.2f} | {r['off_one_row_rps']:.0f} / {r['explain_one_row_rps']:.0f} | "
            f"{r['off_batch_rows_s']:.0f} / {r['explain_batch_rows_s']:.0f} | "
            f"{r['off_batch_p50'] / 1000:.2f} / {r['explain_batch_p50'] / 1000:.2f} | {before} |"
        )
    print("\nwhere one explained row's time goes (in process, median us):")
    for r in summary:
        if r.get("breakdown"):
            print(f"  {r['name']}: " + ", ".join(f"{key} {v:.0f}" for key, v in r["breakdown"].items()))


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def print_summary(summary: list[dict], batch: int) -> None:
    shadow = any(SHADOWED in r for r in summary)
    cols = [
        "model",
        "estimator",
        f"server p50 ms (< {GOAL_SERVER_MS:g})",
        "one-row req/s netsec / mlflow",
        f"x (>= {GOAL_ONE_ROW:g})",
        f"{batch}-row rows/s netsec / mlflow",
        f"x (>= {GOAL_BATCH:g})",
    ]
    if shadow:
        cols += [
            "with challenger: one-row x",
            f"{batch}-row x",
            f"one-row p50 rise (<= {GOAL_SHADOW_RISE:.0%})",
            f"{batch}-row p50 rise",
        ]
    print("\n| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in summary:
        ours, ml = r["netsec"], r["mlflow"]
        cells = [
            r["name"],
            r["model_class"],
            f"{ours['server_p50']:.3f}",
            f"{ours['one_row_rps']:.0f} / {ml['one_row_rps']:.0f}",
            f"{ours['one_row_x']:.1f}",
            f"{ours['batch_rows_s']:.0f} / {ml['batch_rows_s']:.0f}",
            f"{ours['batch_x']:.1f}",
        ]
        if shadow:
            both = r[SHADOWED]
            cells += [
                f"{both['one_row_x']:.1f}",
                f"{both['batch_x']:.1f}",
                f"{r['p50_rise']:+.0%}",
                f"{r['p50_rise_batch']:+.0%}",
            ]
        print("| " + " | ".join(cells) + " |")
    for r in summary:
        print(f"{r['name']}: {r['path']}")
        if r.get("challenger"):
            print(f"  challenger v{r['challenger']['version']}: {r['challenger'].get('inference_path')}")


if __name__ == "__main__":
    main()
