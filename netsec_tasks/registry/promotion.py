"""The promotion decision: does a registered version replace Production, and moving Production.

:func:`decide_version` compares a version with the current Production model on the same test
rows (leaving out rows Production was trained on) and returns a :class:`Decision`; the rule and
its reason in plain sentences are :func:`_decide`'s. :func:`apply_decision` records the decision
as tags on the model version and on the pipeline's MLflow run, *then* moves Production
(:func:`promote`), so a crash in between leaves a version tagged promoted that
:mod:`netsec_tasks.reconcile` finishes. Both outcomes (promoted or rejected) are recorded.

**Shadow** (``registry.shadow``). A version that passes the gate while a Production model exists
becomes the *challenger* instead (outcome ``challenger``; :func:`set_challenger` moves alias
``registry.challenger_alias`` to it, after the tags, as above). Serving scores it beside
Production without answering with it; :mod:`netsec_tasks.registry.challenger` ends its shadow
(promoted, rejected by hand, retired by monitoring). A challenger it replaces is tagged
``netsec.shadow_outcome=replaced`` with the reason. With no Production model there is nothing to
shadow: the version is promoted, and the reason says so.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

from netsec_tasks.config import PipelineConfig
from netsec_tasks.errors import RegistryError, first_line
from netsec_tasks.operating_point import DecisionPolicy, OperatingPoint, decision_policy, pct
from netsec_tasks.outages import is_unreachable
from netsec_tasks.registry.lookup import PRODUCTION_STAGE, production_version
from netsec_tasks.registry.scoring import (
    TestSplit,
    VersionScore,
    production_score,
    production_trained_hashes,
    score_version,
)
from netsec_tasks.split import rows_in
from netsec_tasks.tracking import TAG_PREFIX

log = logging.getLogger(__name__)

# promoted | rejected | abandoned | rolled_back: the version's decision
PROMOTION_TAG = TAG_PREFIX + "promotion"
# Both models' operating points on the rows the decision compared (JSON, OperatingPoint.to_dict()).
CANDIDATE_POINT_TAG = TAG_PREFIX + "promotion_operating_point"
PRODUCTION_POINT_TAG = TAG_PREFIX + "production_operating_point"
# Shadow: when a version became the challenger (ISO 8601, UTC; monitoring counts min_hours and
# the traffic from it), how its shadow ended (promoted | rejected | retired | replaced) and why.
CHALLENGER_SINCE_TAG = TAG_PREFIX + "challenger_since"
SHADOW_OUTCOME_TAG = TAG_PREFIX + "shadow_outcome"
SHADOW_REASON_TAG = TAG_PREFIX + "shadow_reason"


@dataclass(frozen=True)
class Decision:
    """A version's promotion decision, as recorded in its tags and its run's."""

    version: str
    promoted: bool
    reason: str
    new_score: float | None
    production_score: float | None
    previous: str | None  # Production before the decision
    rows_in_test: int | None = None  # test rows Production was trained on (None: no lineage)
    outcome: str = ""  # promoted | rejected | abandoned (default: from ``promoted``)
    # The previous Production's metrics on the compared rows ({}: not compared, or a retry).
    production_metrics: dict[str, float] = field(default_factory=dict)
    # Both models at their own operating points on the compared rows (OperatingPoint.to_dict();
    # {}: not scored), and per raw threat label {"rows", "candidate", "production"} recalls.
    operating_point: dict[str, Any] = field(default_factory=dict)
    production_operating_point: dict[str, Any] = field(default_factory=dict)
    label_recall: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Shadow: it passed the gate and becomes the challenger (promoted stays False: Production
    # does not move); replaced: the challenger it replaces, if any.
    challenger: bool = False
    replaced: str | None = None

    @property
    def label(self) -> str:
        if self.challenger:
            return "challenger"
        return self.outcome or ("promoted" if self.promoted else "rejected")

    def tags(self) -> dict[str, str]:
        return {
            PROMOTION_TAG: self.label,
            TAG_PREFIX + "promotion_reason": self.reason,
            TAG_PREFIX + "production_score": repr(self.production_score),
            TAG_PREFIX + "new_score": repr(self.new_score),
            TAG_PREFIX + "previous_production_version": self.previous or "",
            TAG_PREFIX + "production_rows_in_test": ""
            if self.rows_in_test is None
            else str(self.rows_in_test),
            TAG_PREFIX + "production_metrics": json.dumps(self.production_metrics, sort_keys=True),
            CANDIDATE_POINT_TAG: json.dumps(self.operating_point, sort_keys=True),
            PRODUCTION_POINT_TAG: json.dumps(self.production_operating_point, sort_keys=True),
            TAG_PREFIX + "label_recall": json.dumps(self.label_recall, sort_keys=True)[:5000],
        }


def _json_dict(text: str | None) -> dict[str, Any]:
    """A metrics tag back as a dict; {} when absent or not JSON (tags written before it existed)."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _rate(point: OperatingPoint) -> str:
    level = f"{point.confidence:.0%}"
    return f"FPR {pct(point.fpr)} ({level} CI {pct(point.fpr_low)}-{pct(point.fpr_high)})"


