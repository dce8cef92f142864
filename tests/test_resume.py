"""Kill a pretraining run with SIGKILL, run the same command again: it resumes.

The real CLI in a subprocess, as a user would run it; assertions on the MLflow store and
the cache afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import tiny_overrides

MAX_STEPS = 60
EVERY = 10


def _command(home: Path) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", "pretrain",
            *tiny_overrides(home, f"pretrain.max_steps={MAX_STEPS}", f"pretrain.checkpoint_every_n_steps={EVERY}",
                            "pretrain.val_every_n_steps=10", "pretrain.keep_checkpoints=2")]


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "PREFECT_HOME": str(home / "prefect"), "HF_HUB_OFFLINE": "1"}


def _partial_dir(home: Path) -> Path | None:
    found = list((home / "cache" / "pretrain").glob(".partial-*")) if (home / "cache" / "pretrain").is_dir() else []
    return found[0] if found else None


@pytest.mark.slow
def test_killed_pretraining_resumes_same_run_to_max_steps(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    home = tmp_path / "home"
    repo = Path(__file__).resolve().parents[1]
    # Its own session, so the kill takes the Prefect server child too, like a lost node.
    first = subprocess.Popen(_command(home), cwd=repo, env=_env(home), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    partial = None
    try:
        while time.monotonic() < deadline:
            partial = _partial_dir(home)
            if (partial is not None and list((partial / "checkpoints").glob("step=*.ckpt"))
                    and list((partial / "carbon").glob("attempt-*.json"))):
                break
            assert first.poll() is None, "first attempt ended before it wrote a checkpoint"
            time.sleep(0.2)
        else:
            pytest.fail("no checkpoint within 240 s")
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert partial is not None
    state = json.loads((partial / "state.json").read_text())
    first_run_id = state["run_id"]
    killed_at = max(int(p.stem.split("=")[1]) for p in (partial / "checkpoints").glob("step=*.ckpt"))
    assert killed_at < MAX_STEPS
    first_kg = sum(json.loads(p.read_text())["emissions_kg"] for p in (partial / "carbon").glob("attempt-*.json"))

    second = subprocess.run(_command(home), cwd=repo, env=_env(home), capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from" in second.stdout + second.stderr

    assert _partial_dir(home) is None, "work dir left behind after success"
    finals = [p for p in (home / "cache" / "pretrain").iterdir() if not p.name.startswith(".")]
    assert len(finals) == 1
    rec = json.loads((finals[0] / "record.json").read_text())
    assert rec["steps"] == MAX_STEPS and rec["run_id"] == first_run_id

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("transferlab")
    runs = client.search_runs([exp.experiment_id])
    pretrain_runs = [r for r in runs if r.data.tags.get("transferlab.stage") == "pretrain"]
    assert [r.info.run_id for r in pretrain_runs] == [first_run_id]
    run = pretrain_runs[0]
    assert run.info.status == "FINISHED"
    # The rerun's pipeline is the parent now; the killed one is remembered and marked KILLED.
    parents = {r.info.run_id: r for r in runs if r.data.tags.get("transferlab.kind") == "pipeline"}
    assert len(parents) == 2 and run.data.tags["mlflow.parentRunId"] in parents
    earlier = run.data.tags["transferlab.earlier_parent_runs"]
    assert earlier in parents and earlier != run.data.tags["mlflow.parentRunId"]
    assert parents[earlier].info.status == "KILLED"
    assert run.data.tags["transferlab.attempts"] == "2"
    # One step axis across both attempts, reaching the end.
    history = [m.step for m in client.get_metric_history(first_run_id, "train/loss")]
    assert max(history) >= MAX_STEPS - 2
    # Resumed, not restarted: steps before the resume point were trained (and logged) once;
    # a rerun from step 0 in the same run would log each of them twice.
    before = [s for s in history if s < killed_at]
    assert before and len(before) == len(set(before))
    # Lightning logs a validation inside step N's batch at step N - 1.
    val_steps = {m.step for m in client.get_metric_history(first_run_id, "val/loss")}
    assert max(val_steps) >= MAX_STEPS - 1
    # Carbon of both attempts.
    assert run.data.metrics["carbon/emissions_kg"] >= first_kg > 0
    # prep was not redone.
    prep_runs = sorted((r for r in runs if r.data.tags.get("transferlab.stage") == "prep"),
                       key=lambda r: r.info.start_time)
    assert [r.data.tags["transferlab.cache"] for r in prep_runs] == ["miss", "hit"]
