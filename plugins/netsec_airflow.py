"""Airflow-side wiring shared by the netsec DAGs and plugin: connections to the services, and
the task policies both DAGs use (retries, failure logging, default_args).

Airflow puts its plugins folder on ``sys.path`` in every component (scheduler, workers, API
server), so the DAG file and the plugin both import this module; ``netsec_tasks`` itself never
imports Airflow. Heavy imports (providers, pymongo, boto) happen inside the functions.
"""

from __future__ import annotations

import datetime as dt
import logging
import typing

log = logging.getLogger("netsec.airflow")

MONGO_CONN_ID = "netsec_mongo"
S3_CONN_ID = "netsec_s3"


# --------------------------------------------------------------------------- task policies


def log_task_failure(context: dict) -> None:
    """on_failure_callback: one log line saying which task of which run failed, and why."""
    ti = context.get("ti")
    exc = context.get("exception")
    log.error(
        "%s: task %s failed in run %s (try %s of %s): %s: %s",
        getattr(ti, "dag_id", "?"),
        getattr(ti, "task_id", "?"),
        getattr(ti, "run_id", "?"),
        getattr(ti, "try_number", "?"),
        getattr(ti, "max_tries", "?"),
        type(exc).__name__ if exc else "unknown error",
        exc,
    )


def default_args(cfg: typing.Any) -> dict[str, typing.Any]:
    """Both DAGs' default_args: no retries unless a task asks (:func:`retries`), the task
    timeout from ``dag.task_timeout_minutes``, failures logged in one line."""
    return {
        "owner": "netsec",
        "retries": 0,
        "execution_timeout": dt.timedelta(minutes=cfg.dag.task_timeout_minutes),
        "on_failure_callback": log_task_failure,
    }


def retries(cfg: typing.Any, *, only_outages: bool = False) -> dict[str, typing.Any]:
    """Operator kwargs for a task that talks to a service: ``dag.retries`` with exponential
    back-off from ``dag.retry_delay_seconds`` up to ``dag.max_retry_delay_seconds``.

    Bad data or a bad key will not fix itself: DataError and ConfigError fail at once and
    anything else (a network error) retries. With ``only_outages`` (training, registering) only
    SourceUnavailable retries: the per-call budgets make an outage a short failure, and any other
    error would repeat itself.
    """
    from airflow.sdk import ExceptionRetryPolicy, RetryAction, RetryRule

    if only_outages:
        policy = ExceptionRetryPolicy(
            rules=[
                RetryRule(
                    exception="netsec_tasks.errors.SourceUnavailable",
                    action=RetryAction.RETRY,
                    reason="a service was unreachable: retry later",
                ),
            ],
            default=RetryAction.FAIL,
        )
    else:
        policy = ExceptionRetryPolicy(
            rules=[
                RetryRule(
                    exception=["netsec_tasks.errors.DataError", "netsec_tasks.errors.ConfigError"],
                    action=RetryAction.FAIL,
                    reason="bad input or config: retrying cannot help",
                ),
            ]
        )
    return {
        "retries": cfg.dag.retries,
        "retry_delay": dt.timedelta(seconds=cfg.dag.retry_delay_seconds),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": dt.timedelta(seconds=cfg.dag.max_retry_delay_seconds),
        "retry_policy": policy,
    }


def python_task(
    task_id: str,
    python_callable: typing.Callable[..., typing.Any],
    doc_md: str | None = None,
    *,
    branch: bool = False,
    **kwargs: typing.Any,
) -> typing.Any:
    """One task of a netsec DAG: a ``PythonOperator`` (``BranchPythonOperator`` with ``branch``)
    running ``python_callable`` as ``task_id``, documented by ``doc_md``; ``kwargs`` (retries from
    :func:`retries`, ``trigger_rule``, ``outlets``) go to the operator as they are. Must be called
    inside a ``with DAG(...)`` block, like the operator itself."""
    from airflow.providers.standard.operators.python import BranchPythonOperator, PythonOperator

    operator = BranchPythonOperator if branch else PythonOperator
    return operator(task_id=task_id, python_callable=python_callable, doc_md=doc_md, **kwargs)


# --------------------------------------------------------------------------- connections


def retrain_asset(cfg: typing.Any) -> typing.Any:
    """The Airflow asset "retraining requested" of the configured model: the netsec_monitoring
    DAG emits an event on it (with the evidence in the event's extra) and netsec_training is
    scheduled on its cron *or* this asset (``AssetOrTimeSchedule``). The ``x-`` scheme is
    Airflow's convention for a scheme no provider normalises (so parsing loads no provider)."""
    from airflow.sdk import Asset

    name = cfg.registry.model_name
    return Asset(
        name=f"netsec_retraining_requested__{name}", uri=f"x-netsec://retraining/{name}", group="netsec"
    )


def connection_defined(conn_id: str) -> bool:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return False
    return True


def mongo_client(cfg: typing.Any) -> tuple[typing.Any, str]:
    """A MongoClient from the ``netsec_mongo`` connection, and a description for messages.

    Without the connection the step falls back to ``source.mongo.uri`` from the config, and says so.
    """
    if not connection_defined(MONGO_CONN_ID):
        log.warning(
            "Airflow connection '%s' is not defined: reading MongoDB at source.mongo.uri "
            "from the config instead (define AIRFLOW_CONN_NETSEC_MONGO to use a connection)",
            MONGO_CONN_ID,
        )
        return None, "source.mongo.uri in the config (no Airflow connection 'netsec_mongo')"
    from airflow.providers.mongo.hooks.mongo import MongoHook

    from netsec_tasks.sources.mongo import client_options

    hook = MongoHook(mongo_conn_id=MONGO_CONN_ID)
    # An unreachable or silent server should fail this try quickly and leave the waiting to the
    # retries; the connection's extra may still set its own timeouts.
    for option, value in client_options(cfg.source.mongo).items():
        hook.extras.setdefault(option, value)
    where = f"Airflow connection '{MONGO_CONN_ID}' ({hook.connection.host}:{hook.connection.port or 27017})"
    return hook.get_conn(), where


def use_storage_connection() -> None:
    """Storage credentials and endpoint from the ``netsec_s3`` connection (MinIO's endpoint_url in
    its extra); without the connection, the storage config and the AWS credential chain apply."""
    from netsec_tasks.storage import S3Credentials, use_s3_credentials

    if not connection_defined(S3_CONN_ID):
        log.warning(
            "Airflow connection '%s' is not defined: storage uses the storage config and "
            "the default AWS credential chain",
            S3_CONN_ID,
        )
        use_s3_credentials(None)
        return
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    hook = S3Hook(aws_conn_id=S3_CONN_ID)
    creds = hook.get_credentials()
    use_s3_credentials(
        S3Credentials(
            access_key=creds.access_key,
            secret_key=creds.secret_key,
            session_token=creds.token,
            endpoint_url=hook.conn_config.endpoint_url,
            region=hook.conn_region_name,
        )
    )