def _label_drops(
    cfg: PipelineConfig, cand: VersionScore, prod: VersionScore | None
) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """The per-label guard (TFX-style slices) for a multi-class raw label: (one phrase per threat
    label with at least ``registry.min_label_rows`` compared rows on which the candidate's recall
    is more than ``registry.max_label_recall_drop`` below Production's, both recalls per label).
    Nothing to guard with one threat label (a binary label: overall recall is the label's)."""
    reg = cfg.registry
    if prod is None or len(cand.label_recall) < 2:
        return [], {}
    table = {
        label: {
            "rows": c["rows"],
            "candidate": c["recall"],
            "production": prod.label_recall.get(label, {}).get("recall"),
        }
        for label, c in cand.label_recall.items()
    }
    drops = [
        f"'{label}' ({v['rows']} rows): recall {v['candidate']:.3f} against Production's "
        f"{v['production']:.3f}"
        for label, v in table.items()
        if v["production"] is not None
        and v["rows"] >= reg.min_label_rows
        and v["production"] - v["candidate"] > reg.max_label_recall_drop
    ]
    return drops, table


def _decide(
    cfg: PipelineConfig,
    policy: DecisionPolicy,
    metric: str,
    cand: VersionScore,
    prod_version: str | None,
    prod: VersionScore | None,
    label_drops: list[str],
) -> tuple[bool, str]:
    """(promote?, the reason in plain sentences). A rejection names every rule the new model
    failed; the settings are named by their config keys.

    The rules: the candidate's test FPR is not over the budget (objective ``recall_at_budget``:
    the lower end of its interval is not above ``decision.max_false_positive_rate``); its score
    clears the floor (``decision.min_recall``; ``registry.min_score`` with objective ``f1``); it beats Production's score by ``registry.promotion_margin``,
    each at its own operating point (a Production model whose own FPR is over the budget sets no
    bar); no threat label loses more than ``registry.max_label_recall_drop`` recall."""
    reg = cfg.registry
    name = "recall at its operating point" if metric == "recall_at_budget" else metric
    cand_text = f"the candidate's {name} {cand.score:.4f}"
    passed: list[str] = []
    failed: list[str] = []
    if policy.objective == "recall_at_budget":
        budget = f"the budget of {pct(policy.budget)} (decision.max_false_positive_rate)"
        if cand.point.over_budget(policy.budget):
            failed.append(f"its test {_rate(cand.point)} is over {budget}")
        else:
            passed.append(f"its test {_rate(cand.point)} is within {budget}")
    if policy.objective == "recall_at_budget":
        minimum, key = policy.min_recall, "decision.min_recall"
    else:
        minimum, key = reg.min_score, "registry.min_score"
    floor = f"the floor of {minimum:.4f} ({key})"
    if cand.score >= minimum:
        passed.append(f"{cand_text} clears {floor}")
    else:
        failed.append(f"{cand_text} is below {floor}")
    if prod_version is None:
        head = "There was no Production model"
    elif prod is None:
        head = (
            f"Production v{prod_version} could not be loaded or scored on this test split (see the task log)"
        )
    else:
        head = f"Compared with Production v{prod_version}" + (
            " (no recorded threshold: at the 0.5 rule)" if not prod.threshold.recorded else ""
        )
        if policy.objective == "recall_at_budget" and prod.point.over_budget(policy.budget):
            passed.append(
                f"Production's own test {_rate(prod.point)} is over the budget, so its recall "
                f"{prod.score:.4f} sets no bar"
            )
        else:
            # "Beats" is strict: a retrained model that only ties Production does not replace it
            # (a tie would churn versions and restart serving for no gain).
            bar = prod.score + reg.promotion_margin
            text = (
                f"{cand_text} {{}} Production v{prod_version}'s {prod.score:.4f} plus the promotion "
                f"margin {reg.promotion_margin:.4f} (registry.promotion_margin)"
            )
            (passed if cand.score > bar else failed).append(
                text.format("beats" if cand.score > bar else "does not beat")
            )
    if label_drops:
        failed.append(
            f"it loses more than {reg.max_label_recall_drop:.3f} recall (registry.max_label_recall_drop) "
            f"on threat label {'; '.join(label_drops)}"
        )
    if not failed:
        return True, f"{head}: " + "; ".join(passed) + "."
    tail = f" (it did pass: {'; '.join(passed)})" if passed else ""
    return False, f"{head}: not promoted because " + "; ".join(failed) + tail + "."


