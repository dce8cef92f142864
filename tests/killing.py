"""Harness for kill tests and the chaos bench (not a test module): start ``transferlab run``
as a user would, kill it at a chosen moment, and find every process it left behind.

A run's processes are found in /proc (Linux): those in the CLI's session (it is started
in a session of its own) and those whose environment names the run's state dir (Prefect's
temporary server runs in a session of its own, but inherits ``PREFECT_HOME``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cli_env(home: Path) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO),
           "TRANSFERLAB_HOME": str(home)}
    for name in ("PREFECT_HOME", "PREFECT_API_URL", "MLFLOW_TRACKING_URI", "TRANSFERLAB_TRACKING_URI"):
        env.pop(name, None)  # the state dir's own stores, as for a user
    return env


def start(home: Path, overrides: list[str], log: Path, command: str = "run") -> subprocess.Popen[bytes]:
    """``transferlab <command>`` in a session of its own, stdout and stderr to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "pipelines.cli", command, *overrides], cwd=REPO,
                                env=cli_env(home), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def wait_for(log: Path, pattern: str, proc: subprocess.Popen[bytes], timeout: float = 300.0,
             offset: int = 0) -> bool:
    """Until ``pattern`` (a regex) appears in the log after ``offset``; False if the run
    exits (or the timeout passes) first."""
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")[offset:] if log.exists() else ""
        if rx.search(text):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def _sid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[3])  # state ppid pgrp session


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


def run_processes(home: Path, session: int | None = None) -> list[tuple[int, str]]:
    """Live (non-zombie) processes of a run: in ``session``, or with ``home`` in their
    environment or command line. ``(pid, command line)``."""
    needle = str(home).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if (session is not None and _sid(pid) == session) or needle in cmdline or needle in environ:
            if not _zombie(pid):
                found.append((pid, cmdline.replace(b"\0", b" ").decode(errors="replace")[:160]))
    return found


def wait_gone(home: Path, session: int | None, timeout: float = 30.0) -> tuple[float, list[tuple[int, str]]]:
    """Poll until no process of the run is left; (seconds it took, what is left at the timeout)."""
    t0 = time.monotonic()
    while True:
        left = run_processes(home, session)
        if not left or time.monotonic() - t0 > timeout:
            return time.monotonic() - t0, left


def kill_leftovers(home: Path, session: int | None) -> None:
    """Test cleanup: whatever a failed assertion left running."""
    for pid, _ in run_processes(home, session):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def mlflow_runs(home: Path) -> list[dict[str, str]]:
    """Every run in the state dir's MLflow store: id, status, stage tag, parent, kind."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    out = []
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id], max_results=10000):
            tags = run.data.tags
            out.append({"id": run.info.run_id, "status": run.info.status, "stage": tags.get("transferlab.stage", ""),
                        "parent": tags.get("mlflow.parentRunId", ""), "kind": tags.get("transferlab.kind", ""),
                        "cache": tags.get("transferlab.cache", ""), "name": tags.get("mlflow.runName", "")})
    return out
