"""Registry step against a real MLflow SQLite store: registration, promotion, idempotence, failures.

Creating a fresh MLflow SQLite store runs every schema migration (~5 s), so one empty store is
made per session and copied for each test: every test still gets its own, isolated store.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import netsec_testing
from netsec_tasks.dataset_schema import load_schema
from netsec_tasks.errors import DataError, RegistryError, SourceUnavailable
from netsec_tasks.records import RunContext, TrainRecord, ValidationRecord
from netsec_tasks.storage import file_uri_to_path
from netsec_testing import train_record

MODEL = "netsec-test-model"
REPO_SCHEMA = Path(__file__).resolve().parent.parent / "config" / "schema" / "phishing.yaml"


# --------------------------------------------------------------------------- fixtures/helpers


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory) -> Path:
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()  # creates and migrates the schema
    return path


@pytest.fixture()
def registry_cfg(make_cfg, tmp_path, empty_mlflow_db):
    """A config whose MLflow store is a fresh copy of the empty template, in tmp_path."""
    db = tmp_path / "mlflow" / "mlflow.db"
    db.parent.mkdir()
    shutil.copyfile(empty_mlflow_db, db)

    def _make(**overrides):
        base = {
            "registry.tracking_uri": f"sqlite:///{db}",
            "registry.artifact_location": str(tmp_path / "mlartifacts"),
            "registry.model_name": MODEL,
            "registry.min_score": 0.5,
            # These tests register bare Pipelines selected by F1 (versions from before
            # operating points): the objective they were made under. The budget's rules have
            # their own tests below.
            "decision.objective": "f1",
        }
        base.update(overrides)
        return make_cfg(**base)

    return _make


def write_splits(
    directory: Path, train: pd.DataFrame, test: pd.DataFrame, schema_path: Path = REPO_SCHEMA
) -> str:
    """What validation leaves in storage: both splits and the training rows' hashes; returns
    the test split's URI (the others sit beside it, see validation_record)."""
    from netsec_tasks.split import lineage_frame, lineage_hashes

    schema = load_schema(schema_path)
    directory.mkdir(parents=True, exist_ok=True)
    train.to_parquet(directory / "train.parquet", index=False)
    test.to_parquet(directory / "test.parquet", index=False)
    lineage_frame(lineage_hashes(train, schema)).to_parquet(directory / "train_row_hashes.parquet")
    return (directory / "test.parquet").as_uri()


@pytest.fixture()
def splits(tmp_path):
    """Synthetic UCI-schema train/test frames, and the validated splits in (file://) storage."""
    from netsec_tasks.sample import make_sample

    frame = make_sample(900, seed=11)
    train, test = frame.iloc[:600].reset_index(drop=True), frame.iloc[600:].reset_index(drop=True)
    return train, test, write_splits(tmp_path / "validated", train, test)


