"""docker/docker-compose.yml validates, requires its secrets, and wires the services as documented.

No Docker engine is needed: `docker-compose config` (Debian's docker-compose 1.29 here; the
compose v2 plugin works too) interpolates and validates the file without one. The images are not
built here. Missing docker-compose is a failure, not a skip: these tests only run when selected.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.compose]

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker" / "docker-compose.yml"
REQUIRED = {
    "POSTGRES_PASSWORD": "test-pg-secret-123",
    "MLFLOW_ADMIN_PASSWORD": "test-mlflow-secret-123",
    "MLFLOW_FLASK_SECRET_KEY": "test-flask-key-123",
    "PREFECT_AUTH_PASSWORD": "test-prefect-secret-123",
    "MLFLOW_WORKER_PASSWORD": "test-worker-secret-123",
}
SERVICES = {"postgres", "mlflow", "prefect-server", "worker"}


def _compose_exe() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail(
            "docker-compose is not installed; these tests validate docker/docker-compose.yml "
            "with it (Debian/Ubuntu: apt-get install docker-compose)"
        )
    return exe


def _compose(tmp_path: Path, values: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """Run `docker-compose config ...` with exactly ``values`` as the variables.

    An explicit --env-file keeps a developer's docker/.env out of it, and the environment is
    cut down to PATH/HOME so that no stray variable of the caller satisfies a `${VAR:?}`.
    """
    env_file = tmp_path / "test.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    cmd = [_compose_exe(), "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config", *args]
    return subprocess.run(
        cmd,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The compose file as docker-compose resolves it with the test secrets."""
    result = _compose(tmp_path_factory.mktemp("compose"), REQUIRED)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # KEY=VALUE form
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _volumes(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each mount, from short ("src:dst:mode") or long syntax."""
    mounts = []
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            mounts.append((str(v.get("source", "")), str(v["target"])))
        else:
            source, target = v.split(":")[:2]
            mounts.append((source, target))
    return mounts


def _host_ips(service: dict[str, Any]) -> list[str]:
    ips = []
    for p in service.get("ports", []):
        if isinstance(p, dict):
            ips.append(str(p.get("host_ip", "")))
        else:
            parts = str(p).split(":")
            ips.append(parts[0] if len(parts) == 3 else "")
    return ips


def test_config_validates_with_required_variables(tmp_path: Path) -> None:
    result = _compose(tmp_path, REQUIRED, "-q")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_config_fails_naming_each_missing_secret(tmp_path: Path, missing: str) -> None:
    values = {k: v for k, v in REQUIRED.items() if k != missing}
    result = _compose(tmp_path, values, "-q")
    assert result.returncode != 0
    assert f"set {missing} in docker/.env" in result.stderr


def test_empty_secret_is_missing(tmp_path: Path) -> None:
    # `.env.example` ships the keys empty: an unfilled copy must not start anything.
    result = _compose(tmp_path, {**REQUIRED, "MLFLOW_ADMIN_PASSWORD": ""}, "-q")
    assert result.returncode != 0
    assert "MLFLOW_ADMIN_PASSWORD" in result.stderr


def test_services_have_healthchecks_and_wait_for_healthy(config: dict[str, Any]) -> None:
    services = config["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["prefect-server"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for dep in ("mlflow", "prefect-server"):
        assert services["worker"]["depends_on"][dep]["condition"] == "service_healthy"


def test_state_lives_in_named_volumes(config: dict[str, Any]) -> None:
    named = set(config["volumes"])
    expected = {
        "postgres": "/var/lib/postgresql/data",
        "mlflow": "/mlartifacts",
        "worker": "/state",
    }
    for service, target in expected.items():
        mounts = dict((t, s) for s, t in _volumes(config["services"][service]))
        assert mounts.get(target) in named, f"{service}:{target} is not on a named volume"


def test_ports_published_on_loopback_only(config: dict[str, Any]) -> None:
    for name, service in config["services"].items():
        for ip in _host_ips(service):
            assert ip == "127.0.0.1", f"{name} publishes on {ip or 'all interfaces'}"


def test_mlflow_runs_basic_auth_on_postgres(config: dict[str, Any]) -> None:
    mlflow = config["services"]["mlflow"]
    env = _env(mlflow)
    assert mlflow["command"] == ["python", "/app/docker/mlflow_auth_server.py"]
    for key in ("MLFLOW_BACKEND_STORE_URI", "MLFLOW_AUTH_DATABASE_URI"):
        assert env[key].startswith("postgresql+psycopg2://"), env[key]
        assert REQUIRED["POSTGRES_PASSWORD"] in env[key]
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == REQUIRED["MLFLOW_ADMIN_PASSWORD"]
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == REQUIRED["MLFLOW_FLASK_SECRET_KEY"]
    # The start script turns this environment into `mlflow server --app-name basic-auth ...`.
    spec = importlib.util.spec_from_file_location(
        "mlflow_auth_server", ROOT / "docker" / "mlflow_auth_server.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    argv = script.server_argv(env, [])
    assert argv[argv.index("--app-name") + 1] == "basic-auth"
    assert "--serve-artifacts" in argv
    assert argv[argv.index("--artifacts-destination") + 1] == "/mlartifacts"


def test_prefect_server_on_postgres_with_auth(config: dict[str, Any]) -> None:
    server = config["services"]["prefect-server"]
    env = _env(server)
    assert server["command"][:3] == ["prefect", "server", "start"]
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert env["PREFECT_SERVER_API_AUTH_STRING"] == f"admin:{REQUIRED['PREFECT_AUTH_PASSWORD']}"


def test_worker_serves_against_both_servers(config: dict[str, Any]) -> None:
    worker = config["services"]["worker"]
    env = _env(worker)
    server_env = _env(config["services"]["prefect-server"])
    mlflow_env = _env(config["services"]["mlflow"])
    assert worker["command"] == ["transferlab", "serve"]
    assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert env["PREFECT_API_AUTH_STRING"] == server_env["PREFECT_SERVER_API_AUTH_STRING"]
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    # its own ordinary user, which the mlflow service creates; not the admin
    assert env["MLFLOW_TRACKING_USERNAME"] == mlflow_env["MLFLOW_WORKER_USERNAME"] == "worker"
    assert env["MLFLOW_TRACKING_PASSWORD"] == mlflow_env["MLFLOW_WORKER_PASSWORD"]
    assert env["MLFLOW_TRACKING_PASSWORD"] != mlflow_env["MLFLOW_AUTH_ADMIN_PASSWORD"]
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" not in env
    assert env["TRANSFERLAB_HOME"] == "/state"


def test_base_images_default_to_the_official_ones_and_can_be_replaced(tmp_path: Path,
                                                                      config: dict[str, Any]) -> None:
    assert config["services"]["postgres"]["image"] == "postgres:16"
    assert config["services"]["worker"]["build"]["args"]["PYTHON_IMAGE"] == "python:3.11-slim"
    local = {"PYTHON_IMAGE": "transferlab-local/python:3.11-bookworm",
             "POSTGRES_IMAGE": "transferlab-local/postgres:15-bookworm"}
    result = _compose(tmp_path, {**REQUIRED, **local})
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert services["postgres"]["image"] == local["POSTGRES_IMAGE"]
    for name in ("mlflow", "prefect-server", "worker"):
        assert services[name]["build"]["args"]["PYTHON_IMAGE"] == local["PYTHON_IMAGE"]
