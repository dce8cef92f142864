"""The built-in default, end to end, as a user runs it (slow: minutes on 2 cores)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow


def _run(home: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("transferlab")
    env = {**os.environ, "TRANSFERLAB_HOME": str(home)}
    env.pop("PREFECT_HOME", None)  # as a user would: Prefect state goes under TRANSFERLAB_HOME
    return subprocess.run([str(exe), "run"], capture_output=True, text=True, env=env, timeout=1200)


def test_default_pipeline_shows_transfer_and_reuses_on_second_run(tmp_path: Path) -> None:
    first = _run(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "test accuracy" in first.stdout and "mlflow ui --backend-store-uri" in first.stdout
    assert (tmp_path / "prefect").is_dir()

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("transferlab")
    [parent] = client.search_runs([exp.experiment_id], "tags.`transferlab.kind` = 'pipeline'")
    gain = parent.data.metrics["test/accuracy/pretrained"] - parent.data.metrics["test/accuracy/scratch"]
    assert gain >= 0.10, f"pretrained beats scratch by only {gain:.3f}"

    second = _run(tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    parents = client.search_runs([exp.experiment_id], "tags.`transferlab.kind` = 'pipeline'",
                                 order_by=["attributes.start_time DESC"])
    assert len(parents) == 2
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")
    cache = {r.data.tags["transferlab.stage"]: r.data.tags.get("transferlab.cache") for r in children}
    assert cache["prep"] == "hit" and cache["pretrain"] == "hit"
