# CI only: stands in for the redis image in docker-compose.ci.yaml. Debian 12's Redis (7.0),
# listening on every interface without protected mode and without persistence, as the official
# image runs it for a broker.
ARG DEBIAN_IMAGE=netsec-ci/debian:bookworm
FROM ${DEBIAN_IMAGE}
# The user first, with the official image's fixed ids (999).
# hadolint ignore=DL3008
RUN groupadd --system --gid 999 redis \
 && useradd --system --uid 999 --gid redis --home-dir /var/lib/redis --shell /usr/sbin/nologin redis \
 && apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/*
USER 999:999
WORKDIR /var/lib/redis
EXPOSE 6379
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
