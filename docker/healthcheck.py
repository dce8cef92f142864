"""Container healthchecks in the transferlab image, with only the standard library (no curl there).

    python docker/healthcheck.py url http://127.0.0.1:5000/health
        healthy when the URL answers 200 (MLflow's /health and Prefect's /api/health need no login)
    python docker/healthcheck.py deployment transfer_learning/transfer_learning
        healthy when the Prefect API at $PREFECT_API_URL knows that deployment, i.e. the worker
        (`transferlab serve`) has registered what it serves; sends $PREFECT_API_AUTH_STRING as
        basic auth when set

Exit 0 = healthy, 1 = not (the reason on stderr, which `docker inspect` shows).
"""

from __future__ import annotations

import base64
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

TIMEOUT_S = 5


def _get(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def check_url(url: str) -> str | None:
    """None when ``url`` answers 200, else why not."""
    try:
        status = _get(url)
    except OSError as e:
        return f"{url}: {e}"
    return None if status == 200 else f"{url}: HTTP {status}"


def check_deployment(name: str) -> str | None:
    """None when the Prefect API knows deployment ``flow/deployment``, else why not."""
    api = os.environ.get("PREFECT_API_URL")
    if not api:
        return "PREFECT_API_URL is not set"
    headers = {}
    if auth := os.environ.get("PREFECT_API_AUTH_STRING"):
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    url = f"{api.rstrip('/')}/deployments/name/{urllib.parse.quote(name)}"
    try:
        status = _get(url, headers)
    except OSError as e:
        return f"{url}: {e}"
    return None if status == 200 else f"deployment {name}: HTTP {status}"


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in {"url", "deployment"}:
        print(__doc__, file=sys.stderr)
        return 2
    kind, target = argv
    problem = check_url(target) if kind == "url" else check_deployment(target)
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
