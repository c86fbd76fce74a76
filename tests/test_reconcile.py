"""Reconciliation against a real MLflow SQLite store: stale runs end KILLED, left-over versions
get a decision (or are abandoned with the reason), unfinished promotions finish, live owners'
work is left alone, and a second pass finds nothing."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from netsec_tasks.outages import owner_id

MODEL = "reconcile-model"


@pytest.fixture()
def cfg(make_cfg, tmp_path):
    return make_cfg(
        **{
            "registry.tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "registry.artifact_location": str(tmp_path / "mlartifacts"),
            "registry.model_name": MODEL,
            "registry.min_score": 0.5,
            "decision.objective": "f1",  # bare Pipelines selected by F1, as before thresholds
            "dag.task_timeout_minutes": 5,
        }
    )


@pytest.fixture()
def client(cfg):
    from netsec_tasks.tracking import configure_mlflow, mlflow_client

    configure_mlflow(cfg)
    return mlflow_client(cfg)


def dead_owner() -> str:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    owner = owner_id(proc.pid)
    proc.wait()
    return owner


def left_over_version(
    cfg, client, tmp_path, *, owner: str, depth: int = 2, with_test_split: bool = True, seed: int = 0
) -> str:
    """What a run killed right after "registered vN" leaves: a finished training run with the
    model and its test split, and a version with the registration tags but no decision."""
    import mlflow
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.tree import DecisionTreeClassifier

    from netsec_tasks.dataset_schema import load_schema
    from netsec_tasks.sample import make_sample
    from netsec_tasks.tracking import OWNER_TAG, log_pipeline_model

    schema = load_schema(cfg.schema_path)
    frame = make_sample(900, seed=11)
    train, test = frame.iloc[:600], frame.iloc[600:]
    y = np.asarray(schema.is_threat(train[schema.target.column]), dtype=int)
    model = Pipeline(
        [
            ("preprocess", ColumnTransformer([("num", "passthrough", schema.features)])),
            ("model", DecisionTreeClassifier(max_depth=depth, random_state=seed)),
        ]
    )
    model.fit(train[schema.features], y)
    exp = client.get_experiment_by_name(cfg.registry.experiment)
    with mlflow.start_run(experiment_id=exp.experiment_id, tags={"netsec.role": "pipeline"}):
        if with_test_split:
            path = tmp_path / f"split-{seed}-{depth}" / "test.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            test.to_parquet(path, index=False)
            mlflow.log_artifact(str(path), artifact_path="data")
        model_uri = log_pipeline_model(model, train[schema.features].head(5))
    mv = mlflow.register_model(
        model_uri,
        MODEL,
        tags={"netsec.pipeline_run_id": f"killed-{seed}-{depth}", "netsec.metric": "f1", OWNER_TAG: owner},
    )
    return str(mv.version)


def test_left_over_versions_are_decided_or_abandoned(cfg, client, tmp_path):
    from netsec_tasks.reconcile import reconcile
    from netsec_tasks.registry import get_production

    v1 = left_over_version(cfg, client, tmp_path, owner=dead_owner())
    v2 = left_over_version(cfg, client, tmp_path, owner=dead_owner(), with_test_split=False, seed=1)
    v3 = left_over_version(cfg, client, tmp_path, owner=owner_id(), seed=2)  # still being registered

    record = reconcile(cfg, by="test")
    got = {i.id: (i.action, i.reason) for i in record.items if i.kind == "model_version"}
    assert set(got) == {f"{MODEL}/{v1}", f"{MODEL}/{v2}"}
    assert got[f"{MODEL}/{v1}"][0] == "promoted" and "no Production model" in got[f"{MODEL}/{v1}"][1]
    assert got[f"{MODEL}/{v2}"][0] == "abandoned" and "test split" in got[f"{MODEL}/{v2}"][1]

    tags = {v: client.get_model_version(MODEL, v).tags for v in (v1, v2, v3)}
    assert tags[v1]["netsec.promotion"] == "promoted" and tags[v1]["netsec.decided_by"] == "test"
    assert tags[v2]["netsec.promotion"] == "abandoned"
    assert "netsec.promotion" not in tags[v3]
    assert get_production(cfg).version == v1
    run_tags = client.get_run(client.get_model_version(MODEL, v1).run_id).data.tags
    assert run_tags["netsec.promotion"] == "promoted" and run_tags["netsec.model_version"] == v1

    assert reconcile(cfg, by="test again").items == []  # idempotent


def test_left_over_version_is_compared_with_production(cfg, client, tmp_path):
    from netsec_tasks.reconcile import reconcile

    good = left_over_version(cfg, client, tmp_path, owner=dead_owner(), depth=3)
    reconcile(cfg, by="first")
    worse = left_over_version(cfg, client, tmp_path, owner=dead_owner(), depth=1, seed=5)
    (item,) = reconcile(cfg, by="second").items
    assert (item.id, item.action) == (f"{MODEL}/{worse}", "rejected")
    assert f"Production v{good}" in item.reason
    assert str(client.get_registered_model(MODEL).aliases["production"]) == good


def test_unfinished_promotion_is_finished(cfg, client, tmp_path):
    from netsec_tasks.reconcile import reconcile

    v1 = left_over_version(cfg, client, tmp_path, owner=dead_owner())
    reconcile(cfg, by="first")
    v2 = left_over_version(cfg, client, tmp_path, owner=dead_owner(), depth=4, seed=3)
    # The register step records the decision, then moves the alias: a kill in between.
    client.set_model_version_tag(MODEL, v2, "netsec.promotion", "promoted")
    (item,) = reconcile(cfg, by="second").items
    assert (item.id, item.action) == (f"{MODEL}/{v2}", "promotion finished")
    assert f"was on v{v1}" in item.reason
    assert str(client.get_registered_model(MODEL).aliases["production"]) == v2
    assert client.get_model_version(MODEL, v2).current_stage == "Production"


def test_rollback_moves_the_alias_back_and_reconcile_leaves_it_there(cfg, client, tmp_path):
    """The README's rollback: Production back to the version it replaced; the rolled-back
    version is tagged so reconcile (which finishes promotions that did not move the alias)
    does not promote it again."""
    from netsec_tasks.errors import ConfigError
    from netsec_tasks.reconcile import reconcile
    from netsec_tasks.registry import get_production, rollback

    v1 = left_over_version(cfg, client, tmp_path, owner=dead_owner())
    reconcile(cfg, by="first")
    v2 = left_over_version(cfg, client, tmp_path, owner=dead_owner(), depth=4, seed=3)
    client.set_model_version_tag(MODEL, v2, "netsec.promotion", "promoted")
    client.set_model_version_tag(MODEL, v2, "netsec.previous_production_version", v1)
    reconcile(cfg, by="second")
    assert get_production(cfg).version == v2

    record = rollback(cfg, reason="v2 flags every login page")
    assert (record.from_version, record.to_version, record.rolled_back) == (v2, v1, [v2])
    assert get_production(cfg).version == v1
    assert client.get_model_version(MODEL, v1).current_stage == "Production"
    tags = client.get_model_version(MODEL, v2).tags
    assert tags["netsec.promotion"] == "rolled_back" and tags["netsec.rolled_back_to"] == v1
    assert tags["netsec.rollback_reason"] == "v2 flags every login page"
    assert reconcile(cfg, by="third").items == []  # v2 is not promoted again
    assert get_production(cfg).version == v1
    with pytest.raises(ConfigError, match="already is Production"):
        rollback(cfg, to_version=v1)
    with pytest.raises(ConfigError, match="no version '99'"):
        rollback(cfg, to_version="99")


def test_stale_runs_end_killed_and_live_ones_stay(cfg, client):
    from netsec_tasks.reconcile import reconcile
    from netsec_tasks.tracking import OWNER_TAG

    exp_id = client.get_experiment_by_name(cfg.registry.experiment).experiment_id
    now = int(time.time() * 1000)
    old = now - (cfg.dag.task_timeout_minutes + 1) * 60_000
    dead = client.create_run(exp_id, tags={OWNER_TAG: dead_owner(), "netsec.role": "pipeline"})
    live = client.create_run(exp_id, tags={OWNER_TAG: owner_id(), "netsec.role": "pipeline"}, start_time=old)
    remote_old = client.create_run(exp_id, tags={OWNER_TAG: "elsewhere|1|42|7"}, start_time=old)
    remote_young = client.create_run(exp_id, tags={OWNER_TAG: "elsewhere|1|43|7"})
    no_owner_old = client.create_run(exp_id, start_time=old)
    done = client.create_run(exp_id, tags={OWNER_TAG: dead_owner()})
    client.set_terminated(done.info.run_id, "FINISHED")

    record = reconcile(cfg, by="pipeline run test")
    killed = {i.id for i in record.items if i.kind == "mlflow_run"}
    assert killed == {dead.info.run_id, remote_old.info.run_id, no_owner_old.info.run_id}
    status = {
        r.info.run_id: client.get_run(r.info.run_id).info.status
        for r in (dead, live, remote_old, remote_young, no_owner_old, done)
    }
    assert status == {
        dead.info.run_id: "KILLED",
        live.info.run_id: "RUNNING",
        remote_old.info.run_id: "KILLED",
        remote_young.info.run_id: "RUNNING",
        no_owner_old.info.run_id: "KILLED",
        done.info.run_id: "FINISHED",
    }
    why = client.get_run(dead.info.run_id).data.tags["netsec.reconcile"]
    assert why.startswith("ended KILLED by pipeline run test") and "is gone" in why
    why_old = client.get_run(remote_old.info.run_id).data.tags["netsec.reconcile"]
    assert "dag.task_timeout_minutes=5" in why_old
    assert reconcile(cfg, by="again").items == []


def test_reconcile_with_the_store_down_is_one_line_exit_3(make_cfg, tmp_path):
    from netsec_testing import NetsecProcess, free_port

    uri = f"http://127.0.0.1:{free_port()}"
    proc = NetsecProcess(
        tmp_path / "work", "reconcile", sets=(f"registry.tracking_uri={uri}", "registry.max_retries=0")
    )
    assert proc.wait(300) == 3
    errors = [line for line in proc.stderr.splitlines() if line.startswith("netsec reconcile: error:")]
    assert len(errors) == 1 and uri in errors[0] and "Traceback" not in proc.stderr, proc.stderr


def test_runs_whose_sync_did_not_finish_are_synced_once(cfg, client, tmp_path):
    """A decided version of this storage with no manifest (its sync failed) is synced; a version
    whose training split lies elsewhere (another storage, before the hand-off) is not ours."""
    from netsec_tasks.reconcile import reconcile
    from netsec_tasks.records import RunContext
    from netsec_tasks.storage import storage_for
    from netsec_tasks.sync import is_synced

    ours = left_over_version(cfg, client, tmp_path, owner=dead_owner())
    other = left_over_version(cfg, client, tmp_path, owner=dead_owner(), depth=3, seed=4)
    run = RunContext.create(cfg, run_id="unsynced run")
    client.set_model_version_tag(MODEL, ours, "netsec.pipeline_run_id", run.run_id)
    client.set_model_version_tag(MODEL, ours, "netsec.train_uri", run.step_uri("validate", "train.parquet"))
    client.set_model_version_tag(MODEL, other, "netsec.train_uri", "s3://elsewhere/runs/x/train.parquet")

    first = reconcile(cfg, by="first")
    synced = [i for i in first.items if i.kind == "sync"]
    assert [(i.id, i.action) for i in synced] == [(run.run_id, "synced")]
    assert f"{MODEL} v{ours} had no manifest" in synced[0].reason
    assert is_synced(cfg, run)
    names = {o.uri.rsplit("/", 1)[-1] for o in storage_for(cfg).list(run.storage_uri)}
    assert {"manifest.json", "MLmodel", "model.skops"} <= names
    assert reconcile(cfg, by="second").items == []  # the manifest proves it: nothing to redo
