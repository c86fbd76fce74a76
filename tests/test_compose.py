"""The full stack's files, checked the way a reviewer would, without a Docker engine.

docker-compose.yaml (interpolated with .env.example) against the Compose Specification schema;
the Dockerfiles with hadolint; and the wiring: every environment variable the code reads is set
where that code runs, the pipeline config and the serving settings resolve to the stack's own
services, secrets come from .env only, images are pinned, health checks and start-up order hold,
workers scale. The lists of variables, connections and settings come from the code itself
(a regex over netsec_tasks/, serving/, dags/, plugins/; the pydantic models), not from a copy here.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import pytest

from netsec_testing import load_script

REPO = Path(__file__).resolve().parent.parent

cc = load_script("check_compose")

COMPOSE_TEXT = cc.COMPOSE_FILE.read_text(encoding="utf-8")
ENV = cc.parse_env_file(cc.ENV_EXAMPLE)
RAW = cc.load_raw_compose()
DOC = cc.load_compose(env=ENV)
SERVICES: dict[str, dict] = DOC["services"]
CONSTRAINTS = dict(
    line.split("==", 1)
    for line in (REPO / "requirements" / "constraints.txt").read_text().splitlines()
    if "==" in line and not line.startswith("#")
)
PIN = {name.lower(): version for name, version in CONSTRAINTS.items()}

# Which code runs in which service: the Airflow image runs the DAG, its plugin and the step
# functions; the serving image runs the app, and the netsec CLI for the seed job.
CODE_IN = {
    "Dockerfile.airflow": ("netsec_tasks", "dags", "plugins"),
    "Dockerfile.serving": ("netsec_tasks", "serving"),
}

# Variables the code reads that may stay unset in a service, and why. Anything else the code
# reads must be set (compose environment or the image's ENV) where that code runs.
OPTIONAL_ENV: dict[tuple[str, str], str] = {
    ("*", "AIRFLOW__API__BASE_URL"): "unset, the plugin's drift links stay relative to the page",
    ("mongo-seed", "MLFLOW_TRACKING_URI"): "push-data, make-sample and fetch-dataset never use MLflow",
    (
        "*",
        "XDG_CACHE_HOME",
    ): "unset, fetch-dataset caches under ~/.cache of the image's user (a created home)",
    **{
        (dask, var): "a Dask service runs step functions with the config each task sends, no plugin"
        for dask in ("dask-scheduler", "dask-worker")
        for var in ("AIRFLOW__NETSEC__MLFLOW_UI_URL", "MLFLOW_TRACKING_URI")
    },
}


# --------------------------------------------------------------------------- helpers


def env_of(name: str) -> dict[str, str]:
    """What a container of the service starts with: its image's ENV (when built here) + compose."""
    svc = SERVICES[name]
    env: dict[str, str] = {}
    dockerfile = built_from(name)
    if dockerfile:
        env.update(cc.dockerfile_env(REPO / dockerfile))
    raw = svc.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    env.update({k: "" if v is None else str(v) for k, v in raw.items()})
    return env


def built_from(name: str) -> str | None:
    build = SERVICES[name].get("build")
    if build is None:
        return None
    if isinstance(build, str):
        return "Dockerfile"
    return build.get("dockerfile", "Dockerfile")


def services_built_from(dockerfile: str) -> list[str]:
    return [n for n in SERVICES if built_from(n) == dockerfile]


# The Dask cluster (training.engine=dask) runs the Airflow image with the `dask` CLI; the other
# services built from it are Airflow's components.
DASK = [
    n
    for n in services_built_from("Dockerfile.airflow")
    if (SERVICES[n].get("entrypoint") or [""])[-1] == "dask"
]
AIRFLOW = [n for n in services_built_from("Dockerfile.airflow") if n not in DASK]
SERVING_IMAGE = services_built_from("Dockerfile.serving")


def one_shot(name: str) -> bool:
    return str(SERVICES[name].get("restart", "no")) == "no"


def long_lived() -> list[str]:
    return [n for n in SERVICES if not one_shot(n)]


def service_with_image(prefix: str) -> str:
    matches = [n for n, s in SERVICES.items() if str(s.get("image", "")).startswith(prefix)]
    assert len(matches) == 1, f"expected one service running {prefix}*, found {matches}"
    return matches[0]


def command_text(name: str) -> str:
    cmd = SERVICES[name].get("command") or []
    return cmd if isinstance(cmd, str) else " ".join(map(str, cmd))


def flag(name: str, option: str) -> str | None:
    """The value of --option=value / --option value in a service's command."""
    cmd = SERVICES[name].get("command") or []
    words = shlex.split(cmd) if isinstance(cmd, str) else list(map(str, cmd))
    for i, w in enumerate(words):
        if w.startswith(option + "="):
            return w.split("=", 1)[1]
        if w == option and i + 1 < len(words):
            return words[i + 1]
    return None


def host_port(uri: str) -> tuple[str, int | None]:
    parsed = urlparse(uri)
    return parsed.hostname, parsed.port


