"""The shared-server topology without Docker: PostgreSQL behind both MLflow and Prefect.

One throwaway Debian PostgreSQL cluster (databases ``mlflow`` and ``prefect``), an MLflow
tracking server with proxied artifacts and a Prefect server, all real processes on free
ports, started once for the module. The first test proves the servers work on
PostgreSQL; the others run ``transferlab serve`` against them, trigger the deployed
pipeline through the Prefect API, and read its results back through MLflow's REST client.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen
from typing import Any
from uuid import UUID

import pytest
from conftest import TINY
from stack import (
    PYTHON,
    PostgresCluster,
    free_port,
    log_tail,
    start_mlflow_server,
    start_prefect_server,
    start_process,
    stop,
    wait_http,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

REPO = Path(__file__).resolve().parent.parent
SERVER_TIMEOUT_S = 240  # both servers, on 2 shared cores, with migrations on an empty database
DEPLOYMENT = "transfer_learning/transfer_learning"
FLOW_RUN_TIMEOUT_S = 900


@dataclass
class Stack:
    """The running servers of this module and where their logs are."""

    pg: PostgresCluster
    mlflow_url: str
    prefect_api: str
    logs: Path
    artifacts: Path
    startup_s: dict[str, float] = field(default_factory=dict)
    procs: dict[str, Popen[bytes]] = field(default_factory=dict)

    def tails(self) -> str:
        return "\n".join(f"--- {name} log ---\n{log_tail(p.log_path, 40)}"  # type: ignore[attr-defined]
                         for name, p in self.procs.items())


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """PostgreSQL + MLflow server + Prefect server, stopped in teardown whatever happened."""
    root = tmp_path_factory.mktemp("pgstack")
    logs = root / "logs"
    pg = PostgresCluster(["mlflow", "prefect"], log_path=logs / "postgres.log")
    procs: dict[str, Popen[bytes]] = {}
    try:
        t0 = time.monotonic()
        pg.start()
        startup = {"postgres": time.monotonic() - t0}
        mport, pport = free_port(), free_port()
        t0 = time.monotonic()
        # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; MLflow's extra ships psycopg2.
        procs["mlflow"] = start_mlflow_server(mport, pg.url("mlflow", "psycopg2"), root / "mlartifacts",
                                              logs / "mlflow.log")
        procs["prefect"] = start_prefect_server(pport, root / "prefect", pg.url("prefect", "asyncpg"),
                                                logs / "prefect.log")
        st = Stack(pg, f"http://127.0.0.1:{mport}", f"http://127.0.0.1:{pport}/api", logs,
                   root / "mlartifacts", startup, procs)
        wait_http(f"{st.mlflow_url}/health", SERVER_TIMEOUT_S, procs["mlflow"])
        startup["mlflow"] = time.monotonic() - t0
        wait_http(f"{st.prefect_api}/health", SERVER_TIMEOUT_S, procs["prefect"])
        startup["prefect"] = time.monotonic() - t0
        print(f"\nstartup seconds (servers started together): {startup}")
        yield st
    finally:
        for proc in procs.values():
            stop(proc)
        pg.stop()


@pytest.fixture(scope="module")
def prefect_client(stack: Stack) -> Iterator[Any]:
    """A sync Prefect client bound to this module's server (not the session's test harness)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: stack.prefect_api}):
        with get_client(sync_client=True) as client:
            yield client


