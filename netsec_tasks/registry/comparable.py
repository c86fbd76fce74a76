"""Whether a registered version is a model of the data set at hand.

A version records the features, target column and label mapping it was trained with (its
``netsec.features``, ``netsec.target`` and ``netsec.label_mapping`` tags, written at registration).
Two models that differ in any of them are different models: one must never be compared with, or
replace, the other. :func:`differences` says what differs; :func:`check_comparable` refuses.
"""

from __future__ import annotations

import json

from netsec_tasks.config import PipelineConfig
from netsec_tasks.dataset_schema import DatasetSchema
from netsec_tasks.errors import ConfigError
from netsec_tasks.tracking import TAG_PREFIX


def differences(tags: dict[str, str], schema: DatasetSchema) -> list[str]:
    """What makes a model version (its tags) a different model from one trained on ``schema``:
    other features, another target column, another label mapping, one sentence each. Empty when
    comparable, and for tags written before netsec recorded them."""
    out = []
    try:
        theirs = json.loads(tags[TAG_PREFIX + "features"]) if tags.get(TAG_PREFIX + "features") else None
    except ValueError:
        theirs = None
    if theirs is not None:
        ours = schema.features
        gone = [c for c in theirs if c not in ours]
        new = [c for c in ours if c not in theirs]
        if gone:
            out.append(f"features it has and the candidate lacks: {_short(gone)}")
        if new:
            out.append(f"features only the candidate has: {_short(new)}")
    target = tags.get(TAG_PREFIX + "target")
    if target and target != schema.target.column:
        out.append(f"target column {target!r}, the candidate's is {schema.target.column!r}")
    if tags.get(TAG_PREFIX + "label_mapping"):
        try:
            theirs_map = json.loads(tags[TAG_PREFIX + "label_mapping"])
        except ValueError:
            theirs_map = None
        ours_map = schema.target.mapping()
        if theirs_map is not None and any(
            sorted(map(str, theirs_map.get(k) or [])) != sorted(map(str, ours_map.get(k) or []))
            for k in ("positive", "negative")
        ):
            shown = {k: v for k, v in theirs_map.items() if k != "labels"}
            out.append(
                f"label mapping {shown}, the candidate's is "
                f"{ {k: v for k, v in ours_map.items() if k != 'labels'} }"
            )
    return out


def _short(names: list[str], limit: int = 8) -> str:
    return ", ".join(names[:limit]) + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def check_comparable(cfg: PipelineConfig, prod, schema: DatasetSchema) -> None:
    """Refuse to register a candidate under a model name whose Production version ``prod`` (a
    ModelVersion or ProductionModel; None passes) is another model (other features, target or
    label mapping): it would be compared with it as if they were the same model, and serving
    would answer one data set's requests with the other's model. Raises ConfigError saying what
    differs and how to name the new model."""
    if prod is None:
        return
    tags = dict(prod.tags or {})
    diff = differences(tags, schema)
    if not diff:
        return
    name = cfg.registry.model_name
    theirs = tags.get(TAG_PREFIX + "dataset") or "?"
    how = (
        "set registry.model_name (NETSEC_REGISTRY__MODEL_NAME) to a new name"
        if not cfg.model_name_derived
        else f"the name {name!r} is derived from the data set '{cfg.dataset}', so another data set "
        f"registered under it; set registry.model_name (NETSEC_REGISTRY__MODEL_NAME) to a new "
        f"name"
    )
    raise ConfigError(
        f"registered model {name!r}: Production v{prod.version} (data set '{theirs}') is not a "
        f"model of the data set '{schema.name}' being trained: "
        + "; ".join(diff)
        + f". Nothing was registered and Production is unchanged; to keep both, {how}"
    )
