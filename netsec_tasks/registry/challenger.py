"""Ending a challenger's shadow: promote it to Production, or retire it (``registry.shadow``).

A challenger is a version that passed the promotion gate while ``registry.shadow`` was on
(:func:`netsec_tasks.registry.promotion.set_challenger` gave it alias
``registry.challenger_alias``). Serving scores it in shadow; its shadow ends here, by hand
(``netsec promote --challenger``, ``netsec reject --challenger --reason ...``) or by the
``netsec_monitoring`` DAG's ``decide_challenger`` task (:mod:`netsec_tasks.monitoring.shadow`).

Both functions tag the version first (``netsec.shadow_outcome``, ``netsec.shadow_reason``, who
decided; a promotion also ``netsec.promotion=promoted`` and ``netsec.previous_production_version``,
which ``netsec rollback`` reads), *then* move the aliases, so a crash in between leaves tags that
:mod:`netsec_tasks.reconcile` finishes: a version tagged promoted that is not Production is
promoted, and a challenger alias on a version whose shadow has ended is removed.
"""

from __future__ import annotations

import logging

from netsec_tasks.config import PipelineConfig
from netsec_tasks.errors import ConfigError
from netsec_tasks.outages import mlflow_errors
from netsec_tasks.records import ChallengerRecord
from netsec_tasks.registry.lookup import challenger_version, production_version
from netsec_tasks.registry.promotion import (
    PROMOTION_TAG,
    SHADOW_OUTCOME_TAG,
    SHADOW_REASON_TAG,
    promote,
)
from netsec_tasks.tracking import TAG_PREFIX, mlflow_client

log = logging.getLogger(__name__)

DECIDED_BY_TAG = TAG_PREFIX + "shadow_decided_by"


def _current(client, cfg: PipelineConfig, expected: str | None):
    """(challenger ModelVersion, Production version or None). Raises ConfigError when there is
    no challenger, or when ``expected`` is given and another version is the challenger now (the
    decision was made about that one)."""
    name = cfg.registry.model_name
    mv = challenger_version(client, cfg)
    if mv is None:
        raise ConfigError(
            f"{name} has no challenger (alias '{cfg.registry.challenger_alias}'): nothing to decide. "
            "A candidate becomes one when it passes the promotion gate with registry.shadow on."
        )
    if expected is not None and str(mv.version) != str(expected):
        raise ConfigError(
            f"{name}'s challenger is v{mv.version}, not v{expected} (it was replaced meanwhile); "
            "decide again on the new challenger"
        )
    prod = production_version(client, cfg)
    return mv, (str(prod.version) if prod is not None else None)


def promote_challenger(
    cfg: PipelineConfig,
    *,
    reason: str = "",
    by: str = "netsec promote --challenger",
    expected: str | None = None,
) -> ChallengerRecord:
    """Make the challenger Production (alias ``registry.alias`` and the stage) and clear the
    challenger alias. ``expected``: the challenger version the decision was made about (the
    monitoring task passes it; a challenger replaced since is not promoted in its stead).

    Raises ConfigError when there is no challenger (or another one), SourceUnavailable when the
    registry is down."""
    name = cfg.registry.model_name
    with mlflow_errors(cfg, f"promote the challenger of {name}"):
        client = mlflow_client(cfg)
        mv, before = _current(client, cfg, expected)
        version = str(mv.version)
        why = reason or f"promoted from shadow by {by}"
        for key, value in {
            SHADOW_OUTCOME_TAG: "promoted",
            SHADOW_REASON_TAG: why[:5000],
            DECIDED_BY_TAG: by,
            PROMOTION_TAG: "promoted",
            TAG_PREFIX + "previous_production_version": before or "",
        }.items():
            client.set_model_version_tag(name, version, key, value)
        promote(client, cfg, version)
        client.delete_registered_model_alias(name, cfg.registry.challenger_alias)
    log.info("%s: challenger v%s is Production (was v%s): %s", name, version, before, why)
    return ChallengerRecord(
        model_name=name,
        version=version,
        action="promoted",
        production_before=before,
        production_after=version,
        reason=why,
        decided_by=by,
    )


def retire_challenger(
    cfg: PipelineConfig,
    *,
    reason: str,
    by: str = "netsec reject --challenger",
    outcome: str = "rejected",
    expected: str | None = None,
) -> ChallengerRecord:
    """End the challenger's shadow without promoting it: tag it ``netsec.shadow_outcome`` =
    ``outcome`` (``rejected`` by hand, ``retired`` by monitoring) with ``reason``, then clear the
    alias. Production does not change.

    Raises ConfigError when there is no challenger (or another one), or ``reason`` is empty;
    SourceUnavailable when the registry is down."""
    name = cfg.registry.model_name
    if not reason.strip():
        raise ConfigError("a challenger is retired with a reason: say why (--reason TEXT)")
    with mlflow_errors(cfg, f"retire the challenger of {name}"):
        client = mlflow_client(cfg)
        mv, prod = _current(client, cfg, expected)
        version = str(mv.version)
        for key, value in {
            SHADOW_OUTCOME_TAG: outcome,
            SHADOW_REASON_TAG: reason[:5000],
            DECIDED_BY_TAG: by,
            PROMOTION_TAG: "retired",
        }.items():
            client.set_model_version_tag(name, version, key, value)
        client.delete_registered_model_alias(name, cfg.registry.challenger_alias)
    log.info("%s: challenger v%s %s: %s", name, version, outcome, reason)
    return ChallengerRecord(
        model_name=name,
        version=version,
        action=outcome,
        production_before=prod,
        production_after=prod,
        reason=reason,
        decided_by=by,
    )