def _pg_rows(stack: Stack, db: str, sql: str) -> list[tuple[Any, ...]]:
    import psycopg2

    with psycopg2.connect(stack.pg.url(db)) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def test_servers_run_on_postgres(stack: Stack, prefect_client: Any, tmp_path: Path) -> None:
    """MLflow (psycopg2) and Prefect (asyncpg) migrate and serve on PostgreSQL."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=stack.mlflow_url)
    exp = client.create_experiment("pg-smoke")
    run = client.create_run(exp).info
    assert run.artifact_uri.startswith("mlflow-artifacts:"), run.artifact_uri  # proxied, not a local path
    client.log_metric(run.run_id, "loss", 0.25, step=3)
    client.log_text(run.run_id, "hello through the server", "notes/hello.txt")
    client.set_terminated(run.run_id)

    history = client.get_metric_history(run.run_id, "loss")
    assert [(m.value, m.step) for m in history] == [(0.25, 3)]
    assert [f.path for f in client.list_artifacts(run.run_id, "notes")] == ["notes/hello.txt"]
    local = client.download_artifacts(run.run_id, "notes/hello.txt", str(tmp_path))
    assert Path(local).read_text() == "hello through the server"
    # The bytes went to the server's artifact store, and the run rows to PostgreSQL.
    assert list(stack.artifacts.rglob("hello.txt")), "artifact not under the server's --artifacts-destination"
    experiments = _pg_rows(stack, "mlflow", f"select name from experiments where experiment_id = {int(exp)}")
    assert experiments == [("pg-smoke",)]
    assert _pg_rows(stack, "mlflow", f"select value from metrics where run_uuid = '{run.run_id}'") == [(0.25,)]

    assert prefect_client.api_healthcheck() is None
    flow_id = prefect_client.create_flow_from_name("pg-smoke-flow")
    assert prefect_client.read_flow(flow_id).name == "pg-smoke-flow"
    assert _pg_rows(stack, "prefect", f"select name from flow where id = '{flow_id}'") == [("pg-smoke-flow",)]


# --- transferlab serve against the stack -------------------------------------------------------


@pytest.fixture(scope="module")
def serve(stack: Stack, tmp_path_factory: pytest.TempPathFactory, prefect_client: Any) -> Iterator[Popen[bytes]]:
    """``transferlab serve`` with the tiny config as server-side overrides, until its deployment exists."""
    home = tmp_path_factory.mktemp("transferlab-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update({
        "PREFECT_API_URL": stack.prefect_api,
        "PREFECT_HOME": str(home / "prefect-client"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_TRACKING_URI": stack.mlflow_url,
        "TRANSFERLAB_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    })
    proc = start_process([PYTHON, "-m", "pipelines.cli", "serve", *TINY], stack.logs / "serve.log", env, cwd=REPO)
    stack.procs["serve"] = proc
    try:
        started = time.monotonic()
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transferlab serve exited {proc.returncode} before deploying\n{stack.tails()}")
            try:
                prefect_client.read_deployment_by_name(DEPLOYMENT)
                break
            except Exception as exc:  # ObjectNotFound until serve has registered it
                if time.monotonic() - started > SERVER_TIMEOUT_S:
                    pytest.fail(f"deployment {DEPLOYMENT} not there after {SERVER_TIMEOUT_S}s ({exc})\n"
                                f"{stack.tails()}")
            time.sleep(1)
        stack.startup_s["serve"] = time.monotonic() - started
        print(f"\nserve deployed in {stack.startup_s['serve']:.1f}s")
        yield proc
    finally:
        stop(proc)
        stack.procs.pop("serve", None)


def _trigger(prefect_client: Any, parameters: dict[str, Any]) -> UUID:
    deployment = prefect_client.read_deployment_by_name(DEPLOYMENT)
    return prefect_client.create_flow_run_from_deployment(deployment.id, parameters=parameters).id


def _wait_final(prefect_client: Any, stack: Stack, flow_run_id: UUID, timeout: float = FLOW_RUN_TIMEOUT_S) -> Any:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        run = prefect_client.read_flow_run(flow_run_id)
        if run.state is not None and run.state.is_final():
            return run
        serve = stack.procs.get("serve")
        if serve is not None and serve.poll() is not None:
            pytest.fail(f"transferlab serve died (rc {serve.returncode}) while flow run {flow_run_id} was "
                        f"{run.state_name}\n{stack.tails()}")
        time.sleep(2)
    pytest.fail(f"flow run {flow_run_id} not finished after {timeout}s (state {run.state_name})\n{stack.tails()}")


def _pipeline_parents(client: Any) -> list[Any]:
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, filter_string="tags.`transferlab.kind` = 'pipeline'", max_results=1000)


def test_deployed_pipeline_lands_in_mlflow(stack: Stack, serve: Popen[bytes], prefect_client: Any,
                                          tmp_path: Path) -> None:
    """A run triggered through the Prefect API completes; MLflow holds its parent, children, metrics, files."""
    from mlflow import MlflowClient
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    before = {r.info.run_id for r in _pipeline_parents(MlflowClient(tracking_uri=stack.mlflow_url))}
    t0 = time.monotonic()
    flow_run_id = _trigger(prefect_client, {"overrides": ["finetune.max_epochs=1"]})
    run = _wait_final(prefect_client, stack, flow_run_id)
    print(f"\nflow run {flow_run_id}: {run.state_name} after {time.monotonic() - t0:.1f}s")
    assert run.state.is_completed(), f"{run.state_name}: {run.state.message}\n{stack.tails()}"

    client = MlflowClient(tracking_uri=stack.mlflow_url)
    parents = [r for r in _pipeline_parents(client) if r.info.run_id not in before]
    assert len(parents) == 1, [r.info.run_id for r in parents]
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.info.artifact_uri.startswith("mlflow-artifacts:"), parent.info.artifact_uri
    assert "carbon/emissions_kg" in parent.data.metrics
    # The UI's override reached the run, on top of serve's server-side tiny defaults.
    assert parent.data.params["finetune.max_epochs"] == "1"
    assert parent.data.params["pretrain.max_steps"] == "6"

    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    by_stage: dict[str, list[Any]] = {}
    for child in children:
        by_stage.setdefault(child.data.tags.get("transferlab.stage", "?"), []).append(child)
    assert {s: len(rs) for s, rs in by_stage.items()} == {"prep": 1, "pretrain": 1, "finetune": 3, "evaluate": 1}
    assert all(c.info.status == "FINISHED" for c in children)
    tuned = {c.data.tags.get("transferlab.init"): c for c in by_stage["finetune"]}
    assert set(tuned) == {"pretrained", "scratch", "tfidf"}
    for init, child in tuned.items():
        acc = child.data.metrics.get("test/accuracy")
        assert acc is not None and 0.0 <= acc <= 1.0, (init, child.data.metrics)

    # Files come back through the server (proxied artifacts), not from a shared disk.
    config = Path(client.download_artifacts(parent.info.run_id, "config.yaml", str(tmp_path / "p")))
    assert "max_epochs: 1" in config.read_text()
    for run_id, where in ((parent.info.run_id, "parent"), (by_stage["evaluate"][0].info.run_id, "evaluate")):
        report = Path(client.download_artifacts(run_id, "report.md", str(tmp_path / where)))
        assert report.read_text().strip(), f"empty report.md on the {where} run"

    artifacts = prefect_client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    summary = [a for a in artifacts if a.key == "transferlab-summary"]
    assert summary and summary[0].type == "markdown", [(a.key, a.type) for a in artifacts]
    assert parent.info.run_id in str(summary[0].data)  # the link to the MLflow parent run


def test_rejected_override_fails_the_flow_run_before_any_work(stack: Stack, serve: Popen[bytes],
                                                              prefect_client: Any) -> None:
    """An override the UI may not set fails the flow run, naming it, and creates no MLflow parent run."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=stack.mlflow_url)
    before = {r.info.run_id for r in _pipeline_parents(client)}
    flow_run_id = _trigger(prefect_client, {"overrides": ["hydra.run.dir=/tmp/x"]})
    run = _wait_final(prefect_client, stack, flow_run_id, timeout=300)
    assert run.state.is_failed(), f"{run.state_name}: {run.state.message}"
    assert "hydra.run.dir" in (run.state.message or ""), run.state.message
    assert {r.info.run_id for r in _pipeline_parents(client)} == before


