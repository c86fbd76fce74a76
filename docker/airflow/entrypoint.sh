#!/usr/bin/env bash
# Entrypoint of netsec's Airflow image (Dockerfile.airflow), after the official apache/airflow
# image's: optional set-up steps chosen by environment variables, then the command.
#
#   _AIRFLOW_DB_MIGRATE=true       `airflow db migrate` first (the airflow-init service)
#   _AIRFLOW_WWW_USER_CREATE=true  the admin user (FAB auth manager): _AIRFLOW_WWW_USER_USERNAME,
#                                  _AIRFLOW_WWW_USER_PASSWORD; kept as it is when it exists
#
# `bash ...`, `sh ...`, `python ...` run as given; anything else runs as `airflow <args>`
# (`celery worker` -> `airflow celery worker`). dumb-init (PID 1) forwards signals.
set -euo pipefail

case "${1:-}" in
  bash | sh | python | python3) exec "$@" ;;
esac

if [ "${_AIRFLOW_DB_MIGRATE:-}" = "true" ] || [ "${_AIRFLOW_DB_UPGRADE:-}" = "true" ]; then
  airflow db migrate
fi

if [ "${_AIRFLOW_WWW_USER_CREATE:-}" = "true" ]; then
  : "${_AIRFLOW_WWW_USER_PASSWORD:?_AIRFLOW_WWW_USER_CREATE needs _AIRFLOW_WWW_USER_PASSWORD}"
  airflow users create \
    --username "${_AIRFLOW_WWW_USER_USERNAME:-admin}" \
    --firstname "${_AIRFLOW_WWW_USER_FIRSTNAME:-Airflow}" \
    --lastname "${_AIRFLOW_WWW_USER_LASTNAME:-Admin}" \
    --email "${_AIRFLOW_WWW_USER_EMAIL:-airflowadmin@example.com}" \
    --role "${_AIRFLOW_WWW_USER_ROLE:-Admin}" \
    --password "${_AIRFLOW_WWW_USER_PASSWORD}"
fi

exec airflow "$@"
