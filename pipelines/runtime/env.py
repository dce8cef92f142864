"""Process-wide settings that must be in place before heavy imports (Prefect, torch)."""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
from pathlib import Path


def prepare_environment(home_dir: str | Path) -> None:
    """Point Prefect at the state dir (``paths.home``), keep it offline, and quiet chatty libraries.

    Prefect reads its settings from the environment at import time, so this runs before
    ``pipelines.flows`` is imported.
    """
    home = Path(home_dir)
    home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    # Nothing leaves the machine on its own: Prefect's analytics and MLflow's telemetry (a
    # background thread that fetches its config from the internet) are off unless set.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    # Our own logger goes through Prefect's handlers: the terminal and the Prefect UI.
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "transferlab")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_libraries()


def quiet_libraries() -> None:
    # MLflow prints two "View run at" lines per run it ends on an http server; with a run per
    # stage they drown the progress lines (the Prefect summary links the parent run).
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    logging.getLogger("transferlab").setLevel(logging.INFO)
    for name in ("codecarbon", "alembic", "mlflow", "lightning", "lightning.pytorch", "lightning.fabric",
                 "httpx", "urllib3", "datasets", "filelock"):
        logging.getLogger(name).setLevel(logging.WARNING if name != "codecarbon" else logging.ERROR)
    # Progress bars off and transformers at errors only. The libraries read these variables when
    # imported, so a run that never imports them (a cached rerun) does not pay seconds for it;
    # one imported before this call is told directly.
    os.environ.update(HF_HUB_DISABLE_PROGRESS_BARS="1", HF_DATASETS_DISABLE_PROGRESS_BARS="1",
                      TRANSFORMERS_VERBOSITY="error")
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()
    if "transformers" in sys.modules:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()


def prepare_prefect_db() -> bool:
    """Bring Prefect's sqlite database to the installed Prefect's schema, under a lock,
    before a temporary server starts; True when it is there (the server need not migrate).

    Each ``transferlab run`` starts its own temporary Prefect server on the state dir's
    database, and each server migrates a database it finds behind. Several starting
    together on a new state dir (or after a Prefect upgrade) run the same migrations at
    once; the losers exit ("Online migration expected to match one row") and Prefect
    retries them on another port after a 90-line traceback. Migrating here, under an
    exclusive ``flock`` next to the database, leaves them nothing to do. A database already
    at the schema's head costs one sqlite read (and no Prefect import, when the environment
    alone says where it is).
    """
    db = _prefect_sqlite_db()
    if db is None:
        return False
    head = prefect_schema_head()  # None: unknown, so only a database without a schema is ours to create
    revision = _schema_revision(db)
    if revision is not None and (head is None or revision == head):
        return revision == head
    from pipelines.runtime.locks import exclusive

    with exclusive(db.with_name(db.name + ".lock")):
        revision = _schema_revision(db)
        if revision is not None and (head is None or revision == head):  # migrated by another run meanwhile
            return revision == head
        import asyncio

        from prefect.server.database import provide_database_interface

        verb = "creating" if revision is None else "migrating"
        logging.getLogger("transferlab").info("prefect: %s the database %s", verb, db)
        asyncio.run(provide_database_interface().create_db())
    return head is not None and _schema_revision(db) == head


def prefect_schema_head() -> str | None:
    """The alembic head of the installed Prefect's sqlite migrations, read from their files
    (alembic itself imports every migration: 2 s); None when there is not exactly one."""
    from importlib.util import find_spec

    spec = find_spec("prefect")
    if spec is None or spec.origin is None:
        return None
    versions = Path(spec.origin).parent / "server" / "database" / "_migrations" / "versions" / "sqlite"
    revisions, parents = set(), set()
    for path in versions.glob("*.py"):
        text = path.read_text(errors="replace")
        revision = _REVISION.search(text)
        if revision is None:
            continue
        revisions.add(revision.group(1))
        for line in _DOWN_REVISION.findall(text):
            parents.update(_REVISION_ID.findall(line))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


_REVISION = re.compile(r"^revision\s*=\s*[\"']([0-9a-f]+)[\"']", re.M)
_DOWN_REVISION = re.compile(r"^down_revision\s*=\s*(.*)$", re.M)
_REVISION_ID = re.compile(r"[\"']([0-9a-f]+)[\"']")


SQLITE_PREFIX = "sqlite+aiosqlite:///"


def prefect_settings_files() -> list[Path]:
    """The files besides the environment that could set Prefect's settings (3.8's sources: a
    profiles file, ``.env``, ``prefect.toml``, ``pyproject.toml``'s ``[tool.prefect]``)."""
    found = []
    profiles = os.environ.get("PREFECT_PROFILES_PATH") or str(Path(os.environ.get("PREFECT_HOME", "~/.prefect"))
                                                              / "profiles.toml")
    for path, marker in ((Path(profiles).expanduser(), ""), (Path("prefect.toml"), ""), (Path(".env"), "PREFECT_"),
                         (Path("pyproject.toml"), "[tool.prefect")):
        try:
            if path.is_file() and marker in path.read_text(errors="replace"):
                found.append(path)
        except OSError:  # unreadable: Prefect would not read it either
            pass
    return found


def prefect_settings_needed() -> bool:
    """Whether Prefect's own settings must be read (importing Prefect: a second) to know its
    API and database: Prefect is imported already, a settings file could set them, or the
    environment builds the database URL from parts. Otherwise the environment says it all,
    and a cached rerun launches its server before Prefect is imported."""
    return ("prefect" in sys.modules or bool(prefect_settings_files())
            or any(k.startswith(("PREFECT_SERVER_DATABASE_", "PREFECT_API_DATABASE_")) for k in os.environ))


def _prefect_sqlite_db() -> Path | None:
    """The sqlite file Prefect's server uses (None for another database)."""
    if prefect_settings_needed():
        from prefect.settings import get_current_settings

        secret = get_current_settings().server.database.connection_url
        url = secret.get_secret_value() if secret is not None else ""
    else:  # Prefect's default: <home>/prefect.db
        url = SQLITE_PREFIX + str(Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser() / "prefect.db")
    if not url.startswith(SQLITE_PREFIX) or ":memory:" in url:
        return None
    return Path(url.removeprefix(SQLITE_PREFIX))


def _schema_revision(db: Path) -> str | None:
    """The alembic revision Prefect's migrations left in ``db``; None for none (or no file)."""
    import sqlite3

    if not db.is_file():
        return None
    try:
        with sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=60) as conn:
            rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        return None
    return rows[0][0] if len(rows) == 1 else None


def worker_name() -> str:
    """Where this process runs: ``host:pid``, plus the Dask worker's name inside one. Tagged on
    every stage run, so a sweep spread over machines says which one ran each point."""
    name = f"{socket.gethostname()}:{os.getpid()}"
    if "distributed" in sys.modules:  # only a Dask worker has it imported before a stage runs
        from distributed import get_worker

        try:
            return f"{name} ({get_worker().name})"
        except ValueError:  # not inside a worker
            pass
    return name
