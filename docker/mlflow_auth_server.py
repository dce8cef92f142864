"""Start ``mlflow server --app-name basic-auth`` with an auth config generated from the environment.

Why a script: MLflow's basic-auth app reads its settings (auth database, default permission)
from an INI file named by ``MLFLOW_AUTH_CONFIG_PATH``; the file that ships inside the wheel points
at a SQLite file in the working directory. This writes a private INI per container start from
environment variables (so the compose file is the single source of the settings), checks that
the secrets are really set, and then ``exec``s the server: it replaces this process, so the
container's stop signal reaches it directly.

The admin password is NOT written to the file: MLflow 3.17 reads ``MLFLOW_AUTH_ADMIN_USERNAME``
and ``MLFLOW_AUTH_ADMIN_PASSWORD`` from the environment, ships no default password, creates the
admin user on first start only, and refuses the legacy ``password1234``.

Environment (required unless a default is shown):
  MLFLOW_BACKEND_STORE_URI      tracking store, e.g. postgresql+psycopg2://user:pw@postgres:5432/mlflow
                                (name the driver: SQLAlchemy 2.1's bare postgresql:// means psycopg 3)
  MLFLOW_AUTH_DATABASE_URI      auth store, e.g. postgresql+psycopg2://user:pw@postgres:5432/mlflow_auth
  MLFLOW_AUTH_ADMIN_USERNAME    admin user created on first start
  MLFLOW_AUTH_ADMIN_PASSWORD    its password (at least 12 characters here)
  MLFLOW_FLASK_SERVER_SECRET_KEY  static key for the auth app's CSRF protection
  MLFLOW_ARTIFACTS_DESTINATION  default /mlartifacts (served by the server: --serve-artifacts)
  MLFLOW_AUTH_DEFAULT_PERMISSION  default READ (what users get on others' experiments)
  MLFLOW_HOST / MLFLOW_PORT     default 0.0.0.0 / 5000
  MLFLOW_ALLOWED_HOSTS          Host headers accepted (MLflow's DNS-rebinding guard); default
                                mlflow (the compose service name) and localhost, any port
  MLFLOW_WORKERS                default 1
Any arguments are passed on to ``mlflow server``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

REQUIRED = (
    "MLFLOW_BACKEND_STORE_URI",
    "MLFLOW_AUTH_DATABASE_URI",
    "MLFLOW_AUTH_ADMIN_USERNAME",
    "MLFLOW_AUTH_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
)
MIN_SECRET_LEN = 12
DEFAULT_ALLOWED_HOSTS = "mlflow,mlflow:*,localhost,localhost:*,127.0.0.1,127.0.0.1:*"


def _fail(message: str) -> None:
    print(f"mlflow_auth_server: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _ini_value(value: str) -> str:
    # configparser's default interpolation treats '%' specially (URL-encoded passwords have it).
    return value.replace("%", "%%")


def _default_permission(env: dict[str, str]) -> str:
    permission = env.get("MLFLOW_AUTH_DEFAULT_PERMISSION", "READ")
    if permission not in {"READ", "EDIT", "MANAGE", "NO_PERMISSIONS"}:
        _fail(f"bad value for MLFLOW_AUTH_DEFAULT_PERMISSION: {permission!r}")
    return permission


def write_auth_config(env: dict[str, str], directory: Path) -> Path:
    """Write the basic-auth INI (mode 0600) into ``directory`` and return its path."""
    permission = _default_permission(env)
    text = (
        "[mlflow]\n"
        f"default_permission = {permission}\n"
        f"database_uri = {_ini_value(env['MLFLOW_AUTH_DATABASE_URI'])}\n"
        f"admin_username = {_ini_value(env['MLFLOW_AUTH_ADMIN_USERNAME'])}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    path = directory / "basic_auth.ini"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def server_argv(env: dict[str, str], extra: list[str]) -> list[str]:
    """The ``mlflow server`` command line for ``env``.

    The backend store URI is not on it: ``mlflow server`` reads MLFLOW_BACKEND_STORE_URI itself,
    and a URI on the command line would show the database password to anyone who can run ``ps``.
    """
    return [
        sys.executable, "-m", "mlflow", "server",
        "--app-name", "basic-auth",
        "--serve-artifacts",
        "--artifacts-destination", env.get("MLFLOW_ARTIFACTS_DESTINATION", "/mlartifacts"),
        "--host", env.get("MLFLOW_HOST", "0.0.0.0"),
        "--port", env.get("MLFLOW_PORT", "5000"),
        "--workers", env.get("MLFLOW_WORKERS", "1"),
        "--allowed-hosts", env.get("MLFLOW_ALLOWED_HOSTS", DEFAULT_ALLOWED_HOSTS),
        *extra,
    ]  # fmt: skip


def main(argv: list[str]) -> None:
    env = dict(os.environ)
    missing = [name for name in REQUIRED if not env.get(name)]
    if missing:
        _fail(f"required environment variable(s) not set: {', '.join(missing)}")
    for name in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        if len(env[name]) < MIN_SECRET_LEN:
            _fail(
                f"{name} is shorter than {MIN_SECRET_LEN} characters; generate one with "
                'python -c "import secrets; print(secrets.token_urlsafe(24))"'
            )
    if env["MLFLOW_AUTH_ADMIN_PASSWORD"] == "password1234":
        _fail("MLFLOW_AUTH_ADMIN_PASSWORD is MLflow's old public default; set a real one")
    _default_permission(env)  # checked before anything is written
    config = write_auth_config(env, Path(tempfile.mkdtemp(prefix="mlflow-auth-")))
    os.environ["MLFLOW_AUTH_CONFIG_PATH"] = str(config)
    args = server_argv(env, argv)
    print(
        f"mlflow_auth_server: auth config {config}; starting mlflow server on "
        f"{env.get('MLFLOW_HOST', '0.0.0.0')}:{env.get('MLFLOW_PORT', '5000')}",
        flush=True,
    )
    os.execvp(args[0], args)


if __name__ == "__main__":
    main(sys.argv[1:])
