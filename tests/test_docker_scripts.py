"""The scripts the docker image runs: MLflow's auth start script and the healthcheck (no Docker)."""

from __future__ import annotations

import http.server
import importlib.util
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

DOCKER = Path(__file__).resolve().parents[1] / "docker"
GOOD_ENV = {
    "MLFLOW_BACKEND_STORE_URI": "postgresql+psycopg2://u:p@postgres:5432/mlflow",
    "MLFLOW_AUTH_DATABASE_URI": "postgresql+psycopg2://u:p%40ss@postgres:5432/mlflow_auth",
    "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
    "MLFLOW_AUTH_ADMIN_PASSWORD": "a-long-enough-secret",
    "MLFLOW_FLASK_SERVER_SECRET_KEY": "another-long-secret",
}


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, DOCKER / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_start_script(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(DOCKER / "mlflow_auth_server.py")],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"MLFLOW_AUTH_ADMIN_PASSWORD": ""}, "not set: MLFLOW_AUTH_ADMIN_PASSWORD"),
        ({"MLFLOW_FLASK_SERVER_SECRET_KEY": ""}, "not set: MLFLOW_FLASK_SERVER_SECRET_KEY"),
        ({"MLFLOW_AUTH_ADMIN_PASSWORD": "short"}, "MLFLOW_AUTH_ADMIN_PASSWORD is shorter than 12"),
        ({"MLFLOW_AUTH_ADMIN_PASSWORD": "password1234"}, "well-known default"),
        ({"MLFLOW_AUTH_DEFAULT_PERMISSION": "ALL"}, "MLFLOW_AUTH_DEFAULT_PERMISSION"),
    ],
)
def test_start_script_refuses_missing_or_weak_secrets(change: dict[str, str], message: str) -> None:
    result = _run_start_script({**GOOD_ENV, **change})
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1  # one line, no traceback


def test_auth_config_is_private_and_read_back_by_mlflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.server.auth.config import read_auth_config

    script = _load("mlflow_auth_server")
    path = script.write_auth_config(GOOD_ENV, tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "a-long-enough-secret" not in path.read_text()  # the password stays in the env
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(path))
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", GOOD_ENV["MLFLOW_AUTH_ADMIN_PASSWORD"])
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_USERNAME", raising=False)
    config = read_auth_config()
    assert config.database_uri == GOOD_ENV["MLFLOW_AUTH_DATABASE_URI"]  # '%' survived the INI
    assert config.admin_username == "admin"
    assert config.admin_password == GOOD_ENV["MLFLOW_AUTH_ADMIN_PASSWORD"]
    assert config.default_permission == "READ"


def test_server_command_keeps_the_database_password_off_argv() -> None:
    argv = _load("mlflow_auth_server").server_argv(GOOD_ENV, [])
    assert argv[argv.index("--app-name") + 1] == "basic-auth"
    assert not any("postgresql" in arg for arg in argv)


@pytest.fixture
def http_server() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            ok = self.path == "/health" or (
                self.path == "/api/deployments/name/flow/dep"
                and self.headers.get("Authorization") == "Basic dXNlcjpwdw=="  # user:pw
            )
            self.send_response(200 if ok else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _healthcheck(*args: str, env: dict[str, str] | None = None) -> int:
    return subprocess.run(
        [sys.executable, str(DOCKER / "healthcheck.py"), *args],
        env={"PATH": os.environ["PATH"], **(env or {})},
        capture_output=True,
        timeout=60,
    ).returncode


def test_healthcheck_url(http_server: str) -> None:
    assert _healthcheck("url", f"{http_server}/health") == 0
    assert _healthcheck("url", f"{http_server}/nope") == 1
    assert _healthcheck("url", "http://127.0.0.1:9/health") == 1  # nothing listens


def test_healthcheck_deployment_sends_the_auth_string(http_server: str) -> None:
    env = {"PREFECT_API_URL": f"{http_server}/api", "PREFECT_API_AUTH_STRING": "user:pw"}
    assert _healthcheck("deployment", "flow/dep", env=env) == 0
    assert (
        _healthcheck("deployment", "flow/dep", env={**env, "PREFECT_API_AUTH_STRING": "x:y"}) == 1
    )
    assert _healthcheck("deployment", "flow/other", env=env) == 1


def test_worker_user_is_created_as_an_ordinary_user_and_follows_its_password(tmp_path: Path) -> None:
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    from pipelines.serve.auth import ensure_user

    db = f"sqlite:///{tmp_path / 'auth.db'}"
    assert ensure_user(db, "worker", "worker-secret-1234") == "created"
    assert ensure_user(db, "worker", "worker-secret-1234") == "unchanged"
    assert ensure_user(db, "worker", "rotated-secret-5678") == "updated"
    store = SqlAlchemyStore()
    store.init_db(db)
    store.update_user("worker", is_admin=True)  # someone promoted it: the setup takes that back
    assert ensure_user(db, "worker", "rotated-secret-5678") == "updated"
    assert store.authenticate_user("worker", "rotated-secret-5678")
    assert not store.authenticate_user("worker", "worker-secret-1234")
    assert store.get_user("worker").is_admin is False
    store.engine.dispose()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"MLFLOW_WORKER_PASSWORD": "worker-secret-1234"}, "MLFLOW_WORKER_USERNAME is not"),
        ({"MLFLOW_WORKER_USERNAME": "worker"}, "MLFLOW_WORKER_PASSWORD is not set"),
        ({"MLFLOW_WORKER_USERNAME": "worker", "MLFLOW_WORKER_PASSWORD": "short"}, "shorter than 12"),
        ({"MLFLOW_WORKER_USERNAME": "admin", "MLFLOW_WORKER_PASSWORD": "worker-secret-1234"},
         "must differ from the admin"),
    ],
)
def test_start_script_refuses_a_half_or_weak_worker_login(extra: dict[str, str], message: str) -> None:
    result = _run_start_script({**GOOD_ENV, **extra})
    assert result.returncode == 2
    assert message in result.stderr
