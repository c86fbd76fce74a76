"""Where a monitoring run's figures go besides its reports: one MLflow run per monitoring run,
and tags ``netsec.monitoring.*`` on the Production model version, which serving's ``/metrics``
reads.
"""

from __future__ import annotations

from netsec_tasks.config import PipelineConfig
from netsec_tasks.records import MonitoringRecord, utcnow
from netsec_tasks.tracking import TAG_PREFIX

MONITORING_TAG_PREFIX = TAG_PREFIX + "monitoring."


def _figures(record: MonitoringRecord) -> dict[str, float]:
    live = record.live
    out = {
        "rows": record.rows_read,
        "rows_tested": record.rows_tested,
        "rows_excluded": record.rows_excluded,
        "labelled": record.labelled,
        "trigger": float(record.trigger),
    }
    if record.drift_tested:
        out.update(drift_share=record.drift_share or 0.0, drift_detected=float(record.drift_detected))
    if record.contract.get("share") is not None:
        out.update(
            contract_violation_share=record.contract["share"],
            contract_violations=float(bool(record.contract.get("surge"))),
        )
    for key in ("precision", "recall", "f1", "fpr"):
        if live.get(key) is not None:
            out[f"live_{key}"] = live[key]
            ci = live.get(f"{key}_ci")
            if ci:
                out[f"live_{key}_low"], out[f"live_{key}_high"] = ci
    for key in ("threat_rate", "threat_rate_test", "rows_per_hour", "alert_rate", "expected_alert_rate"):
        if record.traffic.get(key) is not None:
            out[key] = record.traffic[key]
    score = record.traffic.get("score")
    if score:
        out.update(score_mean=score["mean"], score_ks=score["ks"])
    return {k: float(v) for k, v in out.items()}


def log_to_mlflow(cfg: PipelineConfig, record: MonitoringRecord, texts: dict[str, str]) -> str | None:
    """One MLflow run per monitoring run (experiment ``monitoring.experiment``) holding the
    figures, linked to Production's logged model, and the reports; the figures also become tags
    ``netsec.monitoring.*`` of the Production model version. Returns the MLflow run id."""
    from mlflow.entities import Metric, RunTag

    from netsec_tasks.outages import mlflow_errors
    from netsec_tasks.tracking import configure_mlflow, logged_model_id, mlflow_client

    if record.model_version is None:
        return None
    with mlflow_errors(cfg, "log the monitoring figures"):
        exp_id = configure_mlflow(cfg.with_overrides({"registry.experiment": cfg.monitoring.experiment}))
        client = mlflow_client(cfg)
        mv = client.get_model_version(record.model_name, record.model_version)
        # The version's logged model (MLflow 3), so the figures show on the model's page; the
        # SQLite store leaves model_id empty, its source models:/m-<id> names it.
        model_id = logged_model_id(mv)
        # A retried task finds its MLflow run again; two models' monitoring DAGs share run ids
        # (scheduled__<time>), so the run is found by the model too.
        found = client.search_runs(
            [exp_id],
            filter_string=(
                f"tags.`netsec.monitoring_run_id` = '{record.run_id.replace(chr(39), '')}' and "
                f"tags.`netsec.model_name` = '{record.model_name.replace(chr(39), '')}'"
            ),
            max_results=1,
        )
        if found:
            run_id = found[0].info.run_id
        else:
            run_id = client.create_run(
                exp_id,
                run_name=f"monitoring {record.model_name} {record.run_id}",
                tags={
                    "netsec.monitoring_run_id": record.run_id,
                    "netsec.model_name": record.model_name,
                    "netsec.model_version": record.model_version,
                    "mlflow.note.content": record.trigger_reason,
                },
            ).info.run_id
        ts = int(utcnow().timestamp() * 1000)
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, ts, 0, model_id=model_id) for k, v in _figures(record).items()],
            tags=[
                RunTag("netsec.trigger", str(record.trigger).lower()),
                RunTag("netsec.trigger_reason", record.trigger_reason[:5000]),
            ],
        )
        for name, text in texts.items():
            client.log_text(run_id, text, name)
        client.set_terminated(run_id)
        tags = served_tags(record)
        for key, value in tags.items():
            client.set_model_version_tag(record.model_name, record.model_version, key, value)
    return run_id


def served_tags(record: MonitoringRecord) -> dict[str, str]:
    """The model version tags serving reads (``netsec.monitoring.<figure>``; empty: unknown)."""
    ci = record.live.get("f1_ci") or [None, None]
    fpr_ci = record.live.get("fpr_ci") or [None, None]
    values = {
        "drift_share": record.drift_share if record.drift_tested else None,
        "drift_detected": int(record.drift_detected) if record.drift_tested else None,
        "contract_violation_share": record.contract.get("share"),
        "contract_violations": int(bool(record.contract.get("surge"))) if record.contract else None,
        "live_f1": record.live.get("f1"),
        "live_f1_low": ci[0],
        "live_f1_high": ci[1],
        "live_fpr": record.live.get("fpr"),
        "live_fpr_low": fpr_ci[0],
        "live_fpr_high": fpr_ci[1],
        "labelled": record.labelled,
        "threat_rate": record.traffic.get("threat_rate"),
        "alert_rate": record.traffic.get("alert_rate"),
        "expected_alert_rate": record.traffic.get("expected_alert_rate"),
        "rows": record.rows_read,
        "trigger": int(record.trigger),
        "at": utcnow().isoformat(timespec="seconds"),
        "run_id": record.run_id,
    }
    return {MONITORING_TAG_PREFIX + k: "" if v is None else str(v) for k, v in values.items()}
