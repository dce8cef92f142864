"""A CLI run finds a live `transferlab up` on its state dir (pipelines/serve/announce.py), and
never a dead one's leftover file, a server that does not answer, or one it cannot log in to."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipelines.serve.announce import UP_FILE, announce, running_up

AUTH = "admin:a-long-enough-secret"


REQUIRED: list[str] = []  # non-empty: the stand-in API wants the login


@pytest.fixture
def health_server() -> Iterator[str]:
    """A stand-in Prefect API: /api/health answers 200, or 401 without the login when REQUIRED."""
    REQUIRED.clear()
    required = REQUIRED

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            wanted = "Basic " + base64.b64encode(AUTH.encode()).decode()
            ok = self.path == "/api/health" and (not required or self.headers.get("Authorization") == wanted)
            self.send_response(200 if ok else 401)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api"
    finally:
        server.shutdown()


def test_nothing_announced_is_no_server(tmp_path: Path) -> None:
    assert running_up(tmp_path, {}) is None


def test_a_live_up_is_found_and_its_file_goes_when_it_ends(tmp_path: Path, health_server: str) -> None:
    with announce(tmp_path, health_server, login=False) as path:
        assert json.loads(path.read_text())["prefect_api_url"] == health_server
        assert running_up(tmp_path, {}) == health_server
    assert not (tmp_path / UP_FILE).exists() and running_up(tmp_path, {}) is None


def test_the_file_of_a_killed_up_is_ignored(tmp_path: Path, health_server: str) -> None:
    """Left behind with nobody holding its lock (what SIGKILL leaves), even with a server answering."""
    (tmp_path / UP_FILE).write_text(json.dumps({"prefect_api_url": health_server, "login": False}))
    assert running_up(tmp_path, {}) is None


def test_an_up_that_does_not_answer_is_not_used(tmp_path: Path) -> None:
    with announce(tmp_path, "http://127.0.0.1:9/api", login=False):  # discard port: nothing answers
        assert running_up(tmp_path, {}) is None


def test_a_server_with_logins_is_used_only_with_the_login(tmp_path: Path, health_server: str) -> None:
    REQUIRED.append("login")
    with announce(tmp_path, health_server, login=True):
        assert running_up(tmp_path, {}) is None  # no login in this environment: a temporary server instead
        assert running_up(tmp_path, {"PREFECT_API_AUTH_STRING": "admin:wrong-password-here"}) is None
        assert running_up(tmp_path, {"PREFECT_API_AUTH_STRING": AUTH}) == health_server
