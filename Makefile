# netsec: the two commands a newcomer needs are `make run` and `make test` (see README.md).
VENV ?= .venv
BIN  := $(VENV)/bin

.PHONY: setup setup-test run run-quick lint format test test-fast bench serve airflow-ui mlflow-ui compose-test clean

setup:
	scripts/setup.sh

setup-test:
	scripts/setup.sh --test

## The main job on the embedded defaults: the Airflow DAG end to end on the synthetic sample
## (SQLite Airflow + MLflow, file:// storage, all under .netsec/). Params: make run CONF='{"force_retrain": true}'
CONF ?= {}
## Address the local servers listen on (serve, airflow-ui, mlflow-ui). Loopback: this machine only.
## HOST=0.0.0.0 exposes them to every network the machine is on (README, "Operating it").
HOST ?= 127.0.0.1
AIRFLOW_PORT ?= 8080
run: setup
	$(BIN)/python scripts/airflow_local.py -c '$(CONF)'

## The same steps in process, without Airflow.
run-quick: setup
	$(BIN)/netsec run

## Lint, format check and type check (ruff and mypy, configured in pyproject.toml; the same
## hooks run on commit after `pre-commit install`). `make format` applies ruff's fixes.
lint: setup-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup-test
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## Lint and type check, then every test, with the real servers the fixtures start.
test: lint
	$(BIN)/python -m pytest -q

test-fast: setup-test
	$(BIN)/python -m pytest -q -m "not slow"

serve: setup
	$(BIN)/netsec serve --host $(HOST)

## The Airflow UI on the state `make run` left (same runs; trigger with params). Port 8080.
## `airflow standalone` with the API server on $(HOST) and no log servers (scripts/airflow_ui.py).
airflow-ui: setup
	AIRFLOW__API__HOST=$(HOST) AIRFLOW__API__PORT=$(AIRFLOW_PORT) NETSEC_HOME="$(CURDIR)/.netsec" \
	  NETSEC_CONFIG="$(CURDIR)/config/pipeline.yaml" $(BIN)/python scripts/airflow_ui.py

## The MLflow UI on the same local registry. Port 5000.
mlflow-ui: setup
	$(BIN)/mlflow ui --backend-store-uri "sqlite:///$(CURDIR)/.netsec/mlflow.db" --host $(HOST) --port 5000

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