def buckets_created() -> set[str]:
    """Buckets the MinIO one-shot job creates (`mc mb ... alias/bucket`)."""
    found: set[str] = set()
    for name in SERVICES:
        for line in command_text(name).splitlines():
            if re.search(r"\bmc mb\b", line):
                found |= set(re.findall(r"\b[\w-]+/([a-z0-9][a-z0-9.-]+)\b", line))
    return found


def pipeline_config(service: str):
    """The pipeline config a process in this service loads (file from the image + its env)."""
    from netsec_tasks.config import load_config

    env = env_of(service)
    config_file = image_path_to_repo(built_from(service), env["NETSEC_CONFIG"])
    return load_config(config_file, environ=env)


def image_path_to_repo(dockerfile: str, image_path: str) -> Path:
    """The repo file a path inside the image came from (through the Dockerfile's COPY lines)."""
    final = cc.parse_dockerfile(REPO / dockerfile)[-1]
    for instr, args in final.instructions:
        if instr != "COPY" or "--from=" in args:
            continue
        words = [w for w in args.split() if not w.startswith("--")]
        src, dest = words[0], words[-1].rstrip("/")
        if image_path == dest or image_path.startswith(dest + "/"):
            return REPO / src / image_path[len(dest) :].lstrip("/")
    raise AssertionError(f"{dockerfile}: no COPY puts anything at {image_path}")


def code_env_reads() -> dict[str, list[str]]:
    """Environment variables read in the code: name -> ['path:line', ...] (literal names only).

    os.environ.get("X"), os.environ["X"] (not assignments), os.getenv("X"), environ.get("X"),
    and Airflow config reads conf.get("section", "key") as AIRFLOW__SECTION__KEY.
    """
    patterns = [
        re.compile(r"""\benviron\.get\(\s*["']([A-Z][A-Z0-9_]*)["']"""),
        re.compile(r"""\benviron\[\s*["']([A-Z][A-Z0-9_]*)["']\s*\](?!\s*=[^=])"""),
        re.compile(r"""\bgetenv\(\s*["']([A-Z][A-Z0-9_]*)["']"""),
    ]
    conf_read = re.compile(r"""\bconf\.get(?:boolean|int|float)?\(\s*["'](\w+)["']\s*,\s*["'](\w+)["']""")
    reads: dict[str, list[str]] = {}
    for package in {p for pkgs in CODE_IN.values() for p in pkgs}:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO)
            for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                names = [m.group(1) for p in patterns for m in p.finditer(line)]
                names += [f"AIRFLOW__{s.upper()}__{k.upper()}" for s, k in conf_read.findall(line)]
                for name in names:
                    reads.setdefault(name, []).append(f"{rel}:{lineno}")
    return reads


def dag_connection_ids() -> set[str]:
    """Connection ids the DAG and the plugin use (X_CONN_ID = "..." or conn_id="...")."""
    ids: set[str] = set()
    for package in ("dags", "plugins"):
        for path in (REPO / package).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            ids |= set(re.findall(r"""\b\w*CONN_ID\s*=\s*["']([A-Za-z0-9_]+)["']""", text))
            ids |= set(re.findall(r"""\b\w*conn_id\s*=\s*["']([A-Za-z0-9_]+)["']""", text))
    return ids


# --------------------------------------------------------------------------- the schema


def test_compose_file_matches_the_compose_specification():
    assert cc.schema_errors(DOC) == []


def test_schema_check_rejects_what_docker_compose_would():
    """The validator is live: a misspelt key and a bad condition are reported with their path."""
    broken = copy.deepcopy(DOC)
    broken["services"]["redis"]["healtcheck"] = broken["services"]["redis"].pop("healthcheck")
    broken["services"]["serving"]["depends_on"]["mlflow"]["condition"] = "service_ready"
    errors = cc.schema_errors(broken)
    assert any(e.startswith("services.redis") and "healtcheck" in e for e in errors), errors
    assert any(e.startswith("services.serving.depends_on") for e in errors), errors


def test_script_entry_point_passes(capsys):
    assert cc.main(["--env-file", str(cc.ENV_EXAMPLE)]) == 0
    assert capsys.readouterr().out.startswith("OK:")


# --------------------------------------------------------------------------- .env and secrets


def test_env_example_sets_every_variable_compose_reads_and_no_others():
    used = cc.variables_used(COMPOSE_TEXT)
    required = sorted(v for v, op in used.items() if op.endswith("?"))
    assert required, "no ${VAR:?} in docker-compose.yaml: secrets would silently be empty"
    assert [v for v in required if not ENV.get(v)] == []
    # COMPOSE_*: docker compose's own settings (COMPOSE_PROJECT_NAME), read from .env, not interpolated.
    own = {v for v in ENV if v.startswith("COMPOSE_")}
    assert sorted(set(ENV) - set(used) - own) == [], ".env.example sets variables compose never reads"
    unset_plain = sorted(v for v, op in used.items() if op == "" and v not in ENV)
    assert unset_plain == [], "plain ${VAR} without default or .env.example value"


def test_env_example_values_equal_the_compose_defaults():
    """Deleting an optional line from .env changes nothing: the default says the same."""
    for match in re.finditer(r"\$\{([A-Za-z_]\w*):-([^}]*)\}", COMPOSE_TEXT):
        var, default = match.groups()
        if var in ENV:
            assert ENV[var] == default, f"{var}: .env.example says {ENV[var]!r}, compose default {default!r}"


