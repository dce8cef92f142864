"""Start ``mlflow server --app-name basic-auth`` with an auth config generated from the environment.

The checks and the INI come from pipelines/serve/auth.py (``transferlab up --auth`` uses the same).

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
  MLFLOW_WORKER_USERNAME / MLFLOW_WORKER_PASSWORD  optional: an ordinary (non-admin) user created
                                (or its password reset to this one) before the server starts;
                                the compose worker logs in as it. Both or neither.
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

# In the image the project is installed; from a checkout, the repository root is one level up.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.serve import auth  # noqa: E402

REQUIRED = (
    "MLFLOW_BACKEND_STORE_URI",
    "MLFLOW_AUTH_DATABASE_URI",
    "MLFLOW_AUTH_ADMIN_USERNAME",
    "MLFLOW_AUTH_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
)
MIN_SECRET_LEN = auth.MIN_SECRET_LEN
DEFAULT_ALLOWED_HOSTS = "mlflow,mlflow:*,localhost,localhost:*,127.0.0.1,127.0.0.1:*"


def _fail(message: str) -> None:
    print(f"mlflow_auth_server: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _default_permission(env: dict[str, str]) -> str:
    try:
        return auth.default_permission(env)
    except ValueError as e:
        _fail(str(e))
        raise


def write_auth_config(env: dict[str, str], directory: Path) -> Path:
    """Write the basic-auth INI (mode 0600) into ``directory`` and return its path."""
    return auth.write_auth_config(env["MLFLOW_AUTH_DATABASE_URI"], env["MLFLOW_AUTH_ADMIN_USERNAME"],
                                  _default_permission(env), directory)


def worker_user(env: dict[str, str]) -> tuple[str, str] | None:
    """The worker's (username, password) when configured; fails on half or weak settings."""
    username, password = env.get("MLFLOW_WORKER_USERNAME"), env.get("MLFLOW_WORKER_PASSWORD")
    if not username and not password:
        return None
    if not username:
        _fail("MLFLOW_WORKER_PASSWORD is set but MLFLOW_WORKER_USERNAME is not")
    if username == env.get("MLFLOW_AUTH_ADMIN_USERNAME"):
        _fail("MLFLOW_WORKER_USERNAME must differ from the admin user (the worker is not an admin)")
    if problem := auth.secret_problem("MLFLOW_WORKER_PASSWORD", password):
        _fail(problem)
    return username, password  # type: ignore[return-value]


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
        if problem := auth.secret_problem(name, env[name]):
            _fail(problem)
    _default_permission(env)  # checked before anything is written
    worker = worker_user(env)
    config = write_auth_config(env, Path(tempfile.mkdtemp(prefix="mlflow-auth-")))
    os.environ["MLFLOW_AUTH_CONFIG_PATH"] = str(config)
    if worker is not None:
        # Before the server: its admin bootstrap is per user name, so this does not disturb it.
        outcome = auth.ensure_user(env["MLFLOW_AUTH_DATABASE_URI"], *worker)
        print(f"mlflow_auth_server: worker user {worker[0]!r} {outcome}", flush=True)
    args = server_argv(env, argv)
    print(
        f"mlflow_auth_server: auth config {config}; starting mlflow server on "
        f"{env.get('MLFLOW_HOST', '0.0.0.0')}:{env.get('MLFLOW_PORT', '5000')}",
        flush=True,
    )
    os.execvp(args[0], args)


if __name__ == "__main__":
    main(sys.argv[1:])
