"""`transferlab up` as a user runs it: both servers, the deployments, a triggered run, Ctrl-C."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from conftest import TINY
from stack import TransferlabUp


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.mark.slow
def test_up_serves_runs_that_log_to_its_mlflow_server_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # The operator's limit reaches the flow-run processes (TRANSFERLAB_LIMITS), not settable from the UI.
    up = TransferlabUp(tmp_path, ["--max", "pretrain.max_steps=100", *TINY], tmp_path / "up.log")
    with up:
        pport, mport = up.prefect_port, up.mlflow_port
        assert f"Prefect UI  http://127.0.0.1:{pport}" in up.output()
        assert f"MLflow UI   http://127.0.0.1:{mport}" in up.output()
        assert (tmp_path / "prefect").is_dir() and (tmp_path / "mlflow.db").exists()

        with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{pport}/api"}):
            with get_client(sync_client=True) as client:
                deployments = {d.name for d in client.read_deployments()}
            assert deployments == {"transfer_learning", "prep", "pretrain", "finetune", "evaluate", "data_efficiency"}
            run = run_deployment("transfer_learning/transfer_learning", timeout=900,
                                 parameters={"label_budget": 24, "overrides": ["finetune.max_epochs=1"]})
            assert run.state is not None and run.state.is_completed(), (run.state, up.output()[-3000:])
            refused = run_deployment("transfer_learning/transfer_learning", timeout=300, parameters={
                "max_steps": 5000, "overrides": ["finetune.max_epochs=1"]})
            assert refused.state is not None and refused.state.is_failed(), refused.state
            assert refused.state.message == (
                "transferlab: rejected value for 'pretrain.max_steps': 5000 exceeds this service's limit 100 (the "
                "operator raises it with transferlab up/serve --max pretrain.max_steps=N)")
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
        code = up.interrupt()  # what Ctrl-C sends
    assert code == 0, up.output()[-2000:]
    assert "transferlab: stopped" in up.output()
    assert port_is_free(pport) and port_is_free(mport)  # both servers are gone
