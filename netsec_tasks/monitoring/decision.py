"""Whether to request a retraining (:func:`decide`), and one of its pieces of evidence: a surge of
contract violations in the served rows (:func:`contract_violations`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from netsec_tasks.config import PipelineConfig
from netsec_tasks.monitoring.state import LastTrigger


def decide(
    *,
    drift_detected: bool,
    drift_reason: str,
    f1_alarm: bool,
    f1_reason: str,
    production_version: str | None,
    last_trigger: LastTrigger | None,
    now: dt.datetime,
    cfg: PipelineConfig,
    contract_surge: str | None = None,
    fpr_alarm: bool = False,
    fpr_reason: str = "",
) -> tuple[bool, str]:
    """(request a retraining?, why). Evidence: traffic drift (``monitoring.retrain_on_drift``),
    live F1 confidently below the floor, or a live FPR confidently over the false-positive
    budget (the lower end of its interval above it), and a surge of contract violations
    (``contract_surge``: what it is) only with ``monitoring.retrain_on_contract_violations``;
    the reason always says what was decided about a surge. A request for the same Production
    version within ``monitoring.cooldown_hours`` is not repeated."""
    m = cfg.monitoring
    evidence, notes = [], []
    if contract_surge:
        if m.retrain_on_contract_violations:
            evidence.append(f"contract violations: {contract_surge}")
        else:
            notes.append(
                f"contract violations: {contract_surge}; not a reason to retrain "
                "(monitoring.retrain_on_contract_violations: false): a model retrained on the "
                "rows that still pass cannot fix an upstream change; fix the sender or the schema"
            )
    if drift_detected and m.retrain_on_drift:
        evidence.append(f"traffic {drift_reason}")
    if f1_alarm:
        evidence.append(f1_reason)
    if fpr_alarm:
        evidence.append(fpr_reason)
    if not evidence:
        found = "; ".join(x for x in (drift_reason, f1_reason, fpr_reason) if x)
        return False, "; ".join(notes + [f"no evidence for retraining: {found}"])
    why = "; ".join(notes + evidence)
    if production_version is None:
        return False, f"{why}; but there is no Production model to replace"
    if (
        last_trigger is not None
        and last_trigger.model_version == production_version
        and now - last_trigger.at < dt.timedelta(hours=m.cooldown_hours)
    ):
        return False, (
            f"{why}; not requested again: a retraining was requested for "
            f"v{production_version} at {last_trigger.at.isoformat(timespec='minutes')} "
            f"(cooldown {m.cooldown_hours:g} h)"
        )
    return True, why


def contract_violations(excluded: dict[str, Any], cfg: PipelineConfig) -> dict[str, Any]:
    """The served rows that break the input contract, as a finding: checked, excluded, their
    share and whether it is a surge (over ``validation.max_invalid_share``, with at least
    ``monitoring.min_rows`` rows checked, so a handful of rows never raises it), with a reason."""
    from netsec_tasks.drift.step import excluded_verdict

    n, k = int(excluded.get("rows_checked") or 0), int(excluded.get("rows_excluded") or 0)
    share = round(k / n, 6) if n else None
    limit = cfg.validation.max_invalid_share
    surge = bool(n >= cfg.monitoring.min_rows and share is not None and share > limit)
    reason = (
        excluded_verdict({"served": excluded}, limit)
        if surge
        else f"{k:,} of {n:,} new rows break the input contract (at most {limit:.0%} expected)"
    )
    return {
        "rows_checked": n,
        "rows_excluded": k,
        "share": share,
        "max_share": limit,
        "surge": surge,
        "reason": reason,
    }
