"""Deciding the challenger: the ``decide_challenger`` task of ``netsec_monitoring`` (issue 25).

With ``registry.shadow`` a candidate that passes the promotion gate becomes the *challenger*
(:mod:`netsec_tasks.registry.challenger`); serving scores every logged row with it in shadow
and logs its decision beside Production's (:mod:`serving.shadow`). Each run of this step reads
the rows logged since the last run (its own watermark, per challenger version, from the moment it
became the challenger), adds them to running counts, and compares the two models on the traffic
they both scored:

- **Alert rate** of each, with its Clopper-Pearson interval (``shadow.confidence``), against the
  *ceiling* the budget allows at the expected threat rate: ``r + b (1 - r)`` with ``b`` the
  false-positive budget and ``r`` the expected threat rate (:func:`alert_ceiling`: the alert
  rate of a model that flags every threat and ``b`` of the benign rows, the formula of
  :attr:`netsec_tasks.operating_point.OperatingPoint.expected_alert_rate`); and against the
  rate each model's own test operating point expects
  (:func:`netsec_tasks.monitoring.traffic.expected_alert_rate`). A model is over the budget when
  the interval's *lower* end is above the ceiling (the rule of
  :meth:`~netsec_tasks.operating_point.OperatingPoint.over_budget`), or when analysts' benign
  verdicts show its live FPR over the budget (:func:`~netsec_tasks.monitoring.live.fpr_over_budget`).
- **Agreement**: the share of rows both decide alike, and the latest rows where they disagree,
  listed in the report (prediction id, both decisions and probabilities, the features) for
  analysts to label: those verdicts are what can tell the two apart.
- **Verdicts**: live precision, recall, F1 and FPR of each on the labelled rows both scored
  (:func:`~netsec_tasks.monitoring.live.live_metrics`), and a paired test (exact McNemar,
  one-sided): the challenger is *worse* when, among the labelled rows where exactly one of them
  is right, Production is right significantly more often (p < 1 - ``shadow.confidence``).

After ``shadow.min_hours`` since it became the challenger *and* ``shadow.min_rows`` rows scored,
it is promoted (:func:`~netsec_tasks.registry.challenger.promote_challenger`) only if its alert
rate is within the budget and it is not worse on verdicts; otherwise it is retired with the
reason (:func:`~netsec_tasks.registry.challenger.retire_challenger`). Before that the step only
reports. No verdicts at all means "not shown worse": the alert rate decides; the report says how
many verdicts the comparison rests on.

State: ``<storage>/monitoring/<model>/shadow/v<version>.json`` (watermark, counts, the listed
disagreements), written after the decision is applied, so a failed run counts the same rows
again. Reports: ``<storage>/monitoring/<model>/runs/<run>/challenger_report.{yaml,html}`` and
``<storage>/monitoring/<model>/challenger_latest.html``. The figures also go on the challenger's
version as tags ``netsec.shadow.*`` (the MLflow UI shows them).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from netsec_tasks.config import PipelineConfig
from netsec_tasks.monitoring.labelled import labelled_predictions
from netsec_tasks.monitoring.live import fpr_over_budget, live_metrics
from netsec_tasks.monitoring.state import model_dir, run_dir
from netsec_tasks.operating_point import DecisionPolicy, decision_policy, pct, rate_interval
from netsec_tasks.records import ShadowRecord
from netsec_tasks.state import read_json_model
from netsec_tasks.tracking import TAG_PREFIX

log = logging.getLogger(__name__)

SHADOW_FIGURE_PREFIX = TAG_PREFIX + "shadow."


class ShadowState(BaseModel):
    """Running counts of one challenger version over the rows both models scored."""

    model_config = ConfigDict(extra="ignore")

    model_name: str
    challenger_version: str
    since: dt.datetime
    log: str
    watermark: dict[str, Any] = {}
    rows: int = 0  # rows the challenger scored (both decisions logged)
    unscored: int = 0  # rows logged since, without the challenger's decision
    production_alerts: int = 0
    challenger_alerts: int = 0
    both_alerts: int = 0
    production_versions: list[str] = []  # Production versions the rows were answered by
    first_at: dt.datetime | None = None
    last_at: dt.datetime | None = None
    disagreements: list[dict[str, Any]] = []  # the latest, newest last

    @property
    def disagreed(self) -> int:
        return self.production_alerts + self.challenger_alerts - 2 * self.both_alerts


def state_uri(storage, model_name: str, version: str) -> str:
    return model_dir(storage, model_name, "shadow", f"v{version}.json")


def read_shadow_state(storage, model_name: str, version: str) -> ShadowState | None:
    return read_json_model(
        storage,
        state_uri(storage, model_name, version),
        ShadowState,
        what="shadow state",
        remedy="delete it to count the challenger's rows again",
    )


def alert_ceiling(policy: DecisionPolicy) -> float:
    """The highest alert rate a model within the budget raises at the expected threat rate: it
    flags every threat (recall 1) and ``budget`` of the benign rows,
    ``rate + budget x (1 - rate)``."""
    r = policy.expected_threat_rate
    return r + policy.budget * (1 - r)


def count_rows(state: ShadowState, docs: list[dict[str, Any]], *, keep: int) -> ShadowState:
    """``state`` with the log documents ``docs`` added: the rows logged at or after its ``since``
    that the challenger ``state.challenger_version`` scored (the rest counted as unscored), and
    the latest ``keep`` rows where the two decided differently."""
    from netsec_tasks.prediction_log import prediction_ids

    s = state.model_copy(deep=True)
    version = s.challenger_version
    for doc in docs:
        t = _time(doc.get("time"))
        if t is None or t < s.since:
            continue
        n = int(doc["n_rows"])
        if str(doc.get("challenger_version")) != version:
            s.unscored += n
            continue
        prod = np.asarray(doc["is_threat"], dtype=bool)
        chal = np.asarray(doc["challenger_is_threat"], dtype=bool)
        s.rows += n
        s.production_alerts += int(prod.sum())
        s.challenger_alerts += int(chal.sum())
        s.both_alerts += int((prod & chal).sum())
        if str(doc.get("model_version")) not in s.production_versions:
            s.production_versions.append(str(doc.get("model_version")))
        s.first_at = min(s.first_at or t, t)
        s.last_at = max(s.last_at or t, t)
        differ = np.flatnonzero(prod != chal)
        if keep and differ.size and doc.get("request_id"):
            ids = prediction_ids(doc["request_id"], n, int(doc.get("row_offset") or 0))
            features = doc.get("features") or {}
            for k in differ[-keep:].tolist():
                s.disagreements.append(
                    {
                        "prediction_id": ids[k],
                        "time": t.isoformat(timespec="seconds"),
                        "production": int(prod[k]),
                        "challenger": int(chal[k]),
                        "production_probability": doc["threat_probability"][k],
                        "challenger_probability": doc["challenger_threat_probability"][k],
                        "features": {name: values[k] for name, values in features.items()},
                    }
                )
            s.disagreements = s.disagreements[-keep:]
    return s


def _time(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    try:
        return dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None


def rate_figures(
    alerts: int, rows: int, *, confidence: float, ceiling: float, expected: float | None
) -> dict[str, Any]:
    """One model's alert rate on the shadow rows: the rate, its interval, the ceiling, the rate
    its operating point expects, and ``over_budget`` (the interval's lower end above the
    ceiling)."""
    low, high = rate_interval(alerts, rows, confidence)
    rate = alerts / rows if rows else None
    return {
        "alerts": alerts,
        "rows": rows,
        "alert_rate": None if rate is None else round(rate, 6),
        "alert_rate_ci": None if low is None or high is None else [round(low, 6), round(high, 6)],
        "ceiling": round(ceiling, 6),
        "expected_alert_rate": None if expected is None else round(expected, 6),
        "over_budget": bool(low is not None and low > ceiling),
    }


def verdict_comparison(labelled, *, version: str, confidence: float, seed: int = 0) -> dict[str, Any]:
    """Both models on the labelled rows the challenger ``version`` scored: live metrics of each,
    and the paired exact test (McNemar, one-sided) of "the challenger is worse"."""
    from scipy.stats import binomtest

    both = labelled[labelled["challenger_version"].astype(str) == str(version)] if len(labelled) else labelled
    y = both["verdict"].astype(bool).to_numpy() if len(both) else np.zeros(0, dtype=bool)
    prod = both["predicted"].astype(bool).to_numpy() if len(both) else np.zeros(0, dtype=bool)
    chal = (
        both["challenger_predicted"].astype(int).astype(bool).to_numpy()
        if len(both)
        else np.zeros(0, dtype=bool)
    )
    production_only = int(((prod == y) & (chal != y)).sum())
    challenger_only = int(((chal == y) & (prod != y)).sum())
    discordant = production_only + challenger_only
    p_value = (
        float(binomtest(production_only, discordant, 0.5, alternative="greater").pvalue)
        if discordant
        else 1.0
    )
    return {
        "labelled": int(len(y)),
        "production": live_metrics(y, prod, confidence=confidence, seed=seed),
        "challenger": live_metrics(y, chal, confidence=confidence, seed=seed),
        "production_only_right": production_only,
        "challenger_only_right": challenger_only,
        "p_value": round(p_value, 6),
        "worse": bool(p_value < 1 - confidence),
        "confidence": confidence,
    }


def decide_shadow(
    *,
    hours: float,
    rows: int,
    challenger_rate: dict[str, Any],
    production_rate: dict[str, Any],
    verdicts: dict[str, Any],
    fpr_alarm: tuple[bool, str],
    cfg: PipelineConfig,
    policy: DecisionPolicy,
) -> tuple[str, str]:
    """(``wait`` | ``promote`` | ``retire``, the reason in plain sentences, naming every rule and
    the config keys behind it)."""
    sh = cfg.shadow
    level = f"{sh.confidence:.0%}"
    if hours < sh.min_hours or rows < sh.min_rows:
        return "wait", (
            f"in shadow for {hours:.1f} h on {rows:,} rows; decided after shadow.min_hours="
            f"{sh.min_hours:g} and shadow.min_rows={sh.min_rows:,}"
        )
    ceiling = f"{pct(challenger_rate['ceiling'])}, the most a model within the budget of {pct(policy.budget)} (decision.max_false_positive_rate) raises at the expected threat rate {pct(policy.expected_threat_rate)} (decision.expected_threat_rate)"
    ci = challenger_rate["alert_rate_ci"]
    rate_text = (
        f"its alert rate {pct(challenger_rate['alert_rate'])} ({level} CI {pct(ci[0])}-{pct(ci[1])}) "
        f"on {rows:,} rows"
    )
    failed, passed = [], []
    if challenger_rate["over_budget"]:
        note = (
            f" (Production's is {pct(production_rate['alert_rate'])}, "
            f"{'over it too: is decision.expected_threat_rate right for this traffic?' if production_rate['over_budget'] else 'within it'})"
        )
        failed.append(f"{rate_text} is over {ceiling}{note}")
    else:
        passed.append(f"{rate_text} is within {ceiling}")
    alarm, fpr_text = fpr_alarm
    (failed if alarm else passed).append(f"the challenger's {fpr_text}")
    v = verdicts
    if v["labelled"] == 0:
        passed.append("no verdicts on the rows both scored yet, so it is not shown worse")
    else:
        paired = (
            f"on {v['labelled']} labelled rows Production alone was right on {v['production_only_right']}, "
            f"the challenger alone on {v['challenger_only_right']} (one-sided exact McNemar p = "
            f"{v['p_value']:.3g}, shadow.confidence {level})"
        )
        (failed if v["worse"] else passed).append(
            f"it is {'worse' if v['worse'] else 'not worse'} on verdicts: {paired}"
        )
    if failed:
        tail = f" (it did pass: {'; '.join(passed)})" if passed else ""
        return "retire", "retired because " + "; ".join(failed) + tail + "."
    return "promote", "promoted because " + "; ".join(passed) + "."


def decide_challenger(
    cfg: PipelineConfig,
    run_id: str,
    *,
    reader,
    store,
    now: dt.datetime | None = None,
    apply: bool = True,
) -> ShadowRecord:
    """One ``decide_challenger`` run (see the module docstring). ``apply=False`` reports without
    moving any alias (``netsec monitor --dry-run``). Returns a record with ``action`` ``none``
    (no challenger), ``wait``, ``promoted`` or ``retired``. Raises SourceUnavailable when the
    registry, storage or the log cannot be reached."""
    from netsec_tasks.monitoring.traffic import expected_alert_rate
    from netsec_tasks.outages import mlflow_errors
    from netsec_tasks.registry import (
        CHALLENGER_SINCE_TAG,
        challenger_version,
        production_version,
        promote_challenger,
        retire_challenger,
    )
    from netsec_tasks.storage import storage_for
    from netsec_tasks.tracking import mlflow_client

    now = now or dt.datetime.now(dt.UTC)
    model_name, sh = cfg.registry.model_name, cfg.shadow
    for what, part in (("prediction log", reader), ("verdict store", store)):
        if getattr(part, "model_name", None) != model_name:
            raise ValueError(
                f"the {what} {part.describe()} belongs to {getattr(part, 'model_name', None)!r}, "
                f"not to {model_name!r} (registry.model_name)"
            )
    with mlflow_errors(cfg, f"look up the challenger of {model_name}"):
        client = mlflow_client(cfg)
        chal = challenger_version(client, cfg)
        prod = production_version(client, cfg)
    if chal is None:
        return ShadowRecord(
            run_id=run_id,
            model_name=model_name,
            production_version=str(prod.version) if prod is not None else None,
            action="none",
            reason=f"no challenger (alias '{cfg.registry.challenger_alias}'): nothing to decide",
        )
    version = str(chal.version)
    tags = dict(chal.tags or {})
    since = _time(tags.get(CHALLENGER_SINCE_TAG)) or _time(
        dt.datetime.fromtimestamp((chal.creation_timestamp or 0) / 1000, tz=dt.UTC)
    )
    assert since is not None
    storage = storage_for(cfg)
    state = read_shadow_state(storage, model_name, version) or ShadowState(
        model_name=model_name,
        challenger_version=version,
        since=since,
        log=reader.describe(),
        watermark=reader.watermark_at(since),
    )
    docs, watermark = reader.read_since(state.watermark, cfg.monitoring.max_documents)
    state = count_rows(state, docs, keep=sh.max_listed_disagreements).model_copy(
        update={"watermark": watermark}
    )

    policy = decision_policy(cfg)
    ceiling = alert_ceiling(policy)
    chal_rate = rate_figures(
        state.challenger_alerts,
        state.rows,
        confidence=sh.confidence,
        ceiling=ceiling,
        expected=expected_alert_rate(tags),
    )
    prod_rate = rate_figures(
        state.production_alerts,
        state.rows,
        confidence=sh.confidence,
        ceiling=ceiling,
        expected=expected_alert_rate(dict(prod.tags or {})) if prod is not None else None,
    )
    labelled = labelled_predictions(store.current(), reader, since=since, challenger=True)
    verdicts = verdict_comparison(
        labelled, version=version, confidence=sh.confidence, seed=cfg.monitoring.seed
    )
    fpr_alarm = fpr_over_budget(
        verdicts["challenger"], budget=policy.budget, min_labels=cfg.monitoring.min_labels
    )
    hours = max(0.0, (now - since).total_seconds() / 3600)
    action, reason = decide_shadow(
        hours=hours,
        rows=state.rows,
        challenger_rate=chal_rate,
        production_rate=prod_rate,
        verdicts=verdicts,
        fpr_alarm=fpr_alarm,
        cfg=cfg,
        policy=policy,
    )
    agreement = 1 - state.disagreed / state.rows if state.rows else None
    listed = _unlabelled(state.disagreements, labelled)
    record = ShadowRecord(
        run_id=run_id,
        model_name=model_name,
        production_version=str(prod.version) if prod is not None else None,
        challenger_version=version,
        since=since,
        hours=round(hours, 3),
        rows=state.rows,
        unscored_rows=state.unscored,
        production=prod_rate,
        challenger=chal_rate,
        agreement=None if agreement is None else round(agreement, 6),
        disagreements=state.disagreed,
        listed_disagreements=listed,
        verdicts=verdicts,
        live_fpr=fpr_alarm[1],
        action=action,
        reason=reason,
        applied=False,
    )
    if apply and action in ("promote", "retire"):
        by = f"netsec_monitoring run {run_id} (decide_challenger)"
        if action == "promote":
            promote_challenger(cfg, reason=reason, by=by, expected=version)
        else:
            retire_challenger(cfg, reason=reason, by=by, outcome="retired", expected=version)
        record = record.model_copy(
            update={"action": "promoted" if action == "promote" else "retired", "applied": True}
        )
    record = _write_reports(storage, record)
    _tag_figures(client, cfg, record)
    if apply:  # last: a run that failed before counts the same rows again
        storage.write_text(state_uri(storage, model_name, version), state.model_dump_json(indent=2))
    log.info("challenger %s v%s: %s: %s", model_name, version, record.action, reason)
    return record


def _unlabelled(disagreements: list[dict[str, Any]], labelled) -> list[dict[str, Any]]:
    """The listed disagreements analysts have not judged yet, newest first."""
    judged = set(labelled["prediction_id"]) if len(labelled) else set()
    return [d for d in reversed(disagreements) if d["prediction_id"] not in judged]


def _tag_figures(client, cfg: PipelineConfig, record: ShadowRecord) -> None:
    """The shadow figures as tags of the challenger's version (``netsec.shadow.*``)."""
    assert record.challenger_version is not None
    figures = {
        "rows": record.rows,
        "hours": record.hours,
        "alert_rate": record.challenger.get("alert_rate"),
        "production_alert_rate": record.production.get("alert_rate"),
        "alert_ceiling": record.challenger.get("ceiling"),
        "agreement": record.agreement,
        "labelled": record.verdicts.get("labelled"),
        "decision": record.action,
        "run_id": record.run_id,
        "report": record.html_uri,
    }
    try:
        for key, value in figures.items():
            client.set_model_version_tag(
                cfg.registry.model_name,
                record.challenger_version,
                SHADOW_FIGURE_PREFIX + key,
                "" if value is None else str(value),
            )
    except Exception as exc:  # figures are informative: the decision does not wait on them
        log.warning("could not tag the challenger's figures: %s", exc)


def _write_reports(storage, record: ShadowRecord) -> ShadowRecord:
    from netsec_tasks.monitoring.report import render_challenger_html, render_yaml

    base = run_dir(storage, record.model_name, record.run_id)
    record = record.model_copy(
        update={"report_uri": f"{base}/challenger_report.yaml", "html_uri": f"{base}/challenger_report.html"}
    )
    doc = record.model_dump(mode="json")
    page = render_challenger_html(doc)
    storage.write_text(f"{base}/challenger_report.yaml", render_yaml(doc))
    storage.write_text(f"{base}/challenger_report.html", page)
    storage.write_text(model_dir(storage, record.model_name, "challenger_latest.html"), page)
    return record
