"""Leases: a live holder is never stale, a killed one is, and reaping marks its MLflow runs KILLED."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipelines.tracking import liveness

HOLDER = """
import sys, time
from pipelines.tracking import liveness
with liveness.hold(sys.argv[1], sys.argv[2], sys.argv[3]):
    print("held", flush=True)
    time.sleep(600)
"""


def _holder(home: Path, run_id: str, uri: str = "sqlite:///nowhere.db") -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(home), run_id, uri], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_own_lease_is_live_and_removed_on_exit(tmp_path: Path) -> None:
    with liveness.hold(tmp_path, "abc", "sqlite:///x.db", flow_run_id="f1") as lease:
        assert lease.path.exists()
        assert [x.run_id for x in liveness.leases(tmp_path)] == ["abc"]
        assert liveness.leases(tmp_path)[0].flow_run_id == "f1"
        assert liveness.stale(tmp_path) == []
        assert liveness.reap(tmp_path) == []  # a live run is never reaped
        assert lease.path.exists()
    assert not lease.path.exists()


def test_killed_holder_is_stale_live_one_is_not(tmp_path: Path) -> None:
    alive, dead = _holder(tmp_path, "alive"), _holder(tmp_path, "dead")
    try:
        dead.send_signal(signal.SIGKILL)
        dead.wait()
        assert [x.run_id for x in liveness.stale(tmp_path)] == ["dead"]
    finally:
        alive.kill()
        alive.wait()


def test_forked_child_does_not_keep_a_dead_parents_lease(tmp_path: Path) -> None:
    """A DataLoader worker or pool process forked by the pipeline must not hold its lease."""
    code = """
import os, sys, time
from pipelines.tracking import liveness
with liveness.hold(sys.argv[1], "r", "sqlite:///x.db"):
    if os.fork() == 0:
        time.sleep(600)
    print("forked", flush=True)
    time.sleep(600)
"""
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "forked"
        assert liveness.stale(tmp_path) == []
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10  # the child closes its copy right after fork; give it a moment
        while not liveness.stale(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [x.run_id for x in liveness.stale(tmp_path)] == ["r"]  # the forked child still runs
    finally:
        os.killpg(proc.pid, signal.SIGKILL)


def test_reap_marks_parent_and_running_children_killed(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("e")
    parent = client.create_run(exp).info.run_id
    running = client.create_run(exp, tags={"mlflow.parentRunId": parent}).info.run_id
    trial = client.create_run(exp, tags={"mlflow.parentRunId": running}).info.run_id  # a fine-tune's LR trial
    done = client.create_run(exp, tags={"mlflow.parentRunId": parent}).info.run_id
    client.set_terminated(done, "FINISHED")
    other = client.create_run(exp).info.run_id  # not this pipeline's: untouched
    proc = _holder(tmp_path, parent, uri)
    proc.kill()
    proc.wait()
    reaped = liveness.reap(tmp_path, prefect=False)
    assert [x.run_id for x in reaped] == [parent]
    status = {r: client.get_run(r).info.status for r in (parent, running, trial, done, other)}
    assert status == {parent: "KILLED", running: "KILLED", trial: "KILLED", done: "FINISHED", other: "RUNNING"}
    assert liveness.leases(tmp_path) == []  # the lease is gone once reaped


def test_unreachable_store_keeps_the_lease(tmp_path: Path) -> None:
    proc = _holder(tmp_path, "gone", "http://127.0.0.1:9/")  # nothing listens on the discard port
    proc.kill()
    proc.wait()
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    try:
        assert liveness.reap(tmp_path, prefect=False) == []
    finally:
        os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    assert [x.run_id for x in liveness.leases(tmp_path)] == ["gone"]


def test_lease_taken_before_the_run_exists_is_bound_later(tmp_path: Path) -> None:
    """A kill before the MLflow parent exists leaves a pending lease: reaped without MLflow."""
    with liveness.hold(tmp_path, "", "sqlite:///x.db") as lease:
        assert lease.path.name.startswith("pending-") and lease.run_id == ""
        lease.bind("parent1")
        assert lease.path.name == "parent1.json"
        assert [x.run_id for x in liveness.leases(tmp_path)] == ["parent1"]
        assert liveness.stale(tmp_path) == []  # the lock moved with the file
    assert liveness.leases(tmp_path) == []
    code = """
import os, sys
from pipelines.tracking import liveness
with liveness.hold(sys.argv[1], "", "http://127.0.0.1:9/"):
    os._exit(0)  # dies holding it, before any MLflow run
"""
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True,
                   env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    [pending] = liveness.stale(tmp_path)
    assert pending.run_id == ""
    assert liveness.reap(tmp_path, prefect=False) == [pending]  # no MLflow store was needed
    assert liveness.leases(tmp_path) == []