def promote(client, cfg: PipelineConfig, version: str) -> None:
    """Make ``version`` Production: alias first (what netsec reads), then the deprecated stage
    for stage-reading clients (archiving the version that held it)."""
    name = cfg.registry.model_name
    client.set_registered_model_alias(name, cfg.registry.alias, version)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stages are deprecated, and used here on purpose
        client.transition_model_version_stage(name, version, PRODUCTION_STAGE, archive_existing_versions=True)


def set_challenger(client, cfg: PipelineConfig, version: str, reason: str) -> str | None:
    """Make ``version`` the challenger (alias ``registry.challenger_alias``), tagging when (its
    ``netsec.challenger_since``) and the challenger it replaces (``netsec.shadow_outcome=replaced``
    with ``reason``'s context) before the alias moves. Returns the replaced version, or None."""
    from netsec_tasks.registry.lookup import challenger_version

    name = cfg.registry.model_name
    old = challenger_version(client, cfg)
    if old is not None and str(old.version) == version:
        return None  # a retry: already the challenger
    client.set_model_version_tag(name, version, CHALLENGER_SINCE_TAG, _now())
    replaced = None
    if old is not None:
        replaced = str(old.version)
        for key, value in {
            SHADOW_OUTCOME_TAG: "replaced",
            SHADOW_REASON_TAG: f"replaced by v{version}, which passed the promotion gate later: {reason}"[
                :5000
            ],
            PROMOTION_TAG: "retired",
        }.items():
            client.set_model_version_tag(name, replaced, key, value)
    client.set_registered_model_alias(name, cfg.registry.challenger_alias, version)
    return replaced


def _retire_outrun_challenger(client, cfg: PipelineConfig, version: str) -> None:
    """A version promoted straight to Production (``registry.shadow`` off, or no Production
    before) ends a challenger's shadow: it was being compared with a Production that is gone."""
    from netsec_tasks.registry.lookup import challenger_version

    old = challenger_version(client, cfg)
    if old is None or str(old.version) == version:
        return
    name = cfg.registry.model_name
    for key, value in {
        SHADOW_OUTCOME_TAG: "replaced",
        SHADOW_REASON_TAG: f"v{version} was promoted to Production directly (registry.shadow off), "
        "so the Production this challenger was compared with is gone",
        PROMOTION_TAG: "retired",
    }.items():
        client.set_model_version_tag(name, str(old.version), key, value)
    client.delete_registered_model_alias(name, cfg.registry.challenger_alias)


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _in_shadow(cfg: PipelineConfig, decision: Decision, client) -> Decision:
    """With ``registry.shadow`` and a Production model, a version that passed the gate becomes
    the challenger instead of Production; the reason says so and names the challenger it
    replaces."""
    from netsec_tasks.registry.lookup import challenger_version

    if not (cfg.registry.shadow and decision.promoted and decision.previous is not None):
        if cfg.registry.shadow and decision.promoted:
            return replace(
                decision,
                reason=decision.reason + " registry.shadow is on, but there is no Production model to "
                "run a challenger beside: it is Production at once.",
            )
        return decision
    old = challenger_version(client, cfg)
    replaces = f" It replaces challenger v{old.version}." if old is not None else ""
    return replace(
        decision,
        promoted=False,
        challenger=True,
        replaced=str(old.version) if old is not None else None,
        reason=decision.reason
        + f" registry.shadow is on: it becomes the challenger (alias '{cfg.registry.challenger_alias}'), "
        f"scored in shadow beside Production v{decision.previous}, which keeps answering; the "
        "netsec_monitoring DAG promotes or retires it on served traffic (shadow.min_hours, "
        f"shadow.min_rows), or netsec promote/reject --challenger decides by hand.{replaces}",
    )