def fit_pipeline(cfg, train: pd.DataFrame, depth: int, shuffle_labels: bool = False, seed: int = 0):
    """The conventional model: Pipeline(preprocess, estimator) on 0/1 is_threat."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.tree import DecisionTreeClassifier

    schema = load_schema(cfg.schema_path)
    X = train[schema.features]
    y = np.asarray(schema.is_threat(train[schema.target.column]), dtype=int)
    if shuffle_labels:  # a model that learned nothing: a clearly worse candidate
        y = np.random.default_rng(seed).permutation(y)
    pre = ColumnTransformer([("num", "passthrough", schema.features)])
    model = Pipeline(
        [("preprocess", pre), ("model", DecisionTreeClassifier(max_depth=depth, random_state=seed))]
    )
    return model.fit(X, y)


def log_training_run(cfg, run: RunContext, model, train: pd.DataFrame, test: pd.DataFrame) -> TrainRecord:
    """What the training step leaves behind: a parent run with the model, metrics, train data."""
    import mlflow
    from sklearn import metrics as skm

    from netsec_tasks.tracking import configure_mlflow, log_pipeline_model

    schema = load_schema(cfg.schema_path)
    exp_id = configure_mlflow(cfg)
    y_test = np.asarray(schema.is_threat(test[schema.target.column]), dtype=int)
    pred = model.predict(test[schema.features])
    f1 = float(skm.f1_score(y_test, pred, zero_division=0))
    with mlflow.start_run(
        experiment_id=exp_id, run_name=run.run_id, tags={"netsec.pipeline_run_id": run.run_id}
    ) as parent:
        mlflow.log_metrics({"test_f1": f1, "cv_score": f1})
        model_uri = log_pipeline_model(model, train[schema.features].head(20), name="model")
    return train_record(
        model_uri=model_uri,
        mlflow_run_id=parent.info.run_id,
        experiment_id=exp_id,
        cv_score=f1,
        test_metrics={"f1": f1},
        train_rows=len(train),
        test_rows=len(test),
        training_seconds=0.1,
    )


def validation_record(test_uri: str, digest: str = "d" * 64) -> ValidationRecord:
    base = test_uri.rsplit("/", 1)[0]
    return netsec_testing.validation_record(
        report_uri=f"{base}/report.yaml",
        train_uri=f"{base}/train.parquet",
        test_uri=test_uri,
        new_batch_uri=test_uri,
        train_row_hashes_uri=f"{base}/train_row_hashes.parquet",
        rows_checked=900,
        train_rows=600,
        test_rows=300,
        dataset_digest=digest,
    )


def new_run(cfg, name: str) -> RunContext:
    return RunContext.create(cfg, run_id=f"test__{name}", trigger="test")


def train_and_register(cfg, name, splits, depth, shuffle_labels=False):
    from netsec_tasks.registry import register

    train, test, test_uri = splits
    run = new_run(cfg, name)
    model = fit_pipeline(cfg, train, depth, shuffle_labels=shuffle_labels)
    rec = log_training_run(cfg, run, model, train, test)
    return run, rec, register(cfg, run, rec, validation_record(test_uri))


def client_for(cfg):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=cfg.registry.tracking_uri, registry_uri=cfg.registry.tracking_uri)


def versions(cfg) -> list:
    return client_for(cfg).search_model_versions(f"name = '{cfg.registry.model_name}'")


# --------------------------------------------------------------------------- tests


def test_promotes_first_rejects_worse_promotes_better(registry_cfg, splits):
    from netsec_tasks.registry import get_production, load_production_model, production_reference_uri

    cfg = registry_cfg()
    client = client_for(cfg)
    assert get_production(cfg) is None and production_reference_uri(cfg) is None

    # v1: no Production yet -> promoted (alias and stage), reasons recorded on version and run.
    run1, tr1, r1 = train_and_register(cfg, "one", splits, depth=1)
    assert (r1.version, r1.promoted, r1.production_version) == ("1", True, "1")
    assert r1.previous_production_version is None and r1.production_score is None
    assert r1.new_score == pytest.approx(tr1.test_metrics["f1"])  # same split, same metric
    mv1 = client.get_model_version(MODEL, "1")
    assert mv1.current_stage == "Production" and "production" in mv1.aliases
    schema = load_schema(cfg.schema_path)
    assert mv1.tags["netsec.pipeline_run_id"] == run1.run_id
    base = splits[2].rsplit("/", 1)[0]
    assert mv1.tags["netsec.train_uri"] == mv1.tags["netsec.reference_uri"] == f"{base}/train.parquet"
    assert mv1.tags["netsec.test_uri"] == splits[2]
    assert mv1.tags["netsec.train_hashes_uri"] == f"{base}/train_row_hashes.parquet"
    assert json.loads(mv1.tags["netsec.split"])["seed"] == cfg.split.seed
    assert json.loads(mv1.tags["netsec.features"]) == schema.features
    assert mv1.tags["netsec.target"] == "Result"
    assert json.loads(mv1.tags["netsec.positive_label"]) == -1
    assert json.loads(mv1.tags["netsec.negative_label"]) == 1
    assert mv1.tags["netsec.metric"] == "f1"
    assert float(mv1.tags["netsec.test_score"]) == pytest.approx(tr1.test_metrics["f1"])
    assert mv1.tags["netsec.promotion"] == "promoted" and mv1.description
    # The version is linked to its logged model (MLflow 3): our parse of its models:/<id> source.
    from netsec_tasks.tracking import logged_model_id

    assert mv1.source.startswith("models:/m-") and logged_model_id(mv1) == mv1.source[len("models:/") :]
    assert client.get_registered_model(MODEL).description
    run_tags = client.get_run(tr1.mlflow_run_id).data.tags
    assert run_tags["netsec.promotion"] == "promoted" and run_tags["netsec.model_version"] == "1"

    # v2: a model trained on shuffled labels -> registered, not promoted, Production unchanged.
    _, tr2, r2 = train_and_register(cfg, "two", splits, depth=1, shuffle_labels=True)
    assert r2.new_score < r1.new_score, "precondition: v2 must be worse than v1"
    assert (r2.version, r2.promoted, r2.production_version) == ("2", False, "1")
    assert r2.production_score == pytest.approx(r1.new_score)
    assert r2.production_rows_in_test == 0  # Production never saw a test row
    assert str(client.get_registered_model(MODEL).aliases["production"]) == "1"
    mv2 = client.get_model_version(MODEL, "2")
    assert mv2.current_stage == "None" and not mv2.aliases
    run2_tags = client.get_run(tr2.mlflow_run_id).data.tags
    for tags in (mv2.tags, run2_tags):
        assert tags["netsec.promotion"] == "rejected"
        assert "Production v1" in tags["netsec.promotion_reason"]
        assert float(tags["netsec.production_score"]) == pytest.approx(r1.new_score)
        assert float(tags["netsec.new_score"]) == pytest.approx(r2.new_score)

    # v3: a depth-2 tree beats the v1 stump -> promoted, v1 archived.
    _, tr3, r3 = train_and_register(cfg, "three", splits, depth=2)
    assert r3.new_score >= r1.new_score, "precondition: v3 must not be worse than v1"
    assert (r3.version, r3.promoted, r3.previous_production_version) == ("3", True, "1")
    assert client.get_model_version(MODEL, "1").current_stage == "Archived"
    assert client.get_model_version(MODEL, "3").current_stage == "Production"
    assert str(client.get_registered_model(MODEL).aliases["production"]) == "3"

    prod = get_production(cfg)
    assert (prod.version, prod.run_id) == ("3", tr3.mlflow_run_id)
    assert prod.metrics["test_f1"] == pytest.approx(tr3.test_metrics["f1"])
    assert production_reference_uri(cfg) == f"{base}/train.parquet"

    # skops trusted types come from the MLmodel file: load_model needs no extra argument.
    model, version = load_production_model(cfg)
    train, test, _ = splits
    assert version == "3" and type(model).__name__ == "Pipeline"
    assert set(np.unique(model.predict(test[schema.features]))) <= {0, 1}


def test_reference_uri_is_loadable(registry_cfg, splits):
    from netsec_tasks.registry import production_reference_uri
    from netsec_tasks.storage import storage_for

    cfg = registry_cfg()
    train_and_register(cfg, "ref", splits, depth=3)
    uri = production_reference_uri(cfg)
    assert storage_for(cfg).read_frame(uri).equals(splits[0])


def test_production_is_graded_only_on_rows_it_never_saw(registry_cfg, splits, tmp_path, caplog):
    """If Production was trained on some of today's test rows (a changed split.seed, say), the
    record counts them and both models are compared on the rest."""
    from netsec_tasks.registry import register

    cfg = registry_cfg()
    train, test, test_uri = splits
    leaked = pd.concat([train, test.iloc[:100]], ignore_index=True)
    run = new_run(cfg, "leaky-production")
    rec = log_training_run(cfg, run, fit_pipeline(cfg, leaked, 3), leaked, test)
    first = register(cfg, run, rec, validation_record(write_splits(tmp_path / "v1", leaked, test)))
    assert first.promoted
    distinct_seen = test.iloc[:100].merge(test, how="inner")  # copies of those rows in test count too
    _, _, second = train_and_register(cfg, "next", splits, depth=3)
    assert second.production_rows_in_test == len(distinct_seen) > 0
    assert "never saw" in second.reason and "trained on" in caplog.text
    tags = client_for(cfg).get_model_version(MODEL, second.version).tags
    assert tags["netsec.production_rows_in_test"] == str(second.production_rows_in_test)


def test_production_without_lineage_is_compared_as_before(registry_cfg, splits, caplog):
    """A version registered before lineage existed: compared on the whole split, with a warning."""
    cfg = registry_cfg()
    _, _, first = train_and_register(cfg, "old", splits, depth=2)
    client_for(cfg).delete_model_version_tag(MODEL, first.version, "netsec.train_hashes_uri")
    _, _, second = train_and_register(cfg, "new", splits, depth=2)
    assert second.production_rows_in_test is None and second.production_score is not None
    assert "no training lineage" in caplog.text


def test_min_score_floor_blocks_promotion(registry_cfg, splits):
    from netsec_tasks.registry import get_production

    cfg = registry_cfg(**{"registry.min_score": 1.0})
    _, _, rec = train_and_register(cfg, "floor", splits, depth=1)
    assert rec.new_score < 1.0, "precondition: a depth-1 tree is not perfect"
    assert rec.version == "1" and not rec.promoted and rec.production_version is None
    assert "min_score" in rec.reason
    assert get_production(cfg) is None
    assert client_for(cfg).get_model_version(MODEL, "1").tags["netsec.promotion"] == "rejected"


def test_margin_requires_a_real_improvement(registry_cfg, splits):
    cfg = registry_cfg(**{"registry.promotion_margin": 0.5})
    _, _, first = train_and_register(cfg, "m1", splits, depth=2)
    _, _, second = train_and_register(cfg, "m2", splits, depth=6)
    assert first.promoted and second.new_score < first.new_score + 0.5
    assert not second.promoted and "margin 0.5000" in second.reason
    assert second.production_version == "1"
    # The reason is a sentence naming both models; Production's own metrics on the same test
    # rows are recorded beside the candidate's score (the outcome shows them side by side).
    assert second.reason.startswith("Compared with Production v1") and second.reason.endswith(".")
    assert "not promoted because the candidate's f1 " in second.reason
    assert "does not beat Production v1's" in second.reason
    assert first.production_metrics == {}  # nothing to compare with
    assert second.production_metrics["f1"] == pytest.approx(second.production_score)
    assert {"precision", "recall", "roc_auc", "pr_auc", "accuracy"} <= set(second.production_metrics)


def test_retry_reuses_the_version_and_finishes_promotion(registry_cfg, splits):
    from netsec_tasks.registry import register

    cfg = registry_cfg()
    run, tr, first = train_and_register(cfg, "retry", splits, depth=3)
    client = client_for(cfg)
    # Simulate a crash between setting the alias and moving the stage.
    client.transition_model_version_stage(MODEL, first.version, "None")
    again = register(cfg, run, tr, validation_record(splits[2]))
    assert again.version == first.version and again.promoted
    assert [str(mv.version) for mv in versions(cfg)] == [first.version]
    assert client.get_model_version(MODEL, first.version).current_stage == "Production"
    assert again.new_score == pytest.approx(first.new_score)

    # Clients without the alias still find Production by its stage.
    from netsec_tasks.registry import get_production, load_production_model

    client.delete_registered_model_alias(MODEL, "production")
    assert get_production(cfg).version == first.version
    assert load_production_model(cfg)[1] == first.version


def test_runs_uri_of_the_model_registers_too(registry_cfg, splits):
    from netsec_tasks.registry import load_production_model, register

    cfg = registry_cfg()
    train, test, test_uri = splits
    run = new_run(cfg, "runs-uri")
    rec = log_training_run(cfg, run, fit_pipeline(cfg, train, 2), train, test)
    rec = rec.model_copy(update={"model_uri": f"runs:/{rec.mlflow_run_id}/model"})
    out = register(cfg, run, rec, validation_record(test_uri))
    assert out.version == "1" and out.promoted
    mv = client_for(cfg).get_model_version(MODEL, "1")
    assert mv.run_id == rec.mlflow_run_id and mv.tags["netsec.model_uri"] == rec.model_uri
    assert load_production_model(cfg)[1] == "1"
    assert register(cfg, run, rec, validation_record(test_uri)).version == "1"  # retry: reused


def test_broken_production_model_does_not_block_its_replacement(registry_cfg, splits):
    cfg = registry_cfg()
    _, tr1, first = train_and_register(cfg, "good-then-broken", splits, depth=2)
    location = client_for(cfg).get_logged_model(tr1.model_uri.split("/")[-1]).artifact_location
    (file_uri_to_path(location) / "model.skops").write_bytes(b"corrupted after promotion")
    _, _, second = train_and_register(cfg, "replacement", splits, depth=1)
    assert second.promoted and second.production_score is None
    assert "could not be loaded" in second.reason and second.previous_production_version == "1"


def test_failure_mid_registration_leaves_no_version(registry_cfg, splits):
    from netsec_tasks.registry import register

    cfg = registry_cfg()
    train, test, test_uri = splits
    run = new_run(cfg, "broken")
    rec = log_training_run(cfg, run, fit_pipeline(cfg, train, 2), train, test)
    # Corrupt the logged model file: the version is created, then fails to load from the registry.
    location = client_for(cfg).get_logged_model(rec.model_uri.split("/")[-1]).artifact_location
    artifacts = file_uri_to_path(location)
    (artifacts / "model.skops").write_bytes(b"not a skops file")
    with pytest.raises(RegistryError, match="removed again") as err:
        register(cfg, run, rec, validation_record(test_uri))
    assert rec.model_uri in str(err.value)
    assert versions(cfg) == []
    from netsec_tasks.registry import get_production

    assert get_production(cfg) is None


def test_test_split_without_schema_columns_registers_nothing(registry_cfg, splits, tmp_path):
    from netsec_tasks.registry import register

    cfg = registry_cfg()
    train, test, _ = splits
    run = new_run(cfg, "cols")
    rec = log_training_run(cfg, run, fit_pipeline(cfg, train, 2), train, test)
    bad = write_splits(tmp_path / "bad", train, test.drop(columns=["SFH"]))
    with pytest.raises(DataError, match="SFH"):
        register(cfg, run, rec, validation_record(bad))
    assert versions(cfg) == []


def test_unreachable_tracking_server_names_the_uri(make_cfg):
    from netsec_tasks.registry import get_production, load_production_model
    from netsec_testing import free_port

    uri = f"http://127.0.0.1:{free_port()}"
    cfg = make_cfg(
        **{"registry.tracking_uri": uri, "registry.max_retries": 0, "registry.request_timeout_seconds": 5}
    )
    for call in (get_production, load_production_model):
        with pytest.raises(SourceUnavailable, match=uri.replace(".", r"\.")):
            call(cfg)


def test_untracked_training_record_is_refused(registry_cfg, splits):
    from netsec_tasks.registry import register

    cfg = registry_cfg()
    run = new_run(cfg, "untracked")
    rec = train_record(model_uri="file:///tmp/model.skops", mlflow_run_id="", experiment_id="")
    with pytest.raises(RegistryError, match="tracking off"):
        register(cfg, run, rec, validation_record(splits[2]))


@pytest.mark.parametrize(
    ("uri", "model_id"),
    [
        ("models:/m-0123abcd", "m-0123abcd"),
        ("models:/m-0123abcd/", "m-0123abcd"),
        ("models:/netsec-phishing/3", None),
        ("models:/netsec-phishing@production", None),
        ("runs:/0123/model", None),
        ("/tmp/model", None),
        ("", None),
        (None, None),
    ],
)
def test_logged_model_id_only_from_a_models_id_uri(uri, model_id):
    """MLflow 3's documented models:/ forms: only models:/<model_id> names a logged model."""
    from netsec_tasks.tracking import model_id_in

    assert model_id_in(uri) == model_id


