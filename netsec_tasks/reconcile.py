"""Reconcile: close or finish what an earlier run left when it failed or was killed.

Runs at the start of every pipeline run (``netsec run``, the DAG's first task) and on its own as
``netsec reconcile``. Idempotent: a second call right after the first finds nothing to do.

- **Stale MLflow runs.** A run still ``RUNNING`` whose owner process is gone (same host: its pid
  is dead or reused), or, when the owner cannot be checked from here (another host, an older run
  without an owner tag), that has been running longer than ``dag.task_timeout_minutes``, is
  ended ``KILLED`` with tag ``netsec.reconcile`` saying why.
- **Undecided model versions.** A version without a ``netsec.promotion`` tag (its run was killed
  between "registered" and the decision) is decided now against the current Production model on
  the version's own test split, with the same rule and code as the register step; a version that
  cannot be decided (its run, test split or artifacts are gone) is tagged
  ``netsec.promotion=abandoned`` with the reason. A version tagged promoted whose promotion did not
  finish (alias/stage not moved) is promoted. A version whose owner is alive is left alone.
- **Unfinished syncs.** A run of this storage that registered a version but has no
  ``manifest.json`` (its sync step failed or was killed) is synced now; the sync is idempotent
  and the manifest, written last, proves it finished. When storage is still down this raises
  SourceUnavailable, so the run that called it stops before it commits a watermark: the watermark
  never gets ahead of a run whose artifacts are missing from storage.

Every action is logged and returned in a :class:`ReconcileRecord`; the pipeline copies it into
the run's outcome.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from pathlib import Path

from netsec_tasks.config import PipelineConfig
from netsec_tasks.errors import DataError, RegistryError
from netsec_tasks.operating_point import decision_policy
from netsec_tasks.outages import mlflow_errors, owner_alive
from netsec_tasks.records import ReconciledItem, ReconcileRecord
from netsec_tasks.registry import (
    PROMOTION_TAG,
    SHADOW_OUTCOME_TAG,
    Decision,
    TestSplit,
    all_versions,
    apply_decision,
    challenger_version,
    decide_version,
    differences,
    load_version,
    production_version,
    promote,
    score_version,
    set_challenger,
)
from netsec_tasks.tracking import OWNER_TAG, TAG_PREFIX, mlflow_client

log = logging.getLogger("netsec.reconcile")

RECONCILE_TAG = TAG_PREFIX + "reconcile"
DECIDED_BY_TAG = TAG_PREFIX + "decided_by"


def reconcile(cfg: PipelineConfig, *, by: str = "netsec reconcile") -> ReconcileRecord:
    """Reconcile the tracking store and registry at ``cfg.registry``; ``by`` names who did it
    (a pipeline run id) in the tags it writes. Raises SourceUnavailable when the store is down."""
    items: list[ReconciledItem] = []
    with mlflow_errors(cfg, "reconcile runs and model versions left by earlier runs"):
        client = mlflow_client(cfg)
        experiment = client.get_experiment_by_name(cfg.registry.experiment)
        if experiment is not None:
            items += end_stale_runs(client, cfg, experiment.experiment_id, by=by)
        items += decide_undecided_versions(client, cfg, by=by)
        items += sync_unsynced_runs(client, cfg)
    record = ReconcileRecord(items=items)
    for item in items:
        log.info("reconciled %s %s: %s (%s)", item.kind, item.id, item.action, item.reason)
    if not items:
        log.info("reconcile: nothing left over by earlier runs")
    return record


def _minutes(ms: float) -> str:
    return f"{ms / 60000:.1f} min"


def end_stale_runs(client, cfg: PipelineConfig, experiment_id: str, *, by: str) -> list[ReconciledItem]:
    """End ``RUNNING`` runs whose owner is gone (or, unknown, that outlived the task timeout)."""
    from mlflow.entities import ViewType

    now = time.time() * 1000
    timeout_ms = cfg.dag.task_timeout_minutes * 60_000
    out: list[ReconciledItem] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string="attributes.status = 'RUNNING'",
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=200,
            page_token=token,
        )
        for run in page:
            age = now - (run.info.start_time or now)
            owner = run.data.tags.get(OWNER_TAG)
            alive = owner_alive(owner)
            if alive:
                continue
            if alive is False:
                why = (
                    f"its owner process ({_describe_owner(owner)}) is gone; "
                    f"it had been RUNNING for {_minutes(age)}"
                )
            elif age > timeout_ms:
                why = (
                    f"RUNNING for {_minutes(age)}, longer than dag.task_timeout_minutes="
                    f"{cfg.dag.task_timeout_minutes}, and its owner "
                    f"({_describe_owner(owner) if owner else 'not recorded'}) cannot be checked from here"
                )
            else:
                continue
            client.set_tag(run.info.run_id, RECONCILE_TAG, f"ended KILLED by {by}: {why}"[:5000])
            client.set_terminated(run.info.run_id, "KILLED")
            role = run.data.tags.get(TAG_PREFIX + "role", "run")
            out.append(
                ReconciledItem(
                    kind="mlflow_run",
                    id=run.info.run_id,
                    action="KILLED",
                    reason=f"{role} run {run.info.run_name or ''}: {why}".strip(),
                )
            )
        token = page.token
        if not token:
            return out


def _describe_owner(owner: str | None) -> str:
    parts = (owner or "").split("|")
    return f"pid {parts[2]} on {parts[0]}" if len(parts) == 4 else "not recorded"


# --------------------------------------------------------------------------- versions


def decide_undecided_versions(client, cfg: PipelineConfig, *, by: str) -> list[ReconciledItem]:
    """Give every version without a decision one, oldest first; finish unfinished promotions."""
    name = cfg.registry.model_name
    now = time.time() * 1000
    timeout_ms = cfg.dag.task_timeout_minutes * 60_000
    out: list[ReconciledItem] = []
    for mv in sorted(all_versions(client, name), key=lambda v: int(v.version)):
        tags = dict(mv.tags or {})
        version = str(mv.version)
        decision = tags.get(PROMOTION_TAG)
        if decision == "promoted":
            item = _finish_promotion(client, cfg, mv)
            if item is not None:
                out.append(item)
            continue
        if decision:
            continue
        alive = owner_alive(tags.get(OWNER_TAG))
        age = now - (mv.creation_timestamp or now)
        if alive or (alive is None and age <= timeout_ms):
            log.info(
                "%s v%s has no promotion decision yet, but its registering process may still "
                "be deciding it (owner %s); left alone",
                name,
                version,
                _describe_owner(tags.get(OWNER_TAG)),
            )
            continue
        result = _decide_left_over(client, cfg, mv, by=by)
        out.append(
            ReconciledItem(
                kind="model_version", id=f"{name}/{version}", action=result.label, reason=result.reason
            )
        )
    return out + _finish_challenger(client, cfg)


def _finish_challenger(client, cfg: PipelineConfig) -> list[ReconciledItem]:
    """The challenger alias after a crash (registry.shadow): removed from a version whose shadow
    ended (promoted or retired, the alias not yet cleared); moved to the newest version tagged
    ``challenger`` that does not hold it yet (the decision was recorded, the alias not moved)."""
    name, alias = cfg.registry.model_name, cfg.registry.challenger_alias
    out: list[ReconciledItem] = []
    holder = challenger_version(client, cfg)
    if holder is not None and (holder.tags or {}).get(PROMOTION_TAG) != "challenger":
        ended = (holder.tags or {}).get(SHADOW_OUTCOME_TAG) or (holder.tags or {}).get(PROMOTION_TAG)
        client.delete_registered_model_alias(name, alias)
        out.append(
            ReconciledItem(
                kind="model_version",
                id=f"{name}/{holder.version}",
                action="challenger alias removed",
                reason=f"its shadow had ended ({ended}) but alias '{alias}' still pointed at it",
            )
        )
        holder = None
    tagged = all_versions(client, name, tags={PROMOTION_TAG: "challenger"})
    newest = max(tagged, key=lambda mv: int(mv.version), default=None)
    if newest is not None and (holder is None or int(newest.version) > int(holder.version)):
        replaced = set_challenger(
            client, cfg, str(newest.version), "its alias move was finished by reconcile"
        )
        out.append(
            ReconciledItem(
                kind="model_version",
                id=f"{name}/{newest.version}",
                action="challenger set",
                reason=f"tagged challenger, but alias '{alias}' was on "
                f"{'v' + replaced if replaced else 'no version'}",
            )
        )
    return out


def _finish_promotion(client, cfg: PipelineConfig, mv) -> ReconciledItem | None:
    """A version tagged promoted but not holding the alias, with no later promoted version:
    the run died between recording the decision and moving the alias."""
    prod = production_version(client, cfg)
    version = str(mv.version)
    if prod is not None and int(prod.version) >= int(version):
        return None  # it is Production, or a later version was promoted since
    promote(client, cfg, version)
    return ReconciledItem(
        kind="model_version",
        id=f"{cfg.registry.model_name}/{version}",
        action="promotion finished",
        reason=f"tagged promoted, but alias '{cfg.registry.alias}' was on "
        f"{'v' + str(prod.version) if prod is not None else 'no version'}",
    )


def _decide_left_over(client, cfg: PipelineConfig, mv, *, by: str) -> Decision:
    """Decide ``mv`` against current Production on its own test split, or abandon it."""
    from netsec_tasks.dataset_schema import load_schema

    version = str(mv.version)
    tags = dict(mv.tags or {})
    extra = {DECIDED_BY_TAG: by}
    metric = tags.get(TAG_PREFIX + "metric") or cfg.training.metric
    test_uri = tags.get(TAG_PREFIX + "test_uri") or (
        f"runs:/{mv.run_id}/data/test.parquet" if mv.run_id else None
    )
    try:
        if not mv.run_id:
            raise RegistryError("it has no source run")
        if test_uri is None:
            raise RegistryError("it records no test split")
        schema = load_schema(cfg.schema_path)
        # Another data set's model under this name (see registry.check_comparable) is not ours
        # to compare; neither is one when Production is another data set's.
        prod = production_version(client, cfg)
        differs = differences(tags, schema) or (
            differences(dict(prod.tags or {}), schema) if prod is not None else []
        )
        if differs:
            raise RegistryError(
                f"it is not comparable with this data set's ('{schema.name}') models: " + "; ".join(differs)
            )
        split = _test_split(cfg, schema, test_uri)
        split.check_columns()
        model = load_version(cfg, mv.name, version, mv.run_id)
        policy = decision_policy(cfg, schema)
        metric = "recall_at_budget" if policy.objective == "recall_at_budget" else metric
        scores = split.scores(model)
        scored = score_version(model, split, policy, metric, scores=scores)
    except (RegistryError, DataError) as exc:
        decision = Decision(
            version,
            False,
            f"cannot be decided: {exc}"[:1000],
            None,
            None,
            _production_label(client, cfg),
            outcome="abandoned",
        )
        apply_decision(client, cfg, mv.run_id, decision, extra)
        return decision
    decision = decide_version(client, cfg, mv, model, split, metric, scored=scored, scores=scores)
    decision = dataclasses.replace(
        decision, reason=f"decided late (its run ended before the decision): {decision.reason}"
    )
    apply_decision(client, cfg, mv.run_id, decision, extra)
    return decision


# --------------------------------------------------------------------------- syncs


def sync_unsynced_runs(client, cfg: PipelineConfig) -> list[ReconciledItem]:
    """Finish the sync of every run of this storage that registered a version but has no manifest.

    A version belongs to this storage when its recorded training split (``netsec.train_uri``)
    lies under ``storage.uri``; versions registered before the storage hand-off, or into another
    storage, are not this storage's to complete.
    """
    from netsec_tasks.records import RegisterRecord, RunContext, safe_name
    from netsec_tasks.storage import join_uri, validate_root
    from netsec_tasks.sync import is_synced, sync

    root = validate_root(cfg.storage.uri)
    runs_root = join_uri(root, "runs") + "/"
    name = cfg.registry.model_name
    out: list[ReconciledItem] = []
    for mv in sorted(all_versions(client, name), key=lambda v: int(v.version)):
        tags = dict(mv.tags or {})
        pipeline_run = tags.get(TAG_PREFIX + "pipeline_run_id")
        if not pipeline_run or not (tags.get(TAG_PREFIX + "train_uri") or "").startswith(runs_root):
            continue
        if tags.get(PROMOTION_TAG) is None:
            continue  # still being registered (reconcile left it alone above): its run syncs it
        run = RunContext(run_id=pipeline_run, storage_uri=join_uri(root, "runs", safe_name(pipeline_run)))
        if is_synced(cfg, run):
            continue
        version = str(mv.version)
        record = sync(
            cfg,
            run,
            register=RegisterRecord(
                model_name=name,
                version=version,
                promoted=tags.get(PROMOTION_TAG) == "promoted",
                production_version=None,
                reason="synced by reconcile",
            ),
        )
        out.append(
            ReconciledItem(
                kind="sync",
                id=pipeline_run,
                action="synced",
                reason=f"{name} v{version} had no manifest in {run.storage_uri} (its sync did not "
                f"finish); {record.uploaded} object(s) uploaded now, {record.skipped} already there",
            )
        )
    return out


def _production_label(client, cfg: PipelineConfig) -> str | None:
    prod = production_version(client, cfg)
    return str(prod.version) if prod is not None else None


def _test_split(cfg: PipelineConfig, schema, uri: str) -> TestSplit:
    """A version's test split: in storage (``file://``/``s3://``, a path; scored partition by
    partition on the engine) or an MLflow artifact URI (``runs:/...``: versions registered
    before the storage hand-off, small, read into memory)."""
    from netsec_tasks.engine import engine_for
    from netsec_tasks.storage import is_local, is_s3

    if is_s3(uri) or is_local(uri):
        return TestSplit(cfg, engine_for(cfg), schema, uri)
    import mlflow.artifacts

    from netsec_tasks.outages import is_unreachable
    from netsec_tasks.table_io import read_table

    with tempfile.TemporaryDirectory(prefix="netsec-reconcile-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=tmp, tracking_uri=cfg.registry.tracking_uri
            )
        except Exception as exc:
            if is_unreachable(exc):
                raise
            raise DataError(f"its test split is missing ({type(exc).__name__})", source=uri) from None
        return TestSplit.of_frame(read_table(Path(local)), schema, uri)
