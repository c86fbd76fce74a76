# CI only: stands in for the postgres image in docker-compose.ci.yaml. Debian 12's PostgreSQL
# (15) with an entrypoint that initialises a data directory the way the official image does
# (POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB, then /docker-entrypoint-initdb.d/*, once).
ARG DEBIAN_IMAGE=netsec-ci/debian:bookworm
FROM ${DEBIAN_IMAGE}

# The user first, with the official image's fixed ids (999), then no cluster from the package:
# the entrypoint makes one in the data volume.
# hadolint ignore=DL3008
RUN groupadd --system --gid 999 postgres \
 && useradd --system --uid 999 --gid postgres --home-dir /var/lib/postgresql --shell /bin/bash postgres \
 && mkdir -p /etc/postgresql-common \
 && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf \
 && apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /docker-entrypoint-initdb.d /var/lib/postgresql/data /var/run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql \
 && chmod 700 /var/lib/postgresql/data

COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
USER 999:999
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