def test_four_pipelines_at_once_on_the_stack(stack: Stack, tmp_path: Path) -> None:
    """4 ``transferlab run`` started together against the PostgreSQL-backed servers (seeds 0, 0,
    1, 2, one state dir for the cache): all finish, each child run belongs to its own
    parent, nothing stays RUNNING, and the repeated seed reuses what the other built."""
    from test_concurrency import SEEDS, check_concurrent_runs, start_runs, tails, wait_runs

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "TRANSFERLAB_"))}
    env.update({"PREFECT_API_URL": stack.prefect_api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    home, logs, experiment = tmp_path / "home", tmp_path / "logs", "concurrent-runs"
    t0, t0_wall = time.monotonic(), time.time() - 1
    procs = start_runs(home, SEEDS, logs, f"tracking.uri={stack.mlflow_url}", f"tracking.experiment={experiment}",
                       env=env)
    codes = wait_runs(procs, logs, timeout=FLOW_RUN_TIMEOUT_S * 2)
    print(f"\n4 pipelines at once on the PostgreSQL stack: {time.monotonic() - t0:.0f} s")
    assert codes == [0, 0, 0, 0], f"{tails(logs)}\n{stack.tails()}"
    figures = check_concurrent_runs(stack.mlflow_url, SEEDS, logs, experiment)
    print(f"figures: {figures}")
    states = _pg_rows(stack, "prefect", "select f.name, r.state_type from flow_run r join flow f on f.id = r.flow_id "
                                        f"where r.created >= to_timestamp({t0_wall})")
    assert sorted(states) == [("transfer_learning", "COMPLETED")] * 4, states
