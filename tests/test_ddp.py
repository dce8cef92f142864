"""DDP pretraining with 2 CPU processes (gloo) through the real CLI: one run, sane metrics."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_overrides

MAX_STEPS = 12


def _cli(home: Path, command: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipelines.cli", command,
           *tiny_overrides(home, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                           "trainer.precision=32-true", f"pretrain.max_steps={MAX_STEPS}",
                           "pretrain.checkpoint_every_n_steps=6", "pretrain.val_every_n_steps=6")]
    env = {**os.environ, "PREFECT_HOME": str(home / "prefect"), "HF_HUB_OFFLINE": "1"}
    for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "SLURM_PROCID"):
        env.pop(name, None)
    return subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_logs_one_pretrain_run(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    home = tmp_path / "home"
    done = _cli(home, "pretrain")
    assert done.returncode == 0, done.stderr[-3000:]

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("transferlab").experiment_id])
    by_stage = {}
    for r in runs:
        key = r.data.tags.get("transferlab.stage") or r.data.tags.get("transferlab.kind")
        by_stage.setdefault(key, []).append(r)
    assert {k: len(v) for k, v in by_stage.items()} == {"pipeline": 1, "prep": 1, "pretrain": 1}
    run = by_stage["pretrain"][0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == by_stage["pipeline"][0].info.run_id
    assert math.isfinite(run.data.metrics["val/loss"]) and run.data.metrics["val/loss"] > 0
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) >= 2
    assert run.data.metrics["carbon/emissions_kg"] > 0

    entries = [p for p in (home / "cache" / "pretrain").iterdir()]
    assert len(entries) == 1 and not entries[0].name.startswith(".")  # published, no work dir left
    rec = json.loads((entries[0] / "record.json").read_text())
    assert rec["steps"] == MAX_STEPS and rec["run_id"] == run.info.run_id
    assert (entries[0] / "hf_model" / "model.safetensors").exists()
    assert not (home / "runs" / "norun-prep").exists()  # rank 1 wrote no run files


@pytest.mark.slow
def test_ddp_run_pretrains_on_two_ranks_then_finetunes_in_rank_zero(tmp_path: Path) -> None:
    """`transferlab run trainer=ddp`: the other rank exits after pretraining; rank 0 goes on
    single-device (the process group is torn down first, so nothing waits for rank 1)."""
    from mlflow.tracking import MlflowClient

    home = tmp_path / "home"
    done = _cli(home, "run")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "test accuracy" in done.stdout

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("transferlab").experiment_id])
    stages = sorted(r.data.tags.get("transferlab.stage") or r.data.tags["transferlab.kind"] for r in runs)
    # pretrained, scratch and tfidf fine-tunes (tfidf is a default init)
    assert stages == ["evaluate", "finetune", "finetune", "finetune", "pipeline", "prep", "pretrain"]
    assert all(r.info.status == "FINISHED" for r in runs)
    tuned = [r for r in runs if r.data.tags.get("transferlab.stage") == "finetune"]
    assert all(0.0 <= r.data.metrics["test/accuracy"] <= 1.0 for r in tuned)
