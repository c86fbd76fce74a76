"""A challenger in shadow (issue 25), against a real ``mlflow server``: the registry's aliases
(set, replaced, promoted and rejected by hand, finished by reconcile after a crash)."""

from __future__ import annotations

import pytest
from test_registry import client_for, splits, train_and_register  # noqa: F401 (fixture)

from netsec_tasks.registry import (
    PROMOTION_TAG,
    SHADOW_OUTCOME_TAG,
    SHADOW_REASON_TAG,
    challenger_version,
    production_version,
)

MODEL = "netsec-shadow-model"


@pytest.fixture()
def shadow_cfg(make_cfg, tmp_path, mlflow_server, request):
    """A config on the real MLflow server with registry.shadow on; one registered model per test."""
    name = f"{MODEL}-{request.node.name[:40]}"

    def _make(**overrides):
        return make_cfg(
            **{
                "registry.tracking_uri": mlflow_server.uri,
                "registry.model_name": name,
                "registry.shadow": True,
                "registry.min_score": 0.0,
                "decision.objective": "f1",
                **overrides,
            }
        )

    return _make


def _tags(cfg, version: str) -> dict[str, str]:
    return dict(client_for(cfg).get_model_version(cfg.registry.model_name, version).tags)


def _aliases(cfg) -> dict[str, str]:
    return dict(client_for(cfg).get_registered_model(cfg.registry.model_name).aliases)


def _cli(cfg, *args: str) -> int:
    from netsec_tasks.cli import main

    sets = [
        f"workdir={cfg.workdir}",
        f"registry.tracking_uri={cfg.registry.tracking_uri}",
        f"registry.model_name={cfg.registry.model_name}",
    ]
    return main([*args, *(x for s in sets for x in ("--set", s))])


def test_the_challenger_alias_moves_and_its_shadow_ends_with_a_reason(shadow_cfg, splits, capsys):  # noqa: F811
    cfg = shadow_cfg()
    # v1: no Production yet, so nothing to shadow: Production at once, and the reason says so.
    _, _, first = train_and_register(cfg, "first", splits, depth=3, shuffle_labels=True)
    assert first.promoted and first.challenger_version is None
    assert "no Production model to run a challenger beside" in first.reason
    # v2 passes the gate: the challenger; Production stays v1. The record names both.
    _, _, second = train_and_register(cfg, "second", splits, depth=3)
    assert not second.promoted and second.production_version == first.version
    assert second.challenger_version == second.version and second.replaced_challenger is None
    assert "it becomes the challenger" in second.reason
    assert _aliases(cfg) == {"production": first.version, "challenger": second.version}
    assert _tags(cfg, second.version)[PROMOTION_TAG] == "challenger"
    assert _tags(cfg, second.version)["netsec.challenger_since"]
    # v3 passes too: it replaces v2, which is tagged with the reason.
    _, _, third = train_and_register(cfg, "third", splits, depth=4)
    assert third.challenger_version == third.version and third.replaced_challenger == second.version
    old = _tags(cfg, second.version)
    assert old[SHADOW_OUTCOME_TAG] == "replaced" and old[PROMOTION_TAG] == "retired"
    assert f"replaced by v{third.version}" in old[SHADOW_REASON_TAG]
    assert _aliases(cfg) == {"production": first.version, "challenger": third.version}

    # By hand: a stale --version is refused (exit 2, one line), then the challenger is promoted.
    assert _cli(cfg, "promote", "--challenger", "--version", second.version) == 2
    assert f"challenger is v{third.version}, not v{second.version}" in capsys.readouterr().err
    assert _cli(cfg, "promote", "--challenger", "--reason", "alert load checked by hand") == 0
    assert _aliases(cfg) == {"production": third.version}
    tags = _tags(cfg, third.version)
    assert tags[SHADOW_OUTCOME_TAG] == "promoted" and tags[PROMOTION_TAG] == "promoted"
    assert tags[SHADOW_REASON_TAG] == "alert load checked by hand"
    assert tags["netsec.previous_production_version"] == first.version  # netsec rollback reads it
    mv = client_for(cfg).get_model_version(cfg.registry.model_name, third.version)
    assert mv.current_stage == "Production"

    # v4 (margin -1: it passes) is the challenger; rejected by hand, with the reason.
    _, _, fourth = train_and_register(
        shadow_cfg(**{"registry.promotion_margin": -1.0}), "fourth", splits, depth=2
    )
    assert fourth.challenger_version == fourth.version
    assert _cli(cfg, "reject", "--challenger", "--reason", "raises twice the alerts") == 0
    assert _aliases(cfg) == {"production": third.version}
    tags = _tags(cfg, fourth.version)
    assert (tags[SHADOW_OUTCOME_TAG], tags[SHADOW_REASON_TAG]) == ("rejected", "raises twice the alerts")
    assert _cli(cfg, "reject", "--challenger") == 2  # nothing to reject now
    assert "has no challenger" in capsys.readouterr().err


