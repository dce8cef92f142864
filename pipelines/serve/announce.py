"""Where a running ``transferlab up`` can be found, so CLI runs on its state dir use its server.

``up`` writes ``$home/up.json`` (its Prefect API URL, whether that API wants a login) and holds
an exclusive ``flock`` on it for as long as it lives: the kernel drops the lock when ``up``
dies, however it dies, so a leftover file of a killed ``up`` is never taken for a live one
(the same liveness test as the run leases in :mod:`pipelines.tracking.liveness`).

A CLI run that finds a live ``up`` on its state dir reports its flow run to that server
instead of starting a temporary one: the run shows live in the Prefect UI, and it skips the
seconds a temporary server takes to start.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipelines.runtime.locks import is_held, publish_locked

UP_FILE = "up.json"


@contextmanager
def announce(home: str | Path, prefect_api_url: str, login: bool) -> Iterator[Path]:
    """Hold ``$home/up.json`` for the life of the block (written whole, then renamed into place)."""
    path = Path(home) / UP_FILE
    data = {"prefect_api_url": prefect_api_url, "login": login, "pid": os.getpid(), "host": socket.gethostname()}
    fd = publish_locked(path, json.dumps(data).encode())
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def running_up(home: str | Path, env: dict[str, str] | None = None) -> str | None:
    """The Prefect API URL of a live ``up`` on ``home`` that this process can use, or None:
    none announced, its holder dead, its API wanting a login this environment lacks
    (``PREFECT_API_AUTH_STRING``), or not answering within a second."""
    env = dict(os.environ) if env is None else env
    path = Path(home) / UP_FILE
    if not is_held(path):  # absent, or left behind by a killed up
        return None
    try:
        data = json.loads(path.read_text())
        url = str(data["prefect_api_url"])
        login = bool(data.get("login"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    auth = env.get("PREFECT_API_AUTH_STRING")
    if login and not auth:
        return None
    request = urllib.request.Request(f"{url.rstrip('/')}/health")
    if login and auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=1.0) as resp:  # noqa: S310 (the URL up announced)
            return url if resp.status == 200 else None
    except OSError:
        return None
