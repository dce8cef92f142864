#!/usr/bin/env bash
# Fill docker/build-extra/ from this machine's pip setup, for image builds where the defaults
# cannot work (CI here: no PyTorch CPU index, PyPI only through a TLS-intercepting proxy):
#   - torch 2.13.0+cpu, if pip finds that wheel here (find-links, a mirror): the Dockerfile then
#     installs it instead of using the CPU index;
#   - pip's CA bundle (PIP_CERT or pip's configured global.cert) and a pip.conf naming it.
# Idempotent; `fill-build-extra.sh --clean` empties the folder again (README.md stays).
set -euo pipefail
dest="$(cd "$(dirname "$0")/../build-extra" && pwd)"
PY="${PYTHON:-python3}"
find "$dest" -mindepth 1 ! -name README.md -delete
[ "${1:-}" = --clean ] && exit 0

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# The image's interpreter and platform, not this one's; a miss (plain PyPI has no +cpu) is fine.
if "$PY" -m pip download --quiet --no-deps --only-binary :all: --python-version 3.11 \
    --implementation cp --platform manylinux_2_28_x86_64 --dest "$tmp" 'torch==2.13.0+cpu' \
    >/dev/null 2>&1; then
  cp "$tmp"/torch-*.whl "$dest/"
  echo "fill-build-extra: $(basename "$dest"/torch-*.whl)" >&2
fi
# `pip config get` reads one file only; `list` shows what pip really uses (last one wins).
cert="${PIP_CERT:-$("$PY" -m pip config list 2>/dev/null | sed -n "s/^global\.cert='\(.*\)'\$/\1/p" | tail -n 1)}"
if [ -n "$cert" ] && [ -f "$cert" ]; then
  cp "$cert" "$dest/ca.pem"
  printf '[global]\ncert = /tmp/build-extra/ca.pem\n' >"$dest/pip.conf"
  echo "fill-build-extra: pip CA bundle from $cert" >&2
fi
