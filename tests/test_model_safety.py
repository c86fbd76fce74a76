"""Loading refuses models that are not skops or that trust types outside the allow-list."""

import pytest
import yaml
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from netsec_tasks.errors import RegistryError
from netsec_tasks.sample import make_sample
from netsec_tasks.tracking import load_verified_model, verify_model_dir


def _data():
    frame = make_sample(200, seed=4)
    return frame.drop(columns="Result").astype(float), (frame["Result"] == -1).astype(int)


def test_skops_model_with_allowed_types_loads(tmp_path):
    import mlflow.sklearn

    X, y = _data()
    model = DecisionTreeClassifier(max_depth=3).fit(X, y)
    mlflow.sklearn.save_model(
        model,
        tmp_path / "m",
        serialization_format="skops",
        skops_trusted_types=["sklearn.tree._tree.Tree", "numpy.dtype"],
    )
    assert verify_model_dir(tmp_path / "m") == ["sklearn.tree._tree.Tree", "numpy.dtype"]
    loaded = load_verified_model(str(tmp_path / "m"))
    assert (loaded.predict(X) == model.predict(X)).all()


def test_pickle_model_is_refused(tmp_path):
    import mlflow.sklearn

    X, y = _data()
    mlflow.sklearn.save_model(
        LogisticRegression().fit(X, y), tmp_path / "p", serialization_format="cloudpickle"
    )
    with pytest.raises(RegistryError, match="cloudpickle.*refused"):
        load_verified_model(str(tmp_path / "p"))


def test_model_trusting_a_foreign_type_is_refused(tmp_path):
    import mlflow.sklearn

    X, y = _data()
    mlflow.sklearn.save_model(
        DecisionTreeClassifier().fit(X, y),
        tmp_path / "m",
        serialization_format="skops",
        skops_trusted_types=["sklearn.tree._tree.Tree", "numpy.dtype"],
    )
    mlmodel = tmp_path / "m" / "MLmodel"
    conf = yaml.safe_load(mlmodel.read_text())
    conf["flavors"]["sklearn"]["skops_trusted_types"].append("builtins.eval")
    mlmodel.write_text(yaml.safe_dump(conf))
    with pytest.raises(RegistryError, match="builtins.eval"):
        verify_model_dir(tmp_path / "m")
