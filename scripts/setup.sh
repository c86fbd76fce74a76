#!/usr/bin/env bash
# Create .venv and install netsec with the pinned versions. Idempotent: a second run is quick.
#   scripts/setup.sh            runtime: pipeline, Airflow, serving
#   scripts/setup.sh --test     plus test tools and the Debian packages the tests use
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${NETSEC_VENV:-.venv}
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in python3.11 python3.12 python3; do
    if command -v "$cand" >/dev/null 2>&1; then PY=$cand; break; fi
  done
fi
"$PY" - <<'PYCHECK' || { echo "netsec needs Python 3.11 or 3.12 (found $("$PY" --version 2>&1))" >&2; exit 2; }
import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 13) else 1)
PYCHECK

extras="serving,airflow"
want_test=0
[ "${1:-}" = "--test" ] && { extras="serving,airflow,test"; want_test=1; }

if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV with $("$PY" --version)"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.netsec-installed-$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements/constraints.txt -nt "$stamp" ]; then
  echo "== installing netsec[$extras] (pinned by requirements/constraints.txt)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -c requirements/constraints.txt -e ".[$extras]"
  touch "$stamp"
fi

if [ "$want_test" = 1 ]; then
  # Debian packages the tests drive: headless Chromium for page checks; for the compose stack
  # under a real engine (scripts/compose_test.py): Docker Engine (docker.io), debootstrap for the
  # CI base image, and docker-compose 1.29 (Compose v2 comes from PyPI, see compose_test.py).
  # Installed only when missing.
  need=()
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v dockerd >/dev/null 2>&1 || [ -x /usr/sbin/dockerd ] || need+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
  command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
  if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "== apt-get install ${need[*]}"
      # No system-wide services from the packages (a dockerd on /var/run/docker.sock): the
      # standard policy-rc.d "deny", only while installing, only if none is there.
      policy=""
      if [ ! -e /usr/sbin/policy-rc.d ]; then
        policy=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy"
      fi
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
        || { if [ -n "$policy" ]; then rm -f "$policy"; fi; exit 1; }
      if [ -n "$policy" ]; then rm -f "$policy"; fi
    else
      echo "warning: missing ${need[*]} (install them; the tests that need them will fail)" >&2
    fi
  fi
fi
echo "== ready: $VENV"
