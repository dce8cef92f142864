"""`transferlab up` as a user runs it: both servers, the deployments, a triggered run, Ctrl-C."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
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
            "evaluate", "finetune", "finetune", "finetune", "prep", "pretrain"]  # pretrained, scratch, tfidf
        assert all("test/accuracy" in r.data.metrics
                   for r in children if r.data.tags["transferlab.stage"] == "finetune")
        assert {"report.md", "config.yaml"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}

        # A CLI run on the same state dir reports to up's Prefect server (live in its UI), not
        # to a temporary server of its own.
        with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{pport}/api"}):
            with get_client(sync_client=True) as prefect:
                before = len(prefect.read_flow_runs())
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
        cli = subprocess.run([str(Path(sys.executable).with_name("transferlab")), "run", *TINY,
                              f"paths.home={tmp_path}", "finetune.inits=[tfidf]"], env=env, capture_output=True,
                             text=True, timeout=600)
        assert cli.returncode == 0, cli.stderr[-3000:]
        assert f"reporting to the Prefect server of `transferlab up` at http://127.0.0.1:{pport}/api" in cli.stderr
        with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{pport}/api"}):
            with get_client(sync_client=True) as prefect:
                assert len(prefect.read_flow_runs()) == before + 1
        code = up.interrupt()  # what Ctrl-C sends
    assert code == 0, up.output()[-2000:]
    assert "transferlab: stopped" in up.output()
    assert port_is_free(pport) and port_is_free(mport)  # both servers are gone


@pytest.mark.slow
def test_up_with_logins_refuses_anonymous_requests_and_its_runs_log_in(tmp_path: Path) -> None:
    """`--auth` takes the path every non-loopback --host takes, on 127.0.0.1 (tests never bind
    beyond loopback): both servers answer 401 without the login, the runner and the flow runs
    it starts log in with it, and a second start with another MLflow password is refused."""
    import base64
    import urllib.error
    import urllib.request

    from mlflow.tracking import MlflowClient
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    prefect_login, mlflow_password = "ops:Prefect-pw-7f3k9q", "MLflow-pw-2x8m4z"
    logins = {"PREFECT_SERVER_API_AUTH_STRING": prefect_login, "MLFLOW_AUTH_ADMIN_PASSWORD": mlflow_password}

    def status(url: str, login: str | None = None, body: bytes | None = None) -> int:
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        if login:
            req.add_header("Authorization", "Basic " + base64.b64encode(login.encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    up = TransferlabUp(tmp_path, TINY, tmp_path / "up.log", args=["--auth"], env=logins)
    with up:
        flows = f"{up.prefect_url}/api/flow_runs/filter"
        experiments = f"{up.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=5"
        assert status(flows, body=b"{}") == 401 and status(experiments) == 401
        assert status(flows, "ops:wrong-password-1", b"{}") == 401
        assert status(experiments, "admin:wrong-password-1") == 401
        assert status(flows, prefect_login, b"{}") == 200
        assert status(experiments, f"admin:{mlflow_password}") == 200
        with temporary_settings({PREFECT_API_URL: f"{up.prefect_url}/api", PREFECT_API_AUTH_STRING: prefect_login}):
            run = run_deployment("transfer_learning/transfer_learning", timeout=900,
                                 parameters={"label_budget": 24, "overrides": ["finetune.max_epochs=1"]})
        assert run.state is not None and run.state.is_completed(), (run.state, up.output()[-3000:])
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = "admin", mlflow_password
        try:
            client = MlflowClient(up.mlflow_url)
            runs = client.search_runs([client.get_experiment_by_name("transferlab").experiment_id])
        finally:
            del os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]
        parent = next(r for r in runs if r.data.tags.get("transferlab.kind") == "pipeline")
        assert parent.info.status == "FINISHED" and len(runs) == 7  # parent, prep, pretrain, 3 inits, evaluate
        assert up.interrupt() == 0, up.output()[-2000:]
    assert (tmp_path / "mlflow-auth.db").exists()

    # The admin exists now with that password: another one is refused, in one line.
    again = TransferlabUp(tmp_path, TINY, tmp_path / "up2.log", args=["--auth"],
                          env={**logins, "MLFLOW_AUTH_ADMIN_PASSWORD": "Another-pw-9v5n1c"})
    with pytest.raises(RuntimeError):
        again.__enter__()
    assert "MLFLOW_AUTH_ADMIN_PASSWORD is not the password of MLflow user 'admin'" in again.output()
    assert again.proc is not None and again.proc.returncode == 2
