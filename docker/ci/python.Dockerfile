# CI only: the Python 3.11 base that stands in for the official python image when no image
# registry is reachable (scripts/compose_test.py builds it; Dockerfile.airflow and
# Dockerfile.serving take it as PYTHON_IMAGE). Debian 12's own python3.11 on the Debian base
# that compose_test.py makes with debootstrap, with `python` on PATH as in the official image.
#
# Build context: a directory compose_test.py writes, holding pip.conf and ca-bundle.crt: the
# build machine's CA bundle for pip when its HTTPS goes through an intercepting proxy (both
# files are empty otherwise). Only this CI image carries them, never an image built from the
# defaults.
ARG DEBIAN_IMAGE=netsec-ci/debian:bookworm
FROM ${DEBIAN_IMAGE}

# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s /usr/bin/python3.11 /usr/local/bin/python \
 && ln -s /usr/bin/python3.11 /usr/local/bin/python3

COPY ca-bundle.crt /usr/local/share/netsec-ci/ca-bundle.crt
COPY pip.conf /etc/pip.conf
ENV LANG=C.UTF-8
CMD ["python3"]