def test_reconcile_finishes_a_challenger_left_half_set(shadow_cfg, splits):  # noqa: F811
    """A crash between the decision's tags and the alias move: the next run's reconcile moves the
    alias; an alias left on a version whose shadow ended is removed."""
    from netsec_tasks.reconcile import reconcile

    cfg = shadow_cfg()
    _, _, first = train_and_register(cfg, "first", splits, depth=3, shuffle_labels=True)
    _, _, second = train_and_register(cfg, "second", splits, depth=3)
    client = client_for(cfg)
    name = cfg.registry.model_name
    client.delete_registered_model_alias(name, "challenger")  # the alias move never happened
    items = {(i.id, i.action) for i in reconcile(cfg, by="test").items}
    assert (f"{name}/{second.version}", "challenger set") in items
    assert challenger_version(client, cfg).version == second.version

    client.set_model_version_tag(name, second.version, PROMOTION_TAG, "retired")  # ended, alias left
    items = {(i.id, i.action) for i in reconcile(cfg, by="test").items}
    assert (f"{name}/{second.version}", "challenger alias removed") in items
    assert challenger_version(client, cfg) is None
    assert production_version(client, cfg).version == first.version


# --------------------------------------------------------------------------- monitoring decides


def _serve(cfg, prod_version: str, chal_version: str, prod: list[int], chal: list[int]) -> list[str]:
    """What serving logs for one request: Production's decisions ``prod`` beside the challenger's
    ``chal`` on the same rows (serving's own JsonlSink); returns the prediction ids."""
    import datetime as dt

    import numpy as np

    from netsec_tasks.dataset_schema import load_schema
    from netsec_tasks.prediction_log import new_request_id, prediction_ids
    from serving.prediction_writer import JsonlSink, LogEntry

    features = tuple(load_schema(cfg.schema_path).features)
    now = dt.datetime.now(dt.UTC)
    n = len(prod)
    rid = new_request_id(now)
    entry = LogEntry(
        time=now,
        model_name=cfg.registry.model_name,
        model_version=prod_version,
        features=features,
        inputs=np.tile(np.arange(len(features), dtype=float), (n, 1)),
        is_threat=np.asarray(prod, dtype=np.int8),
        probability=np.where(np.asarray(prod) == 1, 0.9, 0.1),
        labels=[-1 if t else 1 for t in prod],
        route="/predict",
        request_id=rid,
        challenger_version=chal_version,
        challenger_is_threat=np.asarray(chal, dtype=np.int8),
        challenger_probability=np.where(np.asarray(chal) == 1, 0.8, 0.2),
    )
    sink = JsonlSink(cfg.monitoring.log_dir, cfg.registry.model_name)
    sink.write([(now.strftime("%Y-%m-%d"), line) for _, line in sink.convert(entry)])
    return prediction_ids(rid, n)


