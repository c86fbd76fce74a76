"""Structure of the Airflow DAGs ``netsec_training`` and ``netsec_monitoring`` and of the netsec
plugin (fast, no run).

Airflow reads its configuration when first imported, so the environment (a temp AIRFLOW_HOME,
this repo's dags/ and plugins/, no examples) is set by a module fixture before the first import.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.airflow

REPO = Path(__file__).resolve().parent.parent
DAGS = REPO / "dags"
PLUGINS = REPO / "plugins"

EXPECTED_EDGES = {
    "reconcile": {"ingest"},
    "ingest": {"validate"},
    "validate": {"check_drift"},
    "check_drift": {"transform", "skip_training"},
    "transform": {"train"},
    "train": {"register"},
    "register": {"sync"},
    "sync": {"record_outcome"},
    "skip_training": {"record_outcome"},
    "record_outcome": set(),
}


def airflow_env(home: Path) -> dict[str, str]:
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
    }


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    for key, value in airflow_env(tmp_path_factory.mktemp("airflow_home")).items():
        mp.setenv(key, value)
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    yield bag
    mp.undo()


@pytest.fixture(scope="module")
def dag(dagbag):
    return dagbag.dags["netsec_training"]


@pytest.fixture(scope="module")
def monitoring_dag(dagbag):
    return dagbag.dags["netsec_monitoring"]


def test_dagbag_has_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert sorted(dagbag.dags) == ["netsec_monitoring", "netsec_training"]


def test_tasks_and_edges(dag):
    assert {t.task_id: set(t.downstream_task_ids) for t in dag.tasks} == EXPECTED_EDGES


def test_operators_and_branch_targets(dag):
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.providers.standard.operators.python import BranchPythonOperator, PythonOperator

    kinds = {t.task_id: type(t) for t in dag.tasks}
    assert kinds.pop("check_drift") is BranchPythonOperator
    assert kinds.pop("skip_training") is EmptyOperator
    assert set(kinds.values()) == {PythonOperator}


def test_trigger_rules(dag):
    from airflow.sdk import TriggerRule

    rules = {t.task_id: t.trigger_rule for t in dag.tasks}
    assert rules.pop("record_outcome") == TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS
    assert set(rules.values()) == {TriggerRule.ALL_SUCCESS}


def test_schedule_and_run_limits(dag):
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable

    from netsec_tasks.config import load_config

    # The nightly cron *or* the monitoring DAG's retraining request, whichever comes first.
    schedule = dag.schedule
    assert isinstance(schedule, AssetOrTimeSchedule)
    assert isinstance(schedule.timetable, CronTriggerTimetable)
    assert schedule.timetable.expression == load_config().dag.schedule == "0 2 * * *"
    assert [a.uri for a in schedule.asset_condition.objects] == ["x-netsec://retraining/netsec-phishing"]
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert {"netsec", "training"} <= set(dag.tags)
    assert dag.doc_md and "netsec_training" in dag.doc_md
    assert dag.start_date.tzinfo is not None


def test_io_tasks_retry_with_exponential_backoff_and_everything_has_a_timeout(dag):
    from netsec_tasks.config import load_config
    from netsec_tasks.errors import DataError, NetsecError, SourceUnavailable, ValidationFailed

    cfg = load_config().dag
    for task in dag.tasks:
        assert task.execution_timeout == dt.timedelta(minutes=cfg.task_timeout_minutes), task.task_id
        assert task.on_failure_callback, task.task_id
    for task_id in ("reconcile", "ingest", "sync", "train", "register"):
        task = dag.get_task(task_id)
        assert task.retries == cfg.retries
        assert task.retry_delay == dt.timedelta(seconds=cfg.retry_delay_seconds)
        assert task.retry_exponential_backoff == 2.0
        assert task.max_retry_delay == dt.timedelta(seconds=cfg.max_retry_delay_seconds)
        policy = task.retry_policy
        assert policy.evaluate(SourceUnavailable("down"), 1, 3).action.value in ("default", "retry")
        assert policy.evaluate(ValidationFailed("bad rows"), 1, 3).action.value == "fail"
        assert policy.evaluate(DataError("no file"), 1, 3).action.value == "fail"
    for task_id in ("train", "register"):  # expensive or deterministic: only an outage retries
        policy = dag.get_task(task_id).retry_policy
        assert policy.evaluate(SourceUnavailable("down"), 1, 3).action.value == "retry"
        assert policy.evaluate(NetsecError("CV failed"), 1, 3).action.value == "fail"
    for task_id in ("validate", "check_drift", "transform", "record_outcome"):
        assert dag.get_task(task_id).retries == 0, task_id


def test_retry_settings_follow_the_config(tmp_path):
    """NETSEC_DAG__* env changes the parsed DAG (checked in a fresh interpreter)."""
    env = {
        **os.environ,
        **airflow_env(tmp_path),
        "NETSEC_DAG__RETRIES": "1",
        "NETSEC_DAG__RETRY_DELAY_SECONDS": "3",
        "NETSEC_DAG__SCHEDULE": "null",
    }
    code = (
        "from airflow.dag_processing.dagbag import DagBag; import json; "
        f"d = DagBag(dag_folder={str(DAGS)!r}).dags['netsec_training']; t = d.get_task('ingest'); "
        "print(json.dumps([[a.uri for a in d.schedule], t.retries, t.retry_delay.total_seconds()]))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    # No cron: the DAG runs when triggered, or when monitoring requests it.
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [
        ["x-netsec://retraining/netsec-phishing"],
        1,
        3.0,
    ]


def test_params_are_typed_documented_and_validated(dag):
    from netsec_tasks.config import load_config

    root = load_config().source.path_roots[0]
    params = dag.params
    expected_types = {
        "force_retrain": "boolean",
        "source": ["null", "string"],
        "source_path": ["null", "string"],
        "n_iter": ["null", "integer"],
        "cv_folds": ["null", "integer"],
        "candidates": ["null", "array"],
        "promotion_margin": ["null", "number"],
        "min_score": ["null", "number"],
    }
    assert set(params.keys()) == set(expected_types)
    for name, type_ in expected_types.items():
        param = params.get_param(name)
        assert param.schema["type"] == type_, name
        assert len(param.description or "") > 20, name
    assert params.get_param("source").schema["enum"] == [None, "file", "mongo"]
    assert params["force_retrain"] is False
    assert all(params[name] is None for name in expected_types if name != "force_retrain")
    # A run conf that breaks the schema is refused before anything runs.
    import copy

    from airflow.sdk.exceptions import ParamValidationError

    for name, bad in (
        ("source", "ftp"),
        ("n_iter", 0),
        ("candidates", ["svm"]),
        ("force_retrain", "yes"),
        ("promotion_margin", 2),
        # A triggered run's own bounds (netsec_tasks.run_params), narrower than the config's.
        ("promotion_margin", -0.5),
        ("min_score", 0.0),
        ("source_path", "/etc/passwd"),
        ("source_path", f"{root}/../../etc/passwd"),
        ("source_path", f"{root}-other/x.csv"),
    ):
        with pytest.raises(ParamValidationError):
            copy.deepcopy(params.get_param(name)).resolve(value=bad)
    assert copy.deepcopy(params.get_param("candidates")).resolve(value=["xgboost"]) == ["xgboost"]
    for name, good in (("promotion_margin", 0.0), ("min_score", 0.95), ("source_path", f"{root}/a/b.csv")):
        assert copy.deepcopy(params.get_param(name)).resolve(value=good) == good


def _load_dag_module(name: str = "netsec_training_dag"):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, DAGS / "netsec_training.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_trigger_form_follows_the_config(dag, monkeypatch):
    """Each field's type, range, allowed values and help text come from the config key it
    overrides, with the value this deployment configured; a change of config shows in the form."""
    from netsec_tasks.config import TrainingConfig, load_config

    cfg = load_config()
    params = dag.params
    candidates = params.get_param("candidates").schema
    known = list(TrainingConfig.model_json_schema()["properties"]["candidates"]["items"]["enum"])
    # Airflow's form draws a multi-select for an array with `examples`; items.enum still checks.
    assert candidates["examples"] == known == candidates["items"]["enum"]
    assert candidates["uniqueItems"] is True
    source = params.get_param("source").schema
    assert source["values_display"][None] == f"configured default ({cfg.source.kind})"
    n_iter = params.get_param("n_iter")
    assert (n_iter.schema["minimum"], n_iter.schema["maximum"]) == (1, 500)  # TrainingConfig's
    assert f"training.n_iter ({cfg.training.n_iter};" in n_iter.description
    assert ", ".join(cfg.training.candidates) in params.get_param("candidates").description
    # Another configuration, another form.
    monkeypatch.setenv("NETSEC_TRAINING__N_ITER", "9")
    monkeypatch.setenv("NETSEC_SOURCE__KIND", "mongo")
    monkeypatch.setenv("NETSEC_TRAINING__CANDIDATES", "[xgboost]")
    other = _load_dag_module("netsec_training_other").PARAMS
    assert "training.n_iter (9;" in other["n_iter"].description
    assert other["source"].schema["values_display"][None] == "configured default (mongo)"
    assert "training.candidates (xgboost;" in other["candidates"].description


def test_the_form_fields_survive_serialization(dag):
    """The UI reads the params of the serialized DAG: the multi-select and the labels survive."""
    from airflow.serialization.serialized_objects import DagSerialization

    serialized = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    schema = serialized.params.get_param("candidates").schema
    assert schema["examples"] == schema["items"]["enum"] and len(schema["examples"]) == 6
    labels = serialized.params.get_param("source").schema["values_display"]
    assert any(str(k) in ("None", "null") and v.startswith("configured default") for k, v in labels.items())


def test_params_map_to_config_overrides(dag):
    """Every param except force_retrain is a config key; None keeps the config's value."""
    mod = _load_dag_module()
    assert set(mod.PARAM_TO_CONFIG) == set(dag.params.keys()) - {"force_retrain"}
    cfg = mod._config(
        {
            "source": "mongo",
            "n_iter": 3,
            "candidates": ["decision_tree"],
            "promotion_margin": 0.5,
            "source_path": "",
            "cv_folds": None,
        }
    )
    assert cfg.source.kind == "mongo"
    assert cfg.training.n_iter == 3
    assert cfg.training.candidates == ["decision_tree"]
    assert cfg.registry.promotion_margin == 0.5
    assert cfg.source.path is None  # "" from the UI form means "not set"
    default = mod._config({})
    assert default.training.cv_folds == cfg.training.cv_folds