def decide_version(
    client,
    cfg: PipelineConfig,
    mv,
    model,
    split: TestSplit,
    metric: str,
    scored: VersionScore | None = None,
    scores=None,
) -> Decision:
    """Compare version ``mv`` (the loaded ``model``; ``scored``: its :func:`score_version` on the
    test ``split`` and ``scores`` its P(threat) there, when already computed) with the current
    Production model on the same rows, leaving out test rows Production was trained on, each at
    its own operating point. A version that already is Production keeps its earlier decision (a
    retry finishes it).

    ``metric``: what training selected by; with objective ``recall_at_budget`` both models are
    compared by their recall at their operating points whatever it says."""
    policy = decision_policy(cfg, split.schema)
    metric = "recall_at_budget" if policy.objective == "recall_at_budget" else metric
    if scores is None:
        scores = split.scores(model)
    if scored is None:
        scored = score_version(model, split, policy, metric, scores=scores)
    version = str(mv.version)
    tags = mv.tags or {}
    prod = production_version(client, cfg)
    if tags.get(PROMOTION_TAG) == "challenger":
        # An earlier attempt made it the challenger; finish the alias move in case it crashed.
        return Decision(
            version,
            False,
            tags.get(TAG_PREFIX + "promotion_reason") or "already the challenger",
            scored.score,
            None,
            str(prod.version) if prod is not None else None,
            operating_point=_json_dict(tags.get(CANDIDATE_POINT_TAG)) or scored.point.to_dict(),
            production_operating_point=_json_dict(tags.get(PRODUCTION_POINT_TAG)),
            challenger=True,
        )
    if prod is not None and str(prod.version) == version:
        # An earlier attempt already promoted it; finish the stage move in case it crashed.
        prev_score = tags.get(TAG_PREFIX + "production_score")
        seen = tags.get(TAG_PREFIX + "production_rows_in_test")
        return Decision(
            version,
            True,
            tags.get(TAG_PREFIX + "promotion_reason") or "already Production",
            scored.score,
            float(prev_score) if prev_score not in (None, "", "None") else None,
            tags.get(TAG_PREFIX + "previous_production_version") or None,
            int(seen) if seen not in (None, "", "None") else None,
            production_metrics=_json_dict(tags.get(TAG_PREFIX + "production_metrics")),
            operating_point=_json_dict(tags.get(CANDIDATE_POINT_TAG)) or scored.point.to_dict(),
            production_operating_point=_json_dict(tags.get(PRODUCTION_POINT_TAG)),
            label_recall=_json_dict(tags.get(TAG_PREFIX + "label_recall")),
        )
    previous = str(prod.version) if prod is not None else None
    rows_in_test = None
    prod_scored: VersionScore | None = None
    note = ""
    if prod is not None:
        trained = production_trained_hashes(cfg, str(prod.version), dict(prod.tags or {}))
        keep = None
        compared = total = len(scores)
        if trained is not None:
            assert split.rows is not None  # set by split.scores
            seen_mask = rows_in(split.rows.hashes, trained)
            del trained
            rows_in_test = int(seen_mask.sum())
            if rows_in_test:
                keep = ~seen_mask
                compared = int(keep.sum())
                note = (
                    f" Both were compared on the {compared} test rows Production "
                    f"v{previous} never saw (it was trained on {rows_in_test} of them)."
                )
                log.warning(
                    "Production v%s was trained on %d of the %d test rows (did "
                    "split.seed or split.test_size change?): both models are "
                    "compared on the other %d",
                    previous,
                    rows_in_test,
                    total,
                    compared,
                )
                if compared:
                    scored = score_version(model, split, policy, metric, keep=keep, scores=scores)
        if compared:
            prod_scored = production_score(cfg, prod, split, policy, metric, keep=keep)
    drops, labels = _label_drops(cfg, scored, prod_scored)
    promoted, reason = _decide(cfg, policy, metric, scored, previous, prod_scored, drops)
    decision = Decision(
        version,
        promoted,
        reason + note,
        scored.score,
        prod_scored.score if prod_scored is not None else None,
        previous,
        rows_in_test,
        production_metrics=prod_scored.metrics if prod_scored is not None else {},
        operating_point=scored.point.to_dict(),
        production_operating_point=prod_scored.point.to_dict() if prod_scored is not None else {},
        label_recall=labels,
    )
    return _in_shadow(cfg, decision, client)


def _record_decision(
    client, cfg: PipelineConfig, run_id: str | None, version: str, tags: dict[str, str]
) -> None:
    from mlflow.entities import RunTag

    for key, value in tags.items():
        client.set_model_version_tag(cfg.registry.model_name, version, key, value)
    if run_id:
        client.log_batch(
            run_id,
            tags=[RunTag(k, v) for k, v in tags.items()] + [RunTag(TAG_PREFIX + "model_version", version)],
        )


def apply_decision(
    client,
    cfg: PipelineConfig,
    run_id: str | None,
    decision: Decision,
    extra_tags: dict[str, str] | None = None,
) -> None:
    """Record the decision (version and run tags), then promote when it says so.

    Tags go first: a crash between the two leaves a version tagged promoted that is not
    Production, which :mod:`netsec_tasks.reconcile` finishes. Raises RegistryError when MLflow
    refuses, SourceUnavailable (through the caller's ``mlflow_errors``) when it is down."""
    name = cfg.registry.model_name
    try:
        _record_decision(client, cfg, run_id, decision.version, {**decision.tags(), **(extra_tags or {})})
        if decision.promoted:
            promote(client, cfg, decision.version)
            _retire_outrun_challenger(client, cfg, decision.version)
        elif decision.challenger:
            set_challenger(client, cfg, decision.version, decision.reason)
    except Exception as exc:
        if is_unreachable(exc):
            raise
        raise RegistryError(
            f"{name} v{decision.version} is registered but recording the promotion "
            f"decision failed: {first_line(exc)}; retry the task"
        ) from exc
