"""Process-wide settings that must be in place before heavy imports (Prefect, torch)."""

from __future__ import annotations

import logging
import os
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
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
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


def prepare_prefect_db() -> None:
    """Create Prefect's sqlite database once, under a lock, before a temporary server starts.

    Each ``transferlab run`` starts its own temporary Prefect server on the state dir's
    database, and each server migrates a database it finds behind. Several starting
    together on a new state dir run the same migrations at once; the losers exit ("Online
    migration expected to match one row") and Prefect retries them on another port after
    a 90-line traceback. Migrating here, under an exclusive ``flock`` next to the database,
    leaves them nothing to do. A database that has its schema already costs one sqlite read.
    """
    if os.environ.get("PREFECT_API_URL"):  # a running server owns its database
        return
    from prefect.settings import get_current_settings

    secret = get_current_settings().server.database.connection_url
    url = secret.get_secret_value() if secret is not None else ""
    prefix = "sqlite+aiosqlite:///"
    if not url.startswith(prefix) or ":memory:" in url:
        return
    db = Path(url.removeprefix(prefix))
    if _has_schema(db):
        return
    from pipelines.runtime.locks import exclusive

    with exclusive(db.with_name(db.name + ".lock")):
        if _has_schema(db):  # another run created it while we waited
            return
        import asyncio

        from prefect.server.database import provide_database_interface

        logging.getLogger("transferlab").info("prefect: creating the database %s", db)
        asyncio.run(provide_database_interface().create_db())


def _has_schema(db: Path) -> bool:
    """Whether Prefect's migrations have run on ``db`` (alembic recorded a revision)."""
    import sqlite3

    if not db.is_file():
        return False
    try:
        with sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=60) as conn:
            return bool(conn.execute("SELECT version_num FROM alembic_version").fetchall())
    except sqlite3.Error:
        return False


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
