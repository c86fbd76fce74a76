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
