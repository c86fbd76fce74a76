#!/usr/bin/env bash
# Creates MLflow's role and database beside Airflow's metadata database.
# The postgres image runs /docker-entrypoint-initdb.d/* once, when the data volume is empty;
# after changing MLFLOW_DB_PASSWORD on an existing volume, ALTER ROLE by hand (see README).
set -eo pipefail

: "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD must be set (see .env.example)}"

# The password goes in as a psql variable, so psql quotes it (:'name') and it never
# appears in SQL text or in a process list.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v mlflow_password="$MLFLOW_DB_PASSWORD" <<'EOSQL'
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
EOSQL
