"""Sweep points on a Dask cluster (``sweep.cluster``): the checks that need no cluster, and one
slow test with a real scheduler and two workers on this machine, one of them killed mid-point."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import tiny_overrides

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize("address", ["localhost", "tcp://host", "http://10.0.0.5:8786", "tcp://a b:1", "8786"])
def test_a_malformed_cluster_address_is_a_config_error(tmp_path: Path, address: str) -> None:
    from pipelines.config.compose import compose
    from pipelines.errors import ConfigError

    with pytest.raises(ConfigError, match="'sweep.cluster'"):
        compose(tiny_overrides(tmp_path, f"sweep.cluster='{address}'"))


@pytest.mark.parametrize("address", ["tcp://10.0.0.5:8786", "tls://sched.lan:8786", "sched:8786", "tcp://[::1]:8786"])
def test_well_formed_cluster_addresses_compose(tmp_path: Path, address: str) -> None:
    from pipelines.config.compose import compose

    assert compose(tiny_overrides(tmp_path, f"sweep.cluster='{address}'")).sweep.cluster == address


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_no_scheduler_at_the_address_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines import preflight
    from pipelines.errors import UserError

    monkeypatch.setattr(preflight, "CONNECT_TIMEOUT_S", 2)
    address = f"tcp://127.0.0.1:{_free_port()}"  # nothing listens there
    with pytest.raises(UserError, match=rf"sweep.cluster={address}: no Dask scheduler answers there") as err:
        preflight.check_cluster(address)
    assert "\n" not in str(err.value)


def test_a_missing_prefect_dask_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.errors import UserError
    from pipelines.preflight import check_cluster

    monkeypatch.setitem(sys.modules, "prefect_dask", None)  # import raises ImportError
    with pytest.raises(UserError, match=r"needs prefect-dask: pip install 'transferlab\[cluster\]'"):
        check_cluster("tcp://127.0.0.1:8786")


def test_the_cli_refuses_a_dead_cluster_before_any_run_exists(tmp_path: Path) -> None:
    """Bad input leaves nothing behind: no MLflow store, no cache entry."""
    home = tmp_path / "home"
    env = {**os.environ, "TRANSFERLAB_HOME": str(home)}
    proc = subprocess.run([str(BIN / "transferlab"), "sweep", *tiny_overrides(home),
                           f"sweep.cluster=tcp://127.0.0.1:{_free_port()}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "no Dask scheduler answers there" in proc.stderr
    assert not (home / "mlflow.db").exists() and not (home / "cache").exists()


def test_every_stage_run_names_the_process_that_ran_it() -> None:
    from pipelines.runtime.env import worker_name

    assert worker_name() == f"{socket.gethostname()}:{os.getpid()}"


# --- a real cluster: one scheduler and two workers, each its own process group -------------


def _start(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[str, dict[str, subprocess.Popen[bytes]]]]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    info = tmp_path / "scheduler.json"
    procs = {"scheduler": _start([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                                  "--no-dashboard", "--scheduler-file", str(info)], tmp_path / "scheduler.log", env)}
    try:
        deadline = time.monotonic() + 60
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(info.read_text())["address"]
        for name in ("wA", "wB"):  # no nanny: killing the worker process kills the worker
            procs[name] = _start([str(BIN / "dask"), "worker", address, "--nthreads", "1", "--no-nanny",
                                  "--no-dashboard", "--name", name], tmp_path / f"{name}.log", env)
        from distributed import Client

        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        yield address, procs
    finally:
        for proc in procs.values():
            _stop(proc)


def _finetune_runs(home: Path) -> list[tuple[str, str, str, str, str, str]]:
    """(status, parent run id, init, seed, worker tag, run id) of every fine-tune run in the store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("transferlab")
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], "tags.`transferlab.stage` = 'finetune'", max_results=100)
    return [(r.info.status, r.data.tags.get("mlflow.parentRunId", ""), r.data.tags.get("transferlab.init", ""),
             r.data.params.get("seed", ""), r.data.tags.get("transferlab.worker", ""), r.info.run_id) for r in runs]


@pytest.mark.slow
def test_a_sweep_spreads_over_two_workers_and_survives_one_being_killed(
        tmp_path: Path, cluster: tuple[str, dict[str, subprocess.Popen[bytes]]]) -> None:
    address, procs = cluster
    home = tmp_path / "home"
    env = {**os.environ, "TRANSFERLAB_HOME": str(home)}
    # Points long enough (8 epochs of 64 examples, seconds each) to be caught running.
    cmd = [str(BIN / "transferlab"), "sweep", *tiny_overrides(home), f"sweep.cluster={address}",
           "sweep.budgets=[64]", "sweep.seeds=[0,1]", "finetune.inits=[pretrained,scratch]",
           "finetune.max_epochs=8", "finetune.patience=8", "sweep.retries=0"]
    with open(tmp_path / "sweep.log", "wb") as log:
        sweep = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        killed = None
        deadline = time.monotonic() + 300
        while killed is None and sweep.poll() is None and time.monotonic() < deadline:
            # Running on wA, past logging its config (so the run says which point it is).
            running = [r for r in _finetune_runs(home) if r[0] == "RUNNING" and r[4].endswith("(wA)") and r[3]]
            if running:
                _stop(procs["wA"])  # mid-point: its fine-tune run is left RUNNING
                killed = running[0][5]
            time.sleep(0.2)
        assert killed is not None, "no point ran on worker wA: " + (tmp_path / "sweep.log").read_text()[-3000:]
        assert sweep.wait(600) == 0, (tmp_path / "sweep.log").read_text()[-3000:]
    finally:
        if sweep.poll() is None:
            sweep.kill()
    out = (tmp_path / "sweep.log").read_text()
    assert "sweep of 4 fine-tunes finished" in out and "0 failed" in out, out[-3000:]
    runs = _finetune_runs(home)
    finished = [r for r in runs if r[0] == "FINISHED"]
    dead = next(r for r in runs if r[5] == killed)
    # Every point finished exactly once, all under the one sweep parent run.
    assert Counter((r[2], r[3]) for r in finished) == {(i, s): 1 for i in ("pretrained", "scratch") for s in "01"}
    assert len({r[1] for r in finished}) == 1 and finished[0][1]
    # The killed point was run again, to the end, on the other worker; the attempt that died
    # with wA is marked KILLED, not left RUNNING forever.
    again = [r for r in finished if (r[2], r[3]) == (dead[2], dead[3])]
    assert again[0][4].endswith("(wB)") and again[0][1] == dead[1]
    assert [r[5] for r in runs if r[0] != "FINISHED"] == [killed] and dead[0] == "KILLED"
    assert "marked KILLED" in out
    # Both workers took points before the kill or after.
    assert {r[4].rsplit(" ", 1)[-1] for r in runs} == {"(wA)", "(wB)"}
