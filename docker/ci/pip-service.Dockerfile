# CI only: one Python service from PyPI, pinned by requirements/constraints.txt, on the CI
# Python base; docker-compose.ci.yaml builds it for the stand-ins of mongo (nx-27017), minio
# and minio-init (moto's server, boto3) and mlflow (mlflow with the PostgreSQL driver and
# boto3, as the -full image has them). Build context: the repository root.
ARG PYTHON_IMAGE=netsec-ci/python:3.11
FROM ${PYTHON_IMAGE}
ARG PACKAGES
ENV PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1
COPY requirements/constraints.txt /tmp/constraints.txt
# hadolint ignore=DL3013
RUN python -m venv /opt/venv \
 && pip install --no-cache-dir --constraint /tmp/constraints.txt ${PACKAGES} \
 && useradd --system --uid 10001 --user-group --home-dir /data --create-home service \
 && mkdir -p /data/db \
 && chown -R service:service /data
USER 10001
WORKDIR /data
