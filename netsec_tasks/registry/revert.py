"""Rollback (``netsec rollback``): move Production back to an earlier version.

(The module is not called ``rollback`` so that ``netsec_tasks.registry.rollback`` is the function.)
"""

from __future__ import annotations

import logging

from netsec_tasks.config import PipelineConfig
from netsec_tasks.errors import ConfigError
from netsec_tasks.outages import mlflow_errors
from netsec_tasks.records import RollbackRecord
from netsec_tasks.registry.lookup import all_versions, production_version
from netsec_tasks.registry.promotion import PROMOTION_TAG, promote
from netsec_tasks.tracking import TAG_PREFIX, mlflow_client

log = logging.getLogger(__name__)


def rollback(cfg: PipelineConfig, *, to_version: str | None = None, reason: str = "") -> RollbackRecord:
    """Move Production (``registry.alias``, and the deprecated stage) back to ``to_version``,
    by default the version the current one replaced (its tag ``netsec.previous_production_version``).

    Every promoted version newer than the target is tagged ``netsec.promotion=rolled_back``
    (with ``netsec.rolled_back_to`` and ``netsec.rollback_reason``) *before* the alias moves, so
    reconcile, which finishes promotions that did not move the alias, never promotes one of them
    again. Serving follows the alias at its next registry poll; the next run compares its
    candidate with the restored version.

    Raises ConfigError when there is no Production model, no recorded previous version and no
    ``to_version``, or the target does not exist or already is Production; SourceUnavailable when
    the registry is unreachable."""
    from mlflow.exceptions import MlflowException

    name = cfg.registry.model_name
    with mlflow_errors(cfg, f"roll back {name}"):
        client = mlflow_client(cfg)
        prod = production_version(client, cfg)
        if prod is None:
            raise ConfigError(
                f"{name} has no Production model (alias '{cfg.registry.alias}'): nothing to roll back"
            )
        current = str(prod.version)
        target = to_version or (prod.tags or {}).get(TAG_PREFIX + "previous_production_version")
        if not target or target == "None":
            raise ConfigError(
                f"{name} v{current} records no previous Production version: "
                "name the version to restore (netsec rollback --to VERSION)"
            )
        target = str(target)
        if target == current:
            raise ConfigError(f"{name} v{target} already is Production")
        try:
            client.get_model_version(name, target)
        except MlflowException as exc:
            raise ConfigError(
                f"{name} has no version {target!r} to roll back to: {str(exc).splitlines()[0]}"
            ) from None
        why = reason or f"rolled back from v{current} to v{target} by an operator"
        undone = [
            str(mv.version)
            for mv in all_versions(client, name)
            if int(mv.version) > int(target) and (mv.tags or {}).get(PROMOTION_TAG) == "promoted"
        ]
        for version in sorted(set(undone) | {current}, key=int):
            client.set_model_version_tag(name, version, PROMOTION_TAG, "rolled_back")
            client.set_model_version_tag(name, version, TAG_PREFIX + "rolled_back_to", target)
            client.set_model_version_tag(name, version, TAG_PREFIX + "rollback_reason", why)
        promote(client, cfg, target)
    log.info("%s: Production rolled back from v%s to v%s (%s)", name, current, target, why)
    return RollbackRecord(
        model_name=name,
        from_version=current,
        to_version=target,
        rolled_back=sorted(set(undone) | {current}, key=int),
        reason=why,
    )
