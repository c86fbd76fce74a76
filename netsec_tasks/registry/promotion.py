"""The promotion decision: does a registered version replace Production, and moving Production.

:func:`decide_version` compares a version with the current Production model on the same test
rows (leaving out rows Production was trained on) and returns a :class:`Decision`; the rule and
its reason in plain sentences are :func:`_decide`'s. :func:`apply_decision` records the decision
as tags on the model version and on the pipeline's MLflow run, *then* moves Production
(:func:`promote`), so a crash in between leaves a version tagged promoted that
:mod:`netsec_tasks.reconcile` finishes. Both outcomes (promoted or rejected) are recorded.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field

from netsec_tasks.config import PipelineConfig
from netsec_tasks.dataset_schema import DatasetSchema
from netsec_tasks.errors import RegistryError, first_line
from netsec_tasks.outages import is_unreachable
from netsec_tasks.registry.lookup import PRODUCTION_STAGE, production_version
from netsec_tasks.registry.scoring import production_rows_in, production_score, score_model
from netsec_tasks.tracking import TAG_PREFIX

log = logging.getLogger(__name__)

# promoted | rejected | abandoned | rolled_back: the version's decision
PROMOTION_TAG = TAG_PREFIX + "promotion"


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

    @property
    def label(self) -> str:
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
        }


def _json_dict(text: str | None) -> dict[str, float]:
    """A metrics tag back as a dict; {} when absent or not JSON (tags written before it existed)."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _decide(
    cfg: PipelineConfig, metric: str, new_score: float, prod_version: str | None, prod_score: float | None
) -> tuple[bool, str]:
    """(promote?, the reason in plain sentences). A rejection names every rule the new model
    failed; the settings are named by their config keys."""
    reg = cfg.registry
    cand = f"The candidate's {metric} {new_score:.4f}"
    floor_ok = new_score >= reg.min_score
    floor = f"the floor of {reg.min_score:.4f} (registry.min_score)"
    clears = f"clears {floor}" if floor_ok else f"is below {floor}"
    if prod_version is None:
        if floor_ok:
            return True, f"There was no Production model, and {cand[0].lower() + cand[1:]} {clears}."
        return False, f"There is no Production model, but {cand[0].lower() + cand[1:]} {clears}."
    if prod_score is None:
        head = (
            f"Production v{prod_version} could not be loaded or scored on this test split (see the task log)"
        )
        joint = "and" if floor_ok else "but"
        return floor_ok, f"{head}, {joint} {cand[0].lower() + cand[1:]} {clears}."
    # "Beats" is strict: a retrained model that only ties Production does not replace it
    # (a tie would churn versions and restart serving for no gain).
    bar = prod_score + reg.promotion_margin
    beats = new_score > bar
    compared = (
        f"{cand} {'beats' if beats else 'does not beat'} Production v{prod_version}'s "
        f"{prod_score:.4f} plus the promotion margin {reg.promotion_margin:.4f} "
        "(registry.promotion_margin)"
    )
    if beats and floor_ok:
        return True, f"{compared}, and {clears}."
    if beats:
        return False, f"{compared}, but {clears}."
    return False, f"{compared}" + ("." if floor_ok else f", and {clears}.")


def promote(client, cfg: PipelineConfig, version: str) -> None:
    """Make ``version`` Production: alias first (what netsec reads), then the deprecated stage
    for stage-reading clients (archiving the version that held it)."""
    name = cfg.registry.model_name
    client.set_registered_model_alias(name, cfg.registry.alias, version)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stages are deprecated, and used here on purpose
        client.transition_model_version_stage(name, version, PRODUCTION_STAGE, archive_existing_versions=True)


def decide_version(
    client,
    cfg: PipelineConfig,
    mv,
    model,
    new_score: float,
    frame,
    schema: DatasetSchema,
    metric: str,
    source: str,
) -> Decision:
    """Compare version ``mv`` (the loaded ``model``, scored ``new_score`` on ``frame``) with the
    current Production model on the same rows, leaving out test rows Production was trained on.
    A version that already is Production keeps its earlier decision (a retry finishes it)."""
    version = str(mv.version)
    tags = mv.tags or {}
    prod = production_version(client, cfg)
    if prod is not None and str(prod.version) == version:
        # An earlier attempt already promoted it; finish the stage move in case it crashed.
        prev_score = tags.get(TAG_PREFIX + "production_score")
        seen = tags.get(TAG_PREFIX + "production_rows_in_test")
        return Decision(
            version,
            True,
            tags.get(TAG_PREFIX + "promotion_reason") or "already Production",
            new_score,
            float(prev_score) if prev_score not in (None, "", "None") else None,
            tags.get(TAG_PREFIX + "previous_production_version") or None,
            int(seen) if seen not in (None, "", "None") else None,
            production_metrics=_json_dict(tags.get(TAG_PREFIX + "production_metrics")),
        )
    previous = str(prod.version) if prod is not None else None
    prod_score = rows_in_test = None
    production_metrics: dict[str, float] = {}
    note = ""
    if prod is not None:
        seen_mask = production_rows_in(cfg, str(prod.version), dict(prod.tags or {}), frame, schema)
        compared = frame
        if seen_mask is not None:
            rows_in_test = int(seen_mask.sum())
            if rows_in_test:
                compared = frame[~seen_mask]
                note = (
                    f" Both were compared on the {len(compared)} test rows Production "
                    f"v{previous} never saw (it was trained on {rows_in_test} of them)."
                )
                log.warning(
                    "Production v%s was trained on %d of the %d test rows (did "
                    "split.seed or split.test_size change?): both models are "
                    "compared on the other %d",
                    previous,
                    rows_in_test,
                    len(frame),
                    len(compared),
                )
                new_score = (
                    score_model(model, compared, schema, metric, source=source)
                    if len(compared)
                    else new_score
                )
        if len(compared):
            prod_score, production_metrics = production_score(cfg, prod, compared, schema, metric, source)
    promoted, reason = _decide(cfg, metric, new_score, previous, prod_score)
    return Decision(
        version,
        promoted,
        reason + note,
        new_score,
        prod_score,
        previous,
        rows_in_test,
        production_metrics=production_metrics,
    )


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
    except Exception as exc:
        if is_unreachable(exc):
            raise
        raise RegistryError(
            f"{name} v{decision.version} is registered but recording the promotion "
            f"decision failed: {first_line(exc)}; retry the task"
        ) from exc