def test_monitoring_retires_a_challenger_over_budget_and_promotes_one_within(shadow_cfg, splits):  # noqa: F811
    """A challenger that raises alerts over the budget is never promoted, even when verdicts
    favour it; one within the budget and not worse on verdicts is promoted; neither is decided
    before shadow.min_hours and shadow.min_rows."""
    import datetime as dt

    from netsec_tasks.monitoring.shadow import decide_challenger
    from netsec_tasks.monitoring.step import log_and_verdicts

    cfg = shadow_cfg(
        **{
            "shadow.min_hours": 1.0,
            "shadow.min_rows": 400,
            "decision.max_false_positive_rate": 0.01,
            "decision.expected_threat_rate": 0.01,  # the ceiling: 1% + 1% x 99% = 1.99% alerts
            "registry.promotion_margin": -1.0,  # every candidate passes the offline gate
        }
    )
    _, _, first = train_and_register(cfg, "first", splits, depth=3)
    _, _, second = train_and_register(cfg, "second", splits, depth=4)
    prod, chal = first.version, second.version
    assert second.challenger_version == chal
    reader, store = log_and_verdicts(cfg)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)

    # 300 rows: the challenger alerts on 30% (Production on 1%); too few rows to decide.
    ids = _serve(cfg, prod, chal, [1] * 3 + [0] * 297, [1] * 90 + [0] * 210)
    early = decide_challenger(cfg, "m1", reader=reader, store=store, now=later)
    assert early.action == "wait" and "shadow.min_rows=400" in early.reason
    assert (early.rows, early.challenger["alerts"], early.production["alerts"]) == (300, 90, 3)
    assert early.challenger["over_budget"] and not early.production["over_budget"]
    assert early.agreement == pytest.approx(1 - 87 / 300)
    # The rows where they disagree are listed for analysts, with both decisions.
    listed = early.listed_disagreements
    assert len(listed) == 50 and listed[0]["production"] == 0 and listed[0]["challenger"] == 1
    assert {d["prediction_id"] for d in listed} <= set(ids[3:90])
    assert challenger_version(client_for(cfg), cfg).version == chal  # nothing moved

    # Analysts confirm the challenger's extra alerts are threats: it is better on verdicts,
    # and still never promoted, because its alert rate is over the budget.
    store.record(
        [{"prediction_id": p, "label": "-1", "is_threat": True, "source": "test"} for p in ids[3:60]]
    )
    more = _serve(cfg, prod, chal, [0] * 200, [1] * 10 + [0] * 190)
    decided = decide_challenger(cfg, "m2", reader=reader, store=store, now=later)
    # The latest 50 disagreements, less the ones analysts have labelled since.
    assert [d["prediction_id"] for d in decided.listed_disagreements] == (ids[60:90] + more[:10])[::-1]
    assert decided.rows == 500 and decided.verdicts["challenger_only_right"] == 57
    assert decided.action == "retired" and decided.applied
    assert "is over 1.99%" in decided.reason and "not worse on verdicts" in decided.reason
    client = client_for(cfg)
    assert challenger_version(client, cfg) is None and production_version(client, cfg).version == prod
    tags = _tags(cfg, chal)
    assert tags[SHADOW_OUTCOME_TAG] == "retired" and tags[SHADOW_REASON_TAG] == decided.reason
    assert tags["netsec.shadow.decision"] == "retired" and tags["netsec.shadow.rows"] == "500"
    from netsec_tasks.storage import file_uri_to_path

    page = file_uri_to_path(decided.html_uri).read_text()
    assert "Challenger retired" in page and more[9] in page and ids[55] not in page

    # A new challenger within the budget (1% alerts, as Production) and not worse: promoted.
    _, _, third = train_and_register(cfg, "third", splits, depth=5)
    assert third.challenger_version == third.version
    _serve(cfg, prod, third.version, [1] * 4 + [0] * 396, [1] * 3 + [0] * 397)
    promoted = decide_challenger(cfg, "m3", reader=reader, store=store, now=later)
    assert promoted.rows == 400 and promoted.unscored_rows == 0  # only rows since it was set
    assert promoted.action == "promoted", promoted.reason
    assert production_version(client, cfg).version == third.version
    assert challenger_version(client, cfg) is None
    assert decide_challenger(cfg, "m4", reader=reader, store=store).action == "none"
