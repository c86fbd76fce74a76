"""Config and schema loading: defaults, env overrides, errors that name the key."""

from pathlib import Path

import pytest

from netsec_tasks.config import load_config
from netsec_tasks.dataset_schema import load_schema
from netsec_tasks.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "config" / "pipeline.yaml"


def test_defaults_are_embedded_and_local(tmp_path):
    cfg = load_config(CONFIG, environ={"NETSEC_HOME": str(tmp_path)})
    assert cfg.source.kind == "file"
    assert cfg.registry.tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"
    assert cfg.storage.uri == f"file://{tmp_path}/storage"
    assert cfg.schema_path == REPO / "config" / "schema" / "phishing.yaml"


def test_env_overrides_are_typed_and_nested():
    cfg = load_config(
        CONFIG,
        environ={
            "NETSEC_SOURCE__KIND": "mongo",
            "NETSEC_SOURCE__MONGO__URI": "mongo://user:pw@db:27017/netsec",
            "NETSEC_TRAINING__CV_FOLDS": "3",
            "NETSEC_TRAINING__CANDIDATES": "[random_forest, xgboost]",
            "NETSEC_SPLIT__DUPLICATE_AWARE": "false",
        },
    )
    assert cfg.source.kind == "mongo"
    # Airflow's mongo:// connection form is normalised for pymongo.
    assert cfg.source.mongo.uri == "mongodb://user:pw@db:27017/netsec"
    assert cfg.training.cv_folds == 3
    assert cfg.training.candidates == ["random_forest", "xgboost"]
    assert cfg.split.duplicate_aware is False


def test_mlflow_tracking_uri_env_is_honoured_unless_overridden():
    cfg = load_config(CONFIG, environ={"MLFLOW_TRACKING_URI": "http://mlflow:5000"})
    assert cfg.registry.tracking_uri == "http://mlflow:5000"
    cfg = load_config(
        CONFIG,
        environ={
            "MLFLOW_TRACKING_URI": "http://mlflow:5000",
            "NETSEC_REGISTRY__TRACKING_URI": "http://other:5000",
        },
    )
    assert cfg.registry.tracking_uri == "http://other:5000"


@pytest.mark.parametrize(
    "env, named",
    [
        ({"NETSEC_TRAINING__CV_FOLDZ": "3"}, ["training.cv_foldz", "NETSEC_TRAINING__CV_FOLDZ"]),
        ({"NETSEC_TRAINING__CV_FOLDS": "many"}, ["training.cv_folds", "NETSEC_TRAINING__CV_FOLDS"]),
        ({"NETSEC_SOURCE__KIND": "kafka"}, ["source.kind"]),
        ({"NETSEC_STORAGE__URI": "ftp://x"}, ["storage.uri"]),
        ({"NETSEC_TRAINING__CANDIDATES": "[svm]"}, ["training.candidates"]),
    ],
)
def test_bad_values_name_the_key_and_variable(env, named):
    with pytest.raises(ConfigError) as err:
        load_config(CONFIG, environ=env)
    for text in named:
        assert text in str(err.value)


def test_bad_file_key_is_named(tmp_path):
    (tmp_path / "pipeline.yaml").write_text("training:\n  n_itr: 5\n")
    with pytest.raises(ConfigError, match=r"unknown key 'training.n_itr'"):
        load_config(tmp_path / "pipeline.yaml", environ={})


def test_a_bad_override_is_blamed_on_the_override_not_the_file(tmp_path, capsys):
    """``--set training.n_iter=0`` was blamed on config/pipeline.yaml."""
    from netsec_tasks.cli import main

    code = main(["--config", str(CONFIG), "config", "--set", "training.n_iter=0"])
    err = capsys.readouterr().err
    assert code == 2 and "(from --set training.n_iter=0)" in err, err
    assert str(CONFIG) not in err  # the file is fine
    with pytest.raises(ConfigError) as exc:
        load_config(CONFIG, environ={"NETSEC_TRAINING__N_ITER": "0"})
    assert "(from $NETSEC_TRAINING__N_ITER)" in str(exc.value) and str(CONFIG) not in str(exc.value)
    (tmp_path / "pipeline.yaml").write_text("training:\n  n_iter: 0\n")
    with pytest.raises(ConfigError, match=r"pipeline.yaml: invalid configuration: 'training.n_iter':"):
        load_config(tmp_path / "pipeline.yaml", environ={})
    assert main(["--config", str(CONFIG), "config", "--set", "training.candidates=[a"]) == 2
    assert "--set training.candidates=[a: the value is not valid YAML" in capsys.readouterr().err


def test_missing_config_file_says_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="NETSEC_CONFIG"):
        load_config(tmp_path / "nope.yaml", environ={})


def test_schema_of_the_default_dataset():
    schema = load_schema(REPO / "config" / "schema" / "phishing.yaml")
    assert len(schema.features) == 30
    assert schema.target.column == "Result" and schema.target.positive == -1
    assert schema.negative_label == 1
    assert schema.categorical_features == []
    assert all(schema.columns[c].is_discrete() for c in schema.features)


def test_schema_errors_name_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntarget: {column: y, positive: 2, labels: [0, 1]}\ncolumns: {a: {dtype: int}}\n")
    with pytest.raises(ConfigError, match="positive 2 is not in labels"):
        load_schema(bad)
    bad.write_text("name: x\ntarget: {column: y, positive: 1}\ncolumns: {a: {dtype: integer}}\n")
    with pytest.raises(ConfigError, match="columns.a.dtype"):
        load_schema(bad)
