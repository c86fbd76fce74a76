# netsec: the two commands a newcomer needs are `make run` and `make test` (see README.md).
VENV ?= .venv
BIN  := $(VENV)/bin

.PHONY: setup setup-test run run-quick test test-fast bench serve airflow-ui mlflow-ui compose-test clean

setup:
	scripts/setup.sh

setup-test:
	scripts/setup.sh --test

## The main job on the embedded defaults: the Airflow DAG end to end on the synthetic sample
## (SQLite Airflow + MLflow, file:// storage, all under .netsec/). Params: make run CONF='{"force_retrain": true}'
CONF ?= {}
run: setup
	$(BIN)/python scripts/airflow_local.py -c '$(CONF)'

## The same steps in process, without Airflow.
run-quick: setup
	$(BIN)/netsec run

## Every test, with the real servers the fixtures start.
test: setup-test
	$(BIN)/python -m pytest -q

test-fast: setup-test
	$(BIN)/python -m pytest -q -m "not slow"

serve: setup
	$(BIN)/netsec serve

## The Airflow UI on the state `make run` left (same runs; trigger with params). Port 8080.
## `airflow standalone` starts its components as `airflow ...` subprocesses, hence the PATH.
airflow-ui: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" AIRFLOW_HOME="$(CURDIR)/.netsec/airflow" NETSEC_HOME="$(CURDIR)/.netsec" \
	  NETSEC_CONFIG="$(CURDIR)/config/pipeline.yaml" airflow standalone

## The MLflow UI on the same local registry. Port 5000.
mlflow-ui: setup
	$(BIN)/mlflow ui --backend-store-uri "sqlite:///$(CURDIR)/.netsec/mlflow.db" --port 5000

bench: setup-test
	$(BIN)/python bench/bench_training.py
	$(BIN)/python bench/bench_serving.py

## The docker compose stack under a real Docker engine (starts dockerd as root when none runs):
## builds both images and CI's stand-ins, `up` with two Celery workers, drives the users' paths,
## screenshots, `down -v`. Logs and screenshots in .netsec/compose-test/. COMPOSE=v1 for docker-compose 1.29.
COMPOSE ?= v2
compose-test: setup-test
	$(BIN)/python scripts/compose_test.py --compose $(COMPOSE)

clean:
	rm -rf .netsec