def test_a_missing_secret_stops_compose_naming_it():
    env = {k: v for k, v in ENV.items() if k != "AIRFLOW_FERNET_KEY"}
    with pytest.raises(cc.InterpolationError, match="AIRFLOW_FERNET_KEY"):
        cc.load_compose(env=env)


def test_interpolation_follows_the_compose_rules():
    env = {"SET": "x", "EMPTY": ""}
    assert (
        cc.interpolate("a$$b ${SET} $SET ${EMPTY:-d} ${EMPTY-d} ${NOPE-d} ${SET:+alt}", env)
        == "a$b x x d  d alt"
    )
    assert cc.interpolate("${NOPE:-${SET}}", env) == "x"
    with pytest.raises(cc.InterpolationError, match="EMPTY"):
        cc.interpolate("${EMPTY:?give it}", env)
    with pytest.raises(cc.InterpolationError):
        cc.interpolate("cost: 5$", env)


SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|(^|_)KEY$|ACCESS_KEY")


def _environment_blocks(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "environment" and isinstance(v, dict):
                yield path, v
            else:
                yield from _environment_blocks(v, f"{path}.{k}" if path else k)


def test_secrets_come_only_from_env_file():
    for where, block in _environment_blocks(RAW):
        for key, value in block.items():
            value = str(value)
            if SECRET_NAME.search(key):
                assert "${" in value, f"{where}.{key} is a literal secret; take it from .env"
            for password in re.findall(r"://[^:/@\s]+:([^@\s]+)@", value):
                assert password.startswith("${"), f"{where}.{key}: literal password in a URI"
            for password in re.findall(r'"password"\s*:\s*"([^"]*)"', value):
                assert password.startswith("${"), f"{where}.{key}: literal password in JSON"
    gitignore = (REPO / ".gitignore").read_text().split()
    dockerignore = (REPO / ".dockerignore").read_text().split()
    assert ".env" in gitignore and ".env" in dockerignore


# --------------------------------------------------------------------------- services


def test_every_long_lived_service_has_a_healthcheck():
    for name in long_lived():
        check = SERVICES[name].get("healthcheck")
        if check is None and built_from(name):
            final = cc.parse_dockerfile(REPO / built_from(name))[-1]
            check = {"test": [a for i, a in final.instructions if i == "HEALTHCHECK"]}
        assert check and check.get("test") and not check.get("disable"), f"{name} has no healthcheck"


def test_dependencies_wait_for_health_or_completion():
    awaited_one_shots = set()
    for name, svc in SERVICES.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on without conditions starts too early"
        for dep, spec in deps.items():
            assert dep in SERVICES, f"{name} depends on unknown service {dep}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert not one_shot(dep)
                assert SERVICES[dep].get("healthcheck") or built_from(dep), f"{dep} has no healthcheck"
            elif condition == "service_completed_successfully":
                assert one_shot(dep), f"{name} waits for long-lived {dep} to exit"
                awaited_one_shots.add(dep)
            else:
                pytest.fail(f"{name} -> {dep}: {condition}; wait for service_healthy instead")
    # A one-shot job nobody waits for fails unnoticed.
    assert awaited_one_shots == {n for n in SERVICES if one_shot(n)}


def test_images_are_pinned():
    def pinned(ref: str) -> bool:
        tag = ref.rsplit("/", 1)[-1].partition(":")[2].partition("@")[0]
        return bool(tag) and "latest" not in tag and len(re.findall(r"\d+", tag)) >= 2

    for name, svc in SERVICES.items():
        image = str(svc.get("image", ""))
        assert image, f"{name} has no image name"
        assert pinned(image) or (built_from(name) and ":" in image and "latest" not in image), (
            f"{name}: image {image!r} is not pinned to a version"
        )
    for dockerfile in CODE_IN:
        stages = cc.parse_dockerfile(REPO / dockerfile)
        names = {s.name for s in stages}
        for stage in stages:
            assert stage.base in names or pinned(stage.base), f"{dockerfile}: FROM {stage.base}"


def _published(svc: dict) -> list[tuple[str, str]]:
    out = []
    for port in svc.get("ports") or []:
        if isinstance(port, dict):
            out.append((port.get("host_ip", ""), str(port.get("published", ""))))
        else:
            parts = str(port).split(":")
            out.append((parts[0], parts[1]) if len(parts) == 3 else ("", parts[0] if len(parts) == 2 else ""))
    return out


def test_published_host_ports_do_not_clash_and_stay_local():
    seen: dict[str, str] = {}
    for name, svc in SERVICES.items():
        for host_ip, port in _published(svc):
            assert port, f"{name}: a port without a fixed host port gets a random one"
            assert port not in seen, f"host port {port}: {seen.get(port)} and {name}"
            seen[port] = name
            assert host_ip == ENV["NETSEC_BIND"] == "127.0.0.1", f"{name}:{port} is exposed beyond localhost"
    assert set(seen) >= {
        ENV[k] for k in ("AIRFLOW_PORT", "MLFLOW_PORT", "MINIO_CONSOLE_PORT", "SERVING_PORT")
    }


def test_the_celery_worker_scales():
    worker = [n for n in AIRFLOW if "worker" in command_text(n).split()]
    assert len(worker) == 1
    svc = SERVICES[worker[0]]
    for key in ("container_name", "ports", "hostname"):
        assert key not in svc, f"{worker[0]} sets {key}: --scale {worker[0]}=N would clash"
    assert [n for n, s in SERVICES.items() if "container_name" in s] == []
    assert env_of(worker[0])["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"


def test_the_dask_cluster_is_the_one_the_tasks_use_and_its_workers_scale():
    """Scheduler and workers from the Airflow image; workers of one thread, scalable, with no
    disk in common and their own S3 keys; the Airflow tasks use that scheduler."""
    assert sorted(DASK) == ["dask-scheduler", "dask-worker"]
    scheduler, worker = SERVICES["dask-scheduler"], SERVICES["dask-worker"]
    port = int(flag("dask-scheduler", "--port"))
    for name in AIRFLOW:
        cfg = pipeline_config(name)
        assert cfg.training.engine == "dask"
        assert host_port(cfg.dask.scheduler) == ("dask-scheduler", port)
    assert worker["command"][:2] == ["worker", f"tcp://dask-scheduler:{port}"]
    assert "--nthreads=1" in worker["command"] and "--nworkers=1" in worker["command"]
    for key in ("container_name", "ports", "hostname", "volumes"):
        assert key not in worker, f"dask-worker sets {key}"
    assert "ports" not in scheduler and not scheduler.get("volumes")
    env = env_of("dask-worker")
    assert env["AWS_ACCESS_KEY_ID"] == env_of(AIRFLOW[0])["AWS_ACCESS_KEY_ID"]
    secrets = [
        k for k in SERVICES["dask-worker"]["environment"] if k.startswith(("AIRFLOW", "NETSEC_SOURCE"))
    ]
    assert secrets == [], "workers get no Airflow settings or secrets"
    assert SERVICES["airflow-worker"]["depends_on"]["dask-scheduler"]["condition"] == "service_healthy"
    from netsec_tasks.engine import runtime_environment

    for name in DASK:  # the runtime settings the engine's LocalCluster uses
        assert runtime_environment().items() <= env_of(name).items(), name


def test_airflow_services_share_one_configuration_and_no_disk():
    """Same settings everywhere; no volume mounted into an Airflow container: tasks hand data over
    through storage, workers serve their own task logs (they may run on other machines)."""
    assert len(AIRFLOW) >= 6
    shared = re.compile(r"^(NETSEC_|MLFLOW_|AWS_|AIRFLOW_CONN_|AIRFLOW__(?!CELERY__WORKER))")
    reference = {k: v for k, v in env_of(AIRFLOW[0]).items() if shared.match(k)}
    for name in AIRFLOW:
        env = env_of(name)
        assert {k: v for k, v in env.items() if shared.match(k)} == reference, name
        assert not SERVICES[name].get("volumes"), f"{name} mounts {SERVICES[name]['volumes']}"
    assert urlparse(reference["NETSEC_STORAGE__URI"]).scheme == "s3", (
        "a local storage root is one machine's disk"
    )


def test_pipeline_config_points_at_the_stack():
    """The config a task loads (file in the image + compose env) is valid and uses these services."""
    mongo, minio, mlflow = (
        service_with_image("mongo:"),
        service_with_image("minio/minio:"),
        service_with_image("ghcr.io/mlflow/mlflow:"),
    )
    for name in AIRFLOW:
        cfg = pipeline_config(name)
        assert cfg.source.kind == "mongo"
        assert host_port(cfg.source.mongo.uri) == (mongo, 27017)
        storage = urlparse(cfg.storage.uri)
        assert storage.scheme == "s3" and storage.netloc in buckets_created()
        assert host_port(cfg.storage.endpoint_url) == (minio, 9000)
        assert host_port(cfg.registry.tracking_uri) == (mlflow, int(flag(mlflow, "--port")))
        assert cfg.workdir == env_of(name)["NETSEC_HOME"]
    seed_cfg = pipeline_config("mongo-seed")
    assert seed_cfg.source.mongo.uri == pipeline_config(AIRFLOW[0]).source.mongo.uri
    # `docker compose exec serving netsec predict x.csv` loads it with the serving env too.
    assert pipeline_config("serving").registry.model_name == seed_cfg.registry.model_name


def test_every_env_var_the_code_reads_is_set_where_it_runs():
    reads = code_env_reads()
    assert "NETSEC_HOME" in reads and "NETSEC_CONFIG" in reads, "the scan found nothing: regex broken?"
    missing = []
    for dockerfile, packages in CODE_IN.items():
        for service in services_built_from(dockerfile):
            env = env_of(service)
            for var, places in sorted(reads.items()):
                if not any(p.startswith(packages) for p in places):
                    continue
                if var in env or ("*", var) in OPTIONAL_ENV or (service, var) in OPTIONAL_ENV:
                    continue
                missing.append(f"{service}: {var} (read at {', '.join(places)})")
    assert missing == [], (
        "set these in docker-compose.yaml, or add them to OPTIONAL_ENV with "
        "the reason they may stay unset:\n" + "\n".join(missing)
    )


def _airflow_probe(
    probe: str, airflow_home: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess:
    """``python -c probe *args`` (this venv, its Airflow) in a fresh ``AIRFLOW_HOME``, with only
    PATH and ``env`` in its environment; text output, 5 minutes at most."""
    return subprocess.run(
        [sys.executable, "-c", probe, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": os.environ.get("PATH", ""), "AIRFLOW_HOME": str(airflow_home), **env},
    )


def test_airflow_connections_resolve_to_the_stack(tmp_path):
    """Airflow itself parses AIRFLOW_CONN_* of each Airflow service into the DAG's hooks."""
    conn_ids = dag_connection_ids()
    assert {"netsec_mongo", "netsec_s3"} <= conn_ids
    probe = """
import json
from airflow.providers.mongo.hooks.mongo import MongoHook
from airflow.providers.amazon.aws.hooks.s3 import S3Hook
mongo = MongoHook(mongo_conn_id="netsec_mongo")
s3 = S3Hook(aws_conn_id="netsec_s3").conn_config
creds = s3.get_credentials() if hasattr(s3, "get_credentials") else None
print(json.dumps({"mongo_uri": mongo.uri, "endpoint_url": s3.endpoint_url,
                  "login": s3.aws_access_key_id, "password": s3.aws_secret_access_key}))
"""
    for name in (n for n in AIRFLOW if not one_shot(n) and "worker" in command_text(n).split()):
        env = env_of(name)
        for conn_id in conn_ids:
            assert f"AIRFLOW_CONN_{conn_id.upper()}" in env, f"{name}: no connection {conn_id}"
        # Only the connections: the metadata DB (PostgreSQL) is not here.
        out = _airflow_probe(probe, tmp_path, {k: v for k, v in env.items() if k.startswith("AIRFLOW_CONN_")})
        assert out.returncode == 0, out.stderr[-3000:]
        got = json.loads(out.stdout.strip().splitlines()[-1])
        # The DAG reads Mongo through the connection, the seed job through the config: same DB.
        assert got["mongo_uri"] == env["NETSEC_SOURCE__MONGO__URI"]
        assert got["endpoint_url"] == env["NETSEC_STORAGE__ENDPOINT_URL"]
        assert (got["login"], got["password"]) == (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])


def test_airflow_commands_exist_in_the_pinned_airflow(tmp_path):
    """Each Airflow service's command parses with Airflow's own CLI (CeleryExecutor loaded)."""
    commands = {name: [str(c) for c in SERVICES[name]["command"]] for name in AIRFLOW}
    for name in AIRFLOW:
        test = SERVICES[name].get("healthcheck", {}).get("test", [])
        if test[:1] == ["CMD-SHELL"] and test[1].startswith("airflow "):
            commands[name + " healthcheck"] = shlex.split(test[1].replace("$${HOSTNAME}", "h"))[1:]
    probe = (
        "import json, sys\nfrom airflow.cli.cli_parser import get_parser\np = get_parser()\n"
        "for cmd in json.loads(sys.argv[1]).values():\n    p.parse_args(cmd)\nprint('ok')"
    )
    out = _airflow_probe(probe, tmp_path, {"AIRFLOW__CORE__EXECUTOR": "CeleryExecutor"}, json.dumps(commands))
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_serving_settings_resolve_to_the_stack(monkeypatch):
    from serving.settings import Settings

    name = "serving"
    env = env_of(name)
    fields = set(Settings.model_fields)
    serving_cmd = " ".join(
        a for i, a in cc.parse_dockerfile(REPO / built_from(name))[-1].instructions if i == "CMD"
    )
    for var in (k for k in env if k.startswith("NETSEC_SERVING_")):
        field = var[len("NETSEC_SERVING_") :].lower()
        assert field in fields or var in serving_cmd, f"{var} is read by nothing (typo?)"
    for var in [k for k in os.environ if k.startswith(("NETSEC_", "MLFLOW_"))]:
        monkeypatch.delenv(var)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    # The image's NETSEC_CONFIG is its copy of config/ (Dockerfile.serving: COPY config).
    assert env["NETSEC_CONFIG"].endswith("/config/pipeline.yaml")
    monkeypatch.setenv("NETSEC_CONFIG", str(REPO / "config" / "pipeline.yaml"))
    settings = Settings()
    pipeline = pipeline_config(AIRFLOW[0])
    assert settings.tracking_uri == pipeline.registry.tracking_uri
    assert (settings.model_name, settings.model_alias) == (
        pipeline.registry.model_name,
        pipeline.registry.alias,
    )
    dag_id = re.search(r'^DAG_ID\s*=\s*"(\w+)"', (REPO / "dags" / "netsec_training.py").read_text(), re.M)
    assert settings.airflow_dag_id == dag_id.group(1)
    api = [n for n in AIRFLOW if command_text(n) == "api-server"][0]
    assert host_port(settings.airflow_url) == (api, 8080)
    init = env_of("airflow-init")
    assert settings.airflow_username == init["_AIRFLOW_WWW_USER_USERNAME"]
    assert settings.airflow_password.get_secret_value() == init["_AIRFLOW_WWW_USER_PASSWORD"]
    assert host_port(settings.mongo_uri) == (service_with_image("mongo:"), 27017)
    # netsec_monitoring reads the log and the verdicts where serving writes them.
    import pymongo.uri_parser

    assert pipeline.monitoring.store == "mongo"
    assert (
        settings.mongo_database or pymongo.uri_parser.parse_uri(settings.mongo_uri)["database"]
    ) == pipeline.source.mongo.database
    assert (settings.mongo_collection, settings.feedback_collection) == (
        pipeline.monitoring.predictions_collection,
        pipeline.monitoring.feedback_collection,
    )


def test_mlflow_server_uses_postgres_and_minio_through_the_server():
    name = service_with_image("ghcr.io/mlflow/mlflow:")
    env = env_of(name)
    store = urlparse(env["MLFLOW_BACKEND_STORE_URI"])
    assert store.scheme == "postgresql+psycopg2" and store.hostname == "postgres"
    # The role and database the postgres init script creates, with the password it is given.
    postgres = SERVICES["postgres"]
    script_mount = [v for v in postgres["volumes"] if "/docker-entrypoint-initdb.d/" in v][0]
    script = (REPO / script_mount.split(":")[0]).read_text()
    assert f"CREATE ROLE {store.username} LOGIN" in script
    assert f"CREATE DATABASE {store.path.strip('/')} OWNER {store.username}" in script
    assert env_of("postgres")["MLFLOW_DB_PASSWORD"] == store.password
    dest = urlparse(flag(name, "--artifacts-destination"))
    assert dest.scheme == "s3" and dest.netloc in buckets_created()
    assert "--serve-artifacts" in SERVICES[name]["command"]
    assert host_port(env["MLFLOW_S3_ENDPOINT_URL"]) == (service_with_image("minio/minio:"), 9000)
    # Its Host-header allow-list admits the name the other services use.
    allowed = flag(name, "--allowed-hosts").split(",")
    assert f"{name}:5000" in allowed and "localhost:*" in allowed


def test_mongo_application_user_matches_the_uris():
    svc = SERVICES[service_with_image("mongo:")]
    script_mount = [v for v in svc["volumes"] if "/docker-entrypoint-initdb.d/" in v][0]
    script = (REPO / script_mount.split(":")[0]).read_text()
    uri = urlparse(env_of(AIRFLOW[0])["NETSEC_SOURCE__MONGO__URI"])
    assert re.search(rf'getSiblingDB\("{uri.path.strip("/")}"\)', script)
    assert re.search(rf'user:\s*"{uri.username}"', script)
    assert env_of(service_with_image("mongo:"))["NETSEC_MONGO_PASSWORD"] == uri.password
    node = shutil.which("node")
    if node:  # syntax only; mongosh provides `db`
        out = subprocess.run(
            [node, "--check", str(REPO / script_mount.split(":")[0])],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr


def test_shell_snippets_parse():
    """Inline scripts of the one-shot jobs, CMD-SHELL health checks and the init script."""
    snippets = {}
    for name, svc in SERVICES.items():
        if svc.get("entrypoint") == ["/bin/sh", "-c"]:
            snippets[name] = svc["command"][0]
        test = (svc.get("healthcheck") or {}).get("test") or []
        if test[:1] == ["CMD-SHELL"]:
            snippets[name + " healthcheck"] = test[1]
    assert len(snippets) >= 4
    for where, script in snippets.items():
        out = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, f"{where}: {out.stderr}"
    out = subprocess.run(
        ["bash", "-n", str(REPO / "docker/postgres/10-mlflow-db.sh")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr


def test_seed_job_and_serving_use_real_cli_commands():
    from netsec_tasks.cli import build_parser

    parser = build_parser()
    seed = SERVICES["mongo-seed"]["command"][0]
    values = {**env_of("mongo-seed"), "data": "/tmp/seed.csv"}
    seed = re.sub(r"\$\{?(\w+)\}?", lambda m: values[m.group(1)], seed)
    calls = [shlex.split(m.group(0)) for m in re.finditer(r"\bnetsec [^;\n]+", seed)]
    assert {c[1] for c in calls} >= {"fetch-dataset", "make-sample", "push-data"}
    for call in calls:
        args = parser.parse_args(call[1:])
        assert args.command == call[1]
    cmd = [a for i, a in cc.parse_dockerfile(REPO / "Dockerfile.serving")[-1].instructions if i == "CMD"]
    shell, dash_c, script = json.loads(cmd[-1])
    assert (shell, dash_c) == ("sh", "-c")
    values = env_of("serving")
    words = shlex.split(re.sub(r"\$\{?(\w+)\}?", lambda m: values[m.group(1)], script))
    assert words[:2] == ["exec", "netsec"]
    args = parser.parse_args(words[2:])
    assert (args.command, args.host, args.port) == ("serve", "0.0.0.0", 8000)
    assert args.workers == int(values["NETSEC_SERVING_WORKERS"])


# --------------------------------------------------------------------------- Dockerfiles


def test_dockerfiles_pass_hadolint():
    assert cc.hadolint() == []


def test_airflow_image_matches_the_pins():
    """Airflow from pip on the official Python image (the base a build argument, see the
    Dockerfile), at the pinned version, the way the official image lays it out."""
    stages = cc.parse_dockerfile(REPO / "Dockerfile.airflow")
    final = stages[-1]
    python = re.fullmatch(r"python:(\d+\.\d+)\.\d+-slim-\w+", final.base)
    assert python, f"FROM {final.base}: expected the official python:<X.Y.Z>-slim-<debian> image"
    assert python.group(1) == "{}.{}".format(*sys.version_info[:2]), "image Python differs from the tests'"
    text = (REPO / "Dockerfile.airflow").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=", text, re.M) and "FROM ${PYTHON_IMAGE}" in text, (
        "the base must stay a build argument (CI builds on its own Python image)"
    )
    version = re.search(r"^ARG AIRFLOW_VERSION=(\S+)$", text, re.M)
    assert version and version.group(1) == PIN["apache-airflow"], (
        "AIRFLOW_VERSION differs from constraints.txt"
    )
    run = " ".join(a for i, a in final.instructions if i == "RUN")
    assert (
        '"apache-airflow==${AIRFLOW_VERSION}"' in run and "--constraint requirements/constraints.txt" in run
    )
    assert '".[airflow]"' in run
    # The metadata DB drivers (SQL_ALCHEMY_CONN names psycopg2; the api-server's async engine
    # uses asyncpg), pinned in the lock like everything else.
    for driver in ("psycopg2-binary", "asyncpg"):
        assert driver in run and driver in PIN, driver
    users = [a for i, a in final.instructions if i == "USER"]
    assert users[-1] == "50000", "the image must end as the airflow user (uid 50000)"
    env = cc.dockerfile_env(REPO / "Dockerfile.airflow")
    assert env["AIRFLOW_HOME"] == "/opt/airflow"
    entrypoint = json.loads([a for i, a in final.instructions if i == "ENTRYPOINT"][-1])
    assert entrypoint[:2] == ["/usr/bin/dumb-init", "--"], "dumb-init as PID 1 (DUMB_INIT_SETSID in compose)"
    mlflow_image = SERVICES[service_with_image("ghcr.io/mlflow/mlflow:")]["image"]
    assert mlflow_image == f"ghcr.io/mlflow/mlflow:v{PIN['mlflow']}-full", "MLflow server != client pin"


def test_airflow_entrypoint_runs_what_compose_asks_for(tmp_path):
    """docker/airflow/entrypoint.sh: the init service's set-up variables, then `airflow <cmd>`;
    run here with a stand-in `airflow` that records its arguments."""
    final = cc.parse_dockerfile(REPO / "Dockerfile.airflow")[-1]
    entry = [a for i, a in final.instructions if i == "COPY" and a.split()[-1] == "/entrypoint"]
    script = REPO / [w for w in entry[0].split() if not w.startswith("--")][0]
    fake = tmp_path / "airflow"
    fake.write_text('#!/bin/sh\necho "airflow $*" >> "$CALLS"\n')
    fake.chmod(0o755)
    calls = tmp_path / "calls"

    def run_entrypoint(service: str) -> list[str]:
        calls.write_text("")
        env = {
            **{k: v for k, v in env_of(service).items() if k.startswith("_AIRFLOW")},
            "PATH": f"{tmp_path}:/usr/bin:/bin",
            "CALLS": str(calls),
        }
        out = subprocess.run(
            ["bash", str(script), *map(str, SERVICES[service]["command"])],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return calls.read_text().splitlines()

    init = run_entrypoint("airflow-init")
    assert init[0] == "airflow db migrate"
    user = shlex.split(init[1])
    assert user[:3] == ["airflow", "users", "create"]
    assert user[user.index("--username") + 1] == env_of("airflow-init")["_AIRFLOW_WWW_USER_USERNAME"]
    assert user[user.index("--password") + 1] == env_of("airflow-init")["_AIRFLOW_WWW_USER_PASSWORD"]
    assert user[user.index("--role") + 1] == "Admin"
    assert init[2:] == ["airflow " + command_text("airflow-init")]
    worker = [n for n in AIRFLOW if "worker" in command_text(n).split()][0]
    assert run_entrypoint(worker) == [f"airflow {command_text(worker)}"]


def test_serving_image_is_small_non_root_and_healthy():
    stages = cc.parse_dockerfile(REPO / "Dockerfile.serving")
    assert len(stages) >= 2, "multi-stage: build the venv, copy it to a clean runtime"
    final = stages[-1]
    python = re.fullmatch(r"python:(\d+\.\d+)\.\d+-slim-\w+", final.base)
    assert python and python.group(1) == "{}.{}".format(*sys.version_info[:2])
    instrs = dict()
    for i, a in final.instructions:
        instrs.setdefault(i, []).append(a)
    user = instrs["USER"][-1].split(":")[0]
    assert user.isdigit() and user != "0"
    assert instrs["EXPOSE"] == ["8000"]
    assert any("/health" in h and "python" in h for h in instrs["HEALTHCHECK"])
    routes = "".join(p.read_text() for p in (REPO / "serving").rglob("*.py"))
    assert re.search(r"""\.get\(\s*["']/health["']""", routes), "the health check's route is gone"
    assert "NETSEC_SERVING_WORKERS" in instrs["CMD"][-1]
    install = " ".join(a for s in stages[:-1] for i, a in s.instructions if i == "RUN" and "pip install" in a)
    assert '".[serving]"' in install and "airflow" not in install
    assert "--constraint requirements/constraints.txt" in install
    assert all("--from=" in a or "config" in a for a in instrs["COPY"]), "runtime copies only venv + config"


def test_copied_and_mounted_files_exist():
    for dockerfile in CODE_IN:
        for src in cc.copy_sources(REPO / dockerfile):
            path = REPO / src
            assert path.exists(), f"{dockerfile}: COPY {src}: missing"
            if path.is_dir():
                assert any(p.is_file() for p in path.rglob("*")), f"{dockerfile}: COPY {src}: empty"
    for name, svc in SERVICES.items():
        for volume in svc.get("volumes") or []:
            source = str(volume).split(":")[0]
            if source.startswith((".", "/")):
                assert (REPO / source).is_file(), f"{name}: bind mount {source} missing"
        build = svc.get("build")
        if build:
            assert (REPO / build.get("context", ".") / build["dockerfile"]).is_file()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "apache-airflow-providers-fab" in " ".join(
        pyproject["project"]["optional-dependencies"]["airflow"]
    ), "docker-compose.yaml uses FabAuthManager"


# --------------------------------------------------------------------------- both compose CLIs


def _compose_config(kind: str, files: tuple[str, ...], tmp_path: Path) -> dict:
    """What `config` of docker compose v2 (the CLI plugin) or docker-compose 1.29 makes of the
    files, in one shape: per service the keys whose meaning matters here."""
    import yaml

    ct = load_script("compose_test")
    if kind == "v2":
        ct.ensure_compose_v2(tmp_path / "download.log")
        docker = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else shutil.which("docker")
        assert docker, "no docker CLI: scripts/setup.sh --test installs Debian's docker.io"
        base = [docker, "compose"]
    else:
        exe = shutil.which("docker-compose")
        assert exe, "no docker-compose (1.29): scripts/setup.sh --test installs it"
        base = [exe]
    argv = [
        *base,
        "-p",
        "netsec",
        "--project-directory",
        str(REPO),
        "--env-file",
        str(cc.ENV_EXAMPLE),
        *[a for f in files for a in ("-f", str(REPO / f))],
        "config",
    ]
    env = {"PATH": os.environ.get("PATH", ""), "DOCKER_CONFIG": str(ct.DOCKER_CONFIG), "HOME": str(tmp_path)}
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert out.returncode == 0, f"{kind} config {files}: {out.stderr[-3000:]}"
    doc = yaml.safe_load(out.stdout)

    def ports(svc):
        got = set()
        for p in svc.get("ports") or []:
            if isinstance(p, dict):
                got.add((p.get("host_ip"), str(p["published"]), int(p["target"])))
            else:
                host_ip, published, target = str(p).split("/")[0].split(":")
                got.add((host_ip, published, int(target)))
        return got

    def volumes(svc):
        got = set()
        for v in svc.get("volumes") or []:
            if isinstance(v, dict):
                got.add((v.get("source"), v["target"]))
            else:
                got.add(tuple(str(v).split(":")[:2]))
        return got

    def build(svc):
        b = svc.get("build")
        if not b:
            return None
        return (
            str(Path(b["context"]).resolve()),
            b.get("dockerfile"),
            tuple(sorted((k, str(v)) for k, v in (b.get("args") or {}).items())),
        )

    return {
        name: {
            "image": svc.get("image"),
            "build": build(svc),
            "command": svc.get("command"),
            "entrypoint": svc.get("entrypoint"),
            "environment": {k: str(v) for k, v in (svc.get("environment") or {}).items()},
            "healthcheck": (svc.get("healthcheck") or {}).get("test"),
            "depends_on": {d: c["condition"] for d, c in (svc.get("depends_on") or {}).items()},
            "ports": ports(svc),
            "volumes": volumes(svc),
            "restart": svc.get("restart"),
        }
        for name, svc in doc["services"].items()
    }


@pytest.mark.parametrize(
    "files",
    [("docker-compose.yaml",), ("docker-compose.yaml", "docker-compose.ci.yaml")],
    ids=["users", "ci"],
)
def test_compose_v2_and_docker_compose_1_29_read_the_files_alike(files, tmp_path):
    """Users run Compose v2; docker-compose 1.29 is what Debian 12 packages. Both accept the
    files (1.29 knows no top-level `name:`, `!reset` or `include`) and read the same stack."""
    v2 = _compose_config("v2", files, tmp_path)
    v1 = _compose_config("v1", files, tmp_path)
    assert sorted(v1) == sorted(v2) == sorted(SERVICES)
    for name in v2:
        for key in v2[name]:
            assert v1[name][key] == v2[name][key], (
                f"{files}: {name}.{key}: 1.29 {v1[name][key]!r} != v2 {v2[name][key]!r}"
            )