def test_each_task_checks_the_run_params_bounds_again(tmp_path, monkeypatch):
    """Whatever the form allowed when the file was parsed, a task refuses params outside a
    triggered run's bounds before it reads its config, following links as the worker sees them."""
    from netsec_tasks.errors import ConfigError

    mod = _load_dag_module()
    root = tmp_path / "data"
    root.mkdir()
    (root / "train.csv").write_text("a\n1\n")
    (root / "escape.csv").symlink_to("/etc/passwd")
    monkeypatch.setenv("NETSEC_SOURCE__PATH_ROOTS", f"[{root}]")
    assert mod._config({"source_path": str(root / "train.csv")}).source.path == str(root / "train.csv")
    for params, words in (
        ({"promotion_margin": -1}, "promotion_margin -1 is below 0"),
        ({"min_score": 0}, "min_score 0 is below the configured registry.min_score"),
        ({"source_path": "/etc/passwd"}, "outside source.path_roots"),
        ({"source_path": str(root / "escape.csv")}, "/etc/passwd after following links"),
        ({"source_path": str(root / "*.csv")}, "/etc/passwd after following links"),
    ):
        with pytest.raises(ConfigError, match=words):
            mod._config(params)


def test_parsing_the_dag_imports_nothing_heavy(tmp_path):
    """Fresh interpreter: parse the DAG file and list the heavy modules it pulled in."""
    heavy = [
        "pandas",
        "numpy",
        "sklearn",
        "mlflow",
        "xgboost",
        "pyarrow",
        "scipy",
        "pymongo",
        "boto3",
        "netsec_tasks.ingest",
        "netsec_tasks.train",
        "netsec_tasks.registry",
        "netsec_tasks.drift",
        "netsec_tasks.pipeline",
    ]
    code = (
        "import sys, json, time\n"
        "t = time.perf_counter()\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "t1 = time.perf_counter()\n"
        f"bag = DagBag(dag_folder={str(DAGS)!r})\n"
        "t2 = time.perf_counter()\n"
        f"print(json.dumps({{'errors': {{str(k): v for k, v in bag.import_errors.items()}}, "
        f"'heavy': [m for m in {heavy!r} if m in sys.modules], 'airflow_import_s': t1 - t, "
        "'dag_parse_s': t2 - t1}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **airflow_env(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["errors"] == {}
    assert result["heavy"] == []
    print(f"airflow import {result['airflow_import_s']:.2f}s, DAG parse {result['dag_parse_s']:.3f}s")


def test_plugin_registers_links_listener_and_route(dagbag):
    from airflow import plugins_manager

    plugins_manager.ensure_plugins_loaded()
    assert plugins_manager.get_import_errors() == {}
    links = {link.name: link for link in plugins_manager.get_operator_extra_links()}
    assert set(links) == {"MLflow run", "MLflow model version", "Drift report"}
    assert links["MLflow run"].task_ids == ("train", "register")
    assert links["Drift report"].task_ids == ("check_drift",)
    apps, _ = plugins_manager.get_fastapi_plugins()
    assert [a["url_prefix"] for a in apps] == ["/netsec"]
    from airflow.listeners.listener import get_listener_manager

    hooks = get_listener_manager().hook
    for hook in (hooks.on_dag_run_success, hooks.on_dag_run_failed):
        owners = {type(impl.plugin).__name__ for impl in hook.get_hookimpls()}
        assert "DagRunOutcomeListener" in owners, owners


def test_extra_links_attach_to_the_serialized_dag(dag):
    """Deserialized (as the API server sees it), the right tasks carry the plugin's links."""
    from airflow.serialization.serialized_objects import DagSerialization

    sdag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    links = {t.task_id: set(t.extra_links) for t in sdag.tasks}
    assert {"MLflow run", "MLflow model version"} <= links["register"]
    assert "MLflow run" in links["train"]
    assert "Drift report" in links["check_drift"]
    assert links["skip_training"] == set()


def test_drift_route_refuses_anonymous_callers(dagbag):
    from airflow import plugins_manager
    from fastapi.testclient import TestClient

    apps, _ = plugins_manager.get_fastapi_plugins()
    with TestClient(apps[0]["app"]) as client:
        resp = client.get("/drift/netsec_training/manual__2025-01-01")
    assert resp.status_code == 401


def test_drift_report_uri_stays_inside_the_runs_of_storage(tmp_path, dagbag):
    import importlib.util

    spec = importlib.util.spec_from_file_location("netsec_plugin_t", PLUGINS / "netsec_plugin.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for root in ((tmp_path / "store").as_uri(), "s3://netsec/prefix"):
        report = f"{root}/runs/r1/drift/drift_report.html"
        assert mod.safe_report_uri(report, root) == report
        for uri in (
            f"{root}/secret.html",
            f"{root}/runs/../secret.html",
            f"{root}/runs/r1/drift/drift_report.yaml",
            f"{root}/runs/r1/../../x.html",
            f"{root}-other/runs/r1/drift/drift_report.html",
            None,
            "",
        ):
            assert mod.safe_report_uri(uri, root) is None, uri


# --------------------------------------------------------------------------- netsec_monitoring


def test_monitoring_dag_tasks_schedule_and_asset(monitoring_dag, dag):
    from airflow.sdk import TriggerRule

    from netsec_tasks.config import load_config

    m = monitoring_dag
    assert {t.task_id: set(t.downstream_task_ids) for t in m.tasks} == {
        "feedback_to_training": {"monitor", "decide_challenger"},
        "monitor": {"request_retraining"},
        "request_retraining": {"commit"},
        "commit": set(),
        "decide_challenger": set(),
    }
    assert m.schedule == load_config().monitoring.schedule == "0 * * * *"  # hourly, from config
    assert m.catchup is False and m.max_active_runs == 1
    assert m.get_task("commit").trigger_rule == TriggerRule.NONE_FAILED  # after a skipped request
    # The request task's outlet is the asset netsec_training is scheduled on; nothing else emits.
    outlets = {t.task_id: [a.uri for a in t.outlets] for t in m.tasks}
    training_assets = [a.uri for a in dag.schedule.asset_condition.objects]
    assert outlets == {
        "feedback_to_training": [],
        "monitor": [],
        "commit": [],
        "decide_challenger": [],
        "request_retraining": training_assets,
    }
    for task_id in ("feedback_to_training", "monitor", "decide_challenger"):
        assert m.get_task(task_id).retries == load_config().dag.retries


def test_monitoring_schedule_follows_the_config(tmp_path):
    env = {**os.environ, **airflow_env(tmp_path), "NETSEC_MONITORING__SCHEDULE": "'*/15 * * * *'"}
    code = (
        "from airflow.dag_processing.dagbag import DagBag; "
        f"d = DagBag(dag_folder={str(DAGS)!r}).dags['netsec_monitoring']; print(d.schedule)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "*/15 * * * *"
