#!/usr/bin/env bash
# Local stand-ins for the two base images docker-compose.yml pulls (python:3.11-slim and
# postgres:16), built from Debian packages only, for machines that reach Debian's mirror and
# PyPI but no container registry (CI here). Users with registry access never need this.
#
#   docker/local-images/build.sh          # prints the two tags; cached: a rerun takes a second
#
#   transferlab-local/python:3.11-bookworm   debootstrap'ed Debian 12 + python3.11, venv, pip
#   transferlab-local/postgres:15-bookworm   the above + Debian's PostgreSQL 15, with an
#                                            entrypoint that honours POSTGRES_USER/_PASSWORD/_DB
#                                            and /docker-entrypoint-initdb.d/*.sql like postgres:16
# Needs root, debootstrap and a running Docker engine. MIRROR overrides the Debian mirror.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
PY_TAG="${PY_TAG:-transferlab-local/python:3.11-bookworm}"
PG_TAG="${PG_TAG:-transferlab-local/postgres:15-bookworm}"

have() { docker image inspect "$1" >/dev/null 2>&1; }

if ! have "$PY_TAG"; then
  rootfs="$(mktemp -d /tmp/transferlab-rootfs.XXXXXX)"
  trap 'rm -rf "$rootfs"' EXIT
  echo "build.sh: debootstrap bookworm into $rootfs (a few minutes)" >&2
  # minbase + what python:3.11-slim offers: python (python-is-python3), venv, pip, CA certificates.
  debootstrap --variant=minbase \
    --include=python3.11,python3.11-venv,python3-pip,python-is-python3,ca-certificates \
    bookworm "$rootfs" "$MIRROR" >/tmp/transferlab-debootstrap.log 2>&1 \
    || { tail -20 /tmp/transferlab-debootstrap.log >&2; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' - "$PY_TAG" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
fi

if ! have "$PG_TAG"; then
  echo "build.sh: building $PG_TAG from $PY_TAG" >&2
  docker build -q -t "$PG_TAG" --build-arg BASE="$PY_TAG" -f "$HERE/postgres.Dockerfile" "$HERE" >/dev/null
fi
echo "$PY_TAG"
echo "$PG_TAG"
