"""Logins for servers other machines can reach: secret checks, MLflow's basic-auth config, users.

Shared by ``transferlab up`` off loopback (or with ``--auth``) and the compose stack's MLflow
start script (docker/mlflow_auth_server.py), so both refuse the same weak secrets and write the
same auth config. No Prefect here; MLflow's auth store is imported only where a user is created.

MLflow's basic-auth app reads its settings from an INI file named by ``MLFLOW_AUTH_CONFIG_PATH``
and the admin credentials from ``MLFLOW_AUTH_ADMIN_USERNAME``/``MLFLOW_AUTH_ADMIN_PASSWORD``
(3.17 ships no default password and creates the admin on the first start only). Prefect's server
takes ``PREFECT_SERVER_API_AUTH_STRING`` ("user:password") and its clients
``PREFECT_API_AUTH_STRING``.
"""

from __future__ import annotations

import os
from pathlib import Path

MIN_SECRET_LEN = 12
PERMISSIONS = ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")
GENERATE_HINT = 'python -c "import secrets; print(secrets.token_urlsafe(24))"'
# Public defaults and placeholders people paste: refused whatever their length.
KNOWN_WEAK = {"password1234", "changeme", "change-me", "password", "admin", "secret"}


def secret_problem(name: str, value: str | None) -> str | None:
    """Why ``value`` is not acceptable as the secret ``name`` (None when it is)."""
    if not value:
        return f"{name} is not set"
    if value.lower() in KNOWN_WEAK:
        return f"{name} is a well-known default; set a random one ({GENERATE_HINT})"
    if len(value) < MIN_SECRET_LEN:
        return f"{name} is shorter than {MIN_SECRET_LEN} characters; generate one with {GENERATE_HINT}"
    if len(set(value)) < 6:
        return f"{name} is too repetitive to be a secret; generate one with {GENERATE_HINT}"
    return None


def auth_string_problem(name: str, value: str | None) -> str | None:
    """Why ``value`` is not a usable Prefect basic-auth string "user:password" (None when it is)."""
    if not value:
        return f"{name} is not set"
    user, sep, password = value.partition(":")
    if not sep or not user:
        return f"{name} must be USER:PASSWORD (e.g. admin:<password>)"
    return secret_problem(f"the password in {name}", password)


def default_permission(env: dict[str, str]) -> str:
    permission = env.get("MLFLOW_AUTH_DEFAULT_PERMISSION", "READ")
    if permission not in PERMISSIONS:
        raise ValueError(f"bad value for MLFLOW_AUTH_DEFAULT_PERMISSION: {permission!r} "
                         f"(one of {', '.join(PERMISSIONS)})")
    return permission


def _ini_value(value: str) -> str:
    # configparser's default interpolation treats '%' specially (URL-encoded passwords have it).
    return value.replace("%", "%%")


def write_auth_config(database_uri: str, admin_username: str, permission: str, directory: Path) -> Path:
    """Write MLflow's basic-auth INI (mode 0600) into ``directory`` and return its path.

    The admin password is not in it: MLflow reads ``MLFLOW_AUTH_ADMIN_PASSWORD`` from the
    environment on the first start.
    """
    text = (
        "[mlflow]\n"
        f"default_permission = {permission}\n"
        f"database_uri = {_ini_value(database_uri)}\n"
        f"admin_username = {_ini_value(admin_username)}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    path = directory / "basic_auth.ini"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def ensure_user(database_uri: str, username: str, password: str) -> str:
    """Make ``username`` an ordinary (non-admin) MLflow user with ``password``.

    Returns "created", "updated" (password or admin flag changed to match) or "unchanged".
    Ordinary users may create experiments and registered models (and then own them: MANAGE)
    and read others' at the default permission; they cannot manage users or others' runs.
    This is all the compose worker needs, so it does not log in as the admin.
    """
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(database_uri)  # creates/migrates the auth schema, as the server does
    try:
        if not store.has_user(username, use_primary=True):
            store.create_user(username, password, is_admin=False)
            return "created"
        changed = False
        if not store.authenticate_user(username, password, use_primary=True):
            store.update_user(username, password=password)
            changed = True
        if store.get_user(username).is_admin:
            store.update_user(username, is_admin=False)
            changed = True
        return "updated" if changed else "unchanged"
    finally:
        store.engine.dispose()
