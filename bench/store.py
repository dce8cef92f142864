"""What the benchmark scripts share: running the CLI as a user would, and reading its runs back.

The scripts run as ``python bench/<name>.py`` (bench/ is then on sys.path), so they import
this as ``store``.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient


def transferlab(home: Path, command: str, *overrides: str) -> tuple[float, str]:
    """``transferlab <command> <overrides>`` with state in ``home``; wall seconds and stdout.
    Exits with the tail of stderr when the command fails."""
    exe = Path(sys.executable).with_name("transferlab")
    env = {**os.environ, "TRANSFERLAB_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env.pop("PREFECT_HOME", None)  # the state dir's own Prefect home, not a caller's
    t0 = time.perf_counter()
    proc = subprocess.run([str(exe), command, *overrides], env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"transferlab {command} {' '.join(overrides)} failed:\n{proc.stderr[-4000:]}")
    return time.perf_counter() - t0, proc.stdout


def client(home: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{home / 'mlflow.db'}")


def parent_and_children(home: Path, kind: str = "pipeline", newest: bool = True):
    """The newest (or oldest) parent run of ``kind`` (pipeline | sweep) and its child runs."""
    c = client(home)
    exp = c.get_experiment_by_name("transferlab")
    parent = c.search_runs([exp.experiment_id], f"tags.`transferlab.kind` = '{kind}'",
                           order_by=[f"attributes.start_time {'DESC' if newest else 'ASC'}"], max_results=1)[0]
    children = c.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
                             max_results=1000)
    return parent, children


def head_tsv(src: Path, dst: Path, rows: int) -> Path:
    """The header and the first ``rows`` rows of a TSV (a smaller per-epoch validation set)."""
    with open(src, encoding="utf-8") as f:
        dst.write_text("".join(itertools.islice(f, rows + 1)), encoding="utf-8")
    return dst