# --------------------------------------------------------------------------- operating points


def fit_forest(cfg, train: pd.DataFrame, *, seed: int = 0, relabel: dict | None = None):
    """Pipeline(preprocess, 60-tree forest) on the data set's threat target; ``relabel`` maps raw
    labels to others before fitting (a model that never learned an attack type)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline

    from netsec_tasks.preprocessing import build_preprocessor

    schema = load_schema(cfg.schema_path)
    labels = train[schema.target.column].replace(relabel or {})
    y = np.asarray(schema.is_threat(labels), dtype=int)
    model = Pipeline(
        [
            ("preprocess", build_preprocessor(schema)),
            ("model", RandomForestClassifier(n_estimators=60, min_samples_leaf=2, random_state=seed)),
        ]
    )
    return model.fit(train[schema.features], y)


def register_model(
    cfg, name: str, model, train: pd.DataFrame, test: pd.DataFrame, test_uri: str, metric: str
):
    from netsec_tasks.registry import register

    run = new_run(cfg, name)
    rec = log_training_run(cfg, run, model, train, test).model_copy(update={"metric": metric})
    return register(cfg, run, rec, validation_record(test_uri))


def test_a_candidate_over_budget_is_not_promoted_even_with_a_higher_f1(registry_cfg, splits):
    """Objective recall_at_budget: Production decides at a threshold within the budget; a
    candidate, the same forest at 0.5, has the higher F1 and recall, but its test FPR is over the
    budget: it is not promoted, and the outcome shows both operating points."""
    from sklearn import metrics as skm

    from netsec_tasks.operating_point import threat_probability, with_threshold

    cfg = registry_cfg(**{"decision.objective": "recall_at_budget", "decision.min_recall": 0.3})
    train, test, test_uri = splits
    schema = load_schema(cfg.schema_path)
    forest = fit_forest(cfg, train)
    first = register_model(
        cfg, "strict", with_threshold(forest, 0.7), train, test, test_uri, "recall_at_budget"
    )
    assert first.promoted and first.operating_point["threshold"] == pytest.approx(0.7)
    second = register_model(
        cfg, "half", with_threshold(forest, 0.5), train, test, test_uri, "recall_at_budget"
    )

    y = np.asarray(schema.is_threat(test[schema.target.column]), dtype=int)
    f1 = {t: skm.f1_score(y, threat_probability(forest, test[schema.features]) >= t) for t in (0.7, 0.5)}
    assert f1[0.5] > f1[0.7], "precondition: the candidate has the higher F1"
    cand, prod = second.operating_point, second.production_operating_point
    assert cand["recall"] > prod["recall"] and cand["fpr_low"] > 0.01 >= prod["fpr_low"]
    assert not second.promoted and second.production_version == first.version
    assert "over the budget of 1% (decision.max_false_positive_rate)" in second.reason
    for point in (cand, prod):  # what the outcome, MLflow and /model show for both
        assert {"fpr", "fpr_low", "fpr_high", "recall", "precision_at_rate", "alerts_per_10k_benign"} <= set(
            point
        )
    tags = client_for(cfg).get_model_version(MODEL, second.version).tags
    assert json.loads(tags["netsec.promotion_operating_point"])["fpr"] == cand["fpr"]
    assert json.loads(tags["netsec.production_operating_point"])["threshold"] == pytest.approx(0.7)
    # The budget's floor is decision.min_recall (registry.min_score is objective f1's).
    floor = cfg.with_overrides({"decision.min_recall": 0.99, "registry.promotion_margin": -1})
    third = register_model(
        floor, "floor", with_threshold(forest, 0.6), train, test, test_uri, "recall_at_budget"
    )
    assert not third.promoted and "below the floor of 0.9900 (decision.min_recall)" in third.reason


def test_a_version_without_a_threshold_is_compared_at_half(registry_cfg, splits, caplog):
    """Production registered before thresholds (a bare Pipeline, no threshold tag) is loaded and
    compared at the 0.5 rule its predict() applies, with a warning; the candidate decides at its
    own threshold."""
    from netsec_tasks.operating_point import LEGACY_THRESHOLD, with_threshold

    before = registry_cfg(
        **{"decision.objective": "f1", "registry.min_score": 0.3, "decision.min_recall": 0.3}
    )
    cfg = before.with_overrides({"decision.objective": "recall_at_budget"})
    train, test, test_uri = splits
    old = register_model(before, "old", fit_forest(cfg, train), train, test, test_uri, "f1")
    assert old.promoted and old.operating_point["threshold"] == LEGACY_THRESHOLD
    assert "netsec.threshold" not in client_for(cfg).get_model_version(MODEL, old.version).tags
    new = register_model(
        cfg,
        "new",
        with_threshold(fit_forest(cfg, train, seed=1), 0.8),
        train,
        test,
        test_uri,
        "recall_at_budget",
    )
    assert new.production_operating_point["threshold"] == LEGACY_THRESHOLD
    assert new.operating_point["threshold"] == pytest.approx(0.8)
    assert "no recorded threshold" in caplog.text and "at the 0.5 rule" in new.reason
    # At 0.5 the old model's own test FPR is over the budget, so its recall sets no bar.
    assert new.production_operating_point["fpr_low"] > 0.01 and new.promoted
    assert "sets no bar" in new.reason


@pytest.fixture()
def intrusion(registry_cfg, tmp_path):
    """The intrusion_demo data set (a multi-class raw label) and its splits in storage."""
    from netsec_tasks.intrusion_sample import make_intrusion_sample

    cfg = registry_cfg(
        **{
            "dataset": "intrusion_demo",
            "decision.objective": "recall_at_budget",
            "registry.promotion_margin": -0.5,
        }
    )
    frame = make_intrusion_sample(3000, seed=5)
    train, test = frame.iloc[:2000].reset_index(drop=True), frame.iloc[2000:].reset_index(drop=True)
    return cfg, train, test, write_splits(tmp_path / "intrusion", train, test, cfg.schema_path)


def test_the_per_label_guard_names_the_label_a_candidate_loses(intrusion, registry_cfg):
    """A candidate that never learned 'smurf' loses that label's recall against Production: with
    the overall recall bar out of the way (promotion_margin -0.5) the guard alone refuses it and
    names the label; below min_label_rows the same candidate is promoted."""
    from netsec_tasks.operating_point import with_threshold

    cfg, train, test, test_uri = intrusion
    first = register_model(
        cfg, "all", with_threshold(fit_forest(cfg, train), 0.5), train, test, test_uri, "recall_at_budget"
    )
    assert first.promoted
    blind = with_threshold(fit_forest(cfg, train, relabel={"smurf": "normal"}), 0.5)
    second = register_model(cfg, "blind", blind, train, test, test_uri, "recall_at_budget")
    smurf = second.label_recall["smurf"]
    assert smurf["rows"] >= cfg.registry.min_label_rows and smurf["production"] - smurf["candidate"] > 0.05
    assert not second.promoted
    assert "'smurf'" in second.reason and "registry.max_label_recall_drop" in second.reason
    assert "does not beat" not in second.reason  # the guard alone refused it
    assert {"neptune", "portsweep"} <= set(second.label_recall)
    lenient = cfg.with_overrides({"registry.min_label_rows": 100_000})
    third = register_model(lenient, "blind-again", blind, train, test, test_uri, "recall_at_budget")
    assert third.promoted and "max_label_recall_drop" not in third.reason
