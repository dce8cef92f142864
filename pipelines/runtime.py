"""Process-wide settings that must be in place before heavy imports (Prefect, torch)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any


def prepare_environment(cfg: dict[str, Any]) -> None:
    """Point Prefect at the state dir, keep it offline, and quiet chatty libraries.

    Prefect reads its settings from the environment at import time, so this runs before
    ``pipelines.flows`` is imported.
    """
    home = Path(cfg["paths"]["home"])
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
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
