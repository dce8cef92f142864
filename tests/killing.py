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


def zombie(pid: int) -> bool:
    """Gone or a zombie: ``pid`` runs no more."""
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
            if not zombie(pid):
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
    """Every run in the state dir's MLflow store: id, status, stage tag, parent, kind.

    Read with sqlite3 and closed at once: a test process holding an MLflow client (and its
    connection pool) on the store of a run in progress is not what a user's machine has.
    """
    import sqlite3
    from contextlib import closing

    db = home / "mlflow.db"
    if not db.exists():
        return []
    with closing(sqlite3.connect(db, timeout=30)) as conn:
        runs = conn.execute("select run_uuid, status from runs where lifecycle_stage = 'active'").fetchall()
        tags: dict[str, dict[str, str]] = {}
        for run, key, value in conn.execute("select run_uuid, key, value from tags"):
            tags.setdefault(run, {})[key] = value
    out = []
    for run_id, status in runs:
        t = tags.get(run_id, {})
        out.append({"id": run_id, "status": status, "stage": t.get("transferlab.stage", ""),
                    "parent": t.get("mlflow.parentRunId", ""), "kind": t.get("transferlab.kind", ""),
                    "cache": t.get("transferlab.cache", ""), "name": t.get("mlflow.runName", "")})
    return out


# Where a run was when it was killed: the last of these markers in its log.
_MARKERS = [
    (r"pipeline: MLflow parent run", "prep"),
    (r"transferlab - prep:", "prep"),
    (r"Task run 'prep' - Finished", "MLflow writes after prep"),
    (r"transferlab - pretrain:", "pretrain"),
    (r"Task run 'pretrain' - Finished", "MLflow writes after pretrain"),
    (r"transferlab - finetune\[pretrained\]:", "finetune[pretrained]"),
    (r"Task run 'finetune\[pretrained\]' - Finished", "MLflow writes after finetune[pretrained]"),
    (r"transferlab - finetune\[scratch\]:", "finetune[scratch]"),
    (r"Task run 'finetune\[scratch\]' - Finished", "MLflow writes after finetune[scratch]"),
    (r"transferlab - evaluate:", "evaluate"),
    (r"Task run 'evaluate' - Finished", "parent run's MLflow writes"),
    (r"Flow run '.*' - Finished", "summary"),
]


def stage_at_kill(text: str) -> str:
    where, pos = "startup", -1
    for pattern, name in _MARKERS:
        for m in re.finditer(pattern, text):
            if m.start() >= pos:
                where, pos = name, m.start()
    return where


def finished_records(home: Path) -> dict[str, str]:
    """Every finished cache entry's ``record.json`` text, by path (record.json is written last)."""
    return {str(p.relative_to(home)): p.read_text() for p in sorted((home / "cache").glob("*/[!.]*/record.json"))}


def pretrain_in_progress(home: Path) -> str | None:
    """The MLflow run id a killed pretraining's work dir will resume into, if any."""
    import json

    for state in (home / "cache" / "pretrain").glob(".partial-*/state.json"):
        return json.loads(state.read_text()).get("run_id")
    return None


def prefect_unfinished(home: Path) -> list[str]:
    """Flow runs the state dir's Prefect database still shows Running or Pending."""
    import sqlite3
    from contextlib import closing

    db = home / "prefect" / "prefect.db"
    if not db.exists():
        return []
    with closing(sqlite3.connect(db, timeout=30)) as conn:
        rows = conn.execute("select name, state_type from flow_run where state_type in "
                            "('RUNNING', 'PENDING', 'SCHEDULED')").fetchall()
    return [f"{name} {state}" for name, state in rows]


def chaos_trial(home: Path, overrides: list[str], logs: Path, kill_after_s: float | None = None,
                kill_on: str | None = None, rerun_timeout_s: float = 1200.0,
                delay_s: float = 0.0) -> dict[str, object]:
    """Start a run on ``home``, ``kill -9`` it (after ``kill_after_s``, or ``delay_s`` after
    the first log line matching ``kill_on``), rerun it, and check what the issue asks of a kill.

    Returns ``{"stage": where the kill landed, "problems": [...], ...}``; no problems means
    the kill was survived.
    """
    logs.mkdir(parents=True, exist_ok=True)
    first, second = logs / "killed.log", logs / "rerun.log"
    problems: list[str] = []
    proc = start(home, overrides, first)
    try:
        if kill_on is not None:
            landed = wait_for(first, kill_on, proc, timeout=rerun_timeout_s)
            if landed and delay_s:
                try:
                    proc.wait(timeout=delay_s)
                    landed = False
                except subprocess.TimeoutExpired:
                    pass
        else:
            deadline = time.monotonic() + (kill_after_s or 0.0)
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.02)
            landed = proc.poll() is None
        if landed:
            proc.kill()
        proc.wait()
        text = first.read_text(errors="replace")
        stage = stage_at_kill(text) if landed else "finished before the kill"
        gone_s, left = wait_gone(home, proc.pid, 30.0)
        if left:
            problems.append(f"processes outlived the kill by 30 s: {left}")
    finally:
        kill_leftovers(home, proc.pid)
    records = finished_records(home)
    resume_run = pretrain_in_progress(home)

    rerun = start(home, overrides, second)
    try:
        rc = rerun.wait(timeout=rerun_timeout_s)
    except subprocess.TimeoutExpired:
        rc = None
        problems.append(f"rerun still running after {rerun_timeout_s:.0f} s")
    finally:
        _, left_after = wait_gone(home, rerun.pid, 30.0)
        kill_leftovers(home, rerun.pid)
    rerun_text = second.read_text(errors="replace")
    if rc != 0:
        problems.append(f"rerun exited {rc}: {rerun_text[-1500:]}")
    if left_after:
        problems.append(f"processes outlived the rerun: {left_after}")
    after = finished_records(home)
    for path, text_before in records.items():
        if after.get(path) != text_before:
            problems.append(f"finished stage recomputed: {path}")
    if resume_run is not None:
        pretrain = [json_load(t) for p, t in after.items() if p.startswith("cache/pretrain/")]
        if not any(r.get("run_id") == resume_run for r in pretrain):
            problems.append(f"pretraining did not resume into MLflow run {resume_run}")
        if "pretrain: resuming" not in rerun_text:
            problems.append("rerun did not log a pretraining resume")
    running = [f"{r['name']} {r['id']}" for r in mlflow_runs(home) if r["status"] == "RUNNING"]
    if running:
        problems.append(f"MLflow runs left RUNNING: {running}")
    unfinished = prefect_unfinished(home)
    if unfinished:
        problems.append(f"Prefect flow runs left unfinished: {unfinished}")
    return {"stage": stage, "problems": problems, "gone_s": gone_s, "resumed_pretrain": resume_run is not None,
            "finished_before_rerun": len(records)}


def json_load(text: str) -> dict[str, object]:
    import json

    return json.loads(text)
