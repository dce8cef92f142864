#!/usr/bin/env bash
# Make sure a Docker engine answers, for the compose stack test (tests/test_docker_stack.py).
# Idempotent: if `docker info` already works, nothing happens. Otherwise (as root, e.g. CI on a
# fresh machine without systemd) start Debian's dockerd in the background, logging to
# /var/log/dockerd.log, and wait until it answers.
set -euo pipefail
if docker info >/dev/null 2>&1; then
  exit 0
fi
command -v dockerd >/dev/null || { echo "ci-dockerd: dockerd is not installed (make system-deps)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "ci-dockerd: no Docker engine answers; start one (as root: $0)" >&2; exit 1; }
nohup dockerd >/var/log/dockerd.log 2>&1 &
for _ in $(seq 60); do
  if docker info >/dev/null 2>&1; then
    echo "ci-dockerd: dockerd started (log /var/log/dockerd.log)" >&2
    exit 0
  fi
  sleep 1
done
echo "ci-dockerd: dockerd did not answer within 60 s; /var/log/dockerd.log ends with:" >&2
tail -20 /var/log/dockerd.log >&2
exit 1
