"""`transferlab up` as a user runs it: both servers, the deployments, a triggered run, Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import TINY

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class Output:
    """The lines a process prints, collected on a thread so waiting for one never blocks forever."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line)

    def wait_for(self, prefix: str, proc: subprocess.Popen[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(line.startswith(prefix) for line in self.lines):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no line starting {prefix!r}; output:\n{self.text()[-3000:]}")
            time.sleep(0.5)

    def text(self) -> str:
        return "".join(self.lines)


@pytest.mark.slow
def test_up_serves_runs_that_log_to_its_mlflow_server_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    pport, mport = free_port(), free_port()
    env = {**os.environ, "TRANSFERLAB_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    env.pop("PREFECT_HOME")  # conftest's; `up` must put Prefect's state in the state dir
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "up", "--prefect-port", str(pport),
                             "--mlflow-port", str(mport), *TINY], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = Output(proc)
    try:
        out.wait_for("transferlab: ready", proc, timeout_s=300)
        assert f"Prefect UI  http://127.0.0.1:{pport}" in out.text()
        assert f"MLflow UI   http://127.0.0.1:{mport}" in out.text()
        assert (tmp_path / "prefect").is_dir() and (tmp_path / "mlflow.db").exists()

        with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{pport}/api"}):
            with get_client(sync_client=True) as client:
                deployments = {d.name for d in client.read_deployments()}
            assert deployments == {"transfer_learning", "prep", "pretrain", "finetune", "evaluate", "data_efficiency"}
            run = run_deployment("transfer_learning/transfer_learning", timeout=900,
                                 parameters={"label_budget": 24, "overrides": ["finetune.max_epochs=1"]})
            assert run.state is not None and run.state.is_completed(), (run.state, out.text()[-3000:])
            with get_client(sync_client=True) as client:
                artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=["transferlab-summary"]),
                    flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
        assert len(artifacts) == 1
        summary = artifacts[0].data
        assert f"(http://127.0.0.1:{mport}/#/experiments/" in summary  # a link into this MLflow server
        assert "| pretrained |" in summary and "| scratch |" in summary

        client = MlflowClient(f"http://127.0.0.1:{mport}")
        exp = client.get_experiment_by_name("transferlab")
        runs = client.search_runs([exp.experiment_id])
        parent = next(r for r in runs if r.data.tags.get("transferlab.kind") == "pipeline")
        assert parent.info.run_id in summary and parent.info.status == "FINISHED"
        assert {"test/accuracy/pretrained", "test/accuracy/scratch"} <= set(parent.data.metrics)
        assert parent.data.params["finetune.train_examples"] == "24"  # the typed parameter arrived
        assert parent.data.params["finetune.max_epochs"] == "1"  # and the free-form override
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert sorted(r.data.tags["transferlab.stage"] for r in children) == [
            "evaluate", "finetune", "finetune", "prep", "pretrain"]
        assert all("test/accuracy" in r.data.metrics for r in children if r.data.tags["transferlab.stage"] == "finetune")
        assert {"report.md", "config.yaml"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, out.text()[-2000:]
    assert "transferlab: stopped" in out.text()
    assert port_is_free(pport) and port_is_free(mport)  # both servers are gone
