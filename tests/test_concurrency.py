"""Several runs on one state dir at once: the stores are created once, shared outputs are built once.

The fast tests start the racing parts directly (MLflow store creation in 4 processes,
prep in 3 threads); the slow one starts 4 whole pipelines as a user would, on one fresh
store, and reads MLflow back (:func:`check_concurrent_runs`, shared with the PostgreSQL
stack test and bench/concurrent_runs.py).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_overrides

REPO = Path(__file__).resolve().parent.parent
SEEDS = (0, 0, 1, 2)  # the repeated seed needs the same pretrain and fine-tunes: it must wait and reuse


def test_fresh_sqlite_store_opened_by_four_processes_at_once(tmp_path: Path) -> None:
    """Without the store lock one of them died with ``table ... already exists``."""
    go = tmp_path / "go"
    uri = f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"
    code = ("import sys, time; from pathlib import Path; import mlflow.tracking; "
            "from pipelines.tracking.runs import Tracker\n"
            f"while not Path({str(go)!r}).exists(): time.sleep(0.01)\n"
            f"t = Tracker({uri!r}, 'transferlab', {(tmp_path / 'home' / 'mlartifacts').as_uri()!r})\n"
            "print(t.experiment_id)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    time.sleep(3)  # let them import mlflow, so they reach the store together
    go.touch()
    results = [(p.wait(240), *p.communicate()) for p in procs]
    assert [rc for rc, _, _ in results] == [0, 0, 0, 0], "\n".join(err[-2000:] for _, _, err in results)
    assert len({out.strip() for _, out, _ in results}) == 1  # one experiment, found or created by each


def test_concurrent_preps_build_once_and_the_others_reuse(tmp_path: Path) -> None:
    """Three runs need the prep output another process is building: they wait, one takes
    over when that builder gives up, the others reuse its output as cache hits."""
    from mlflow import MlflowClient

    from pipelines.cache.store import StageCache
    from pipelines.config.compose import compose
    from pipelines.stages import prep
    from pipelines.stages.common import StageContext
    from pipelines.stages.prep import prep_fingerprint
    from pipelines.tracking.runs import TAG_CACHE, TAG_CACHE_WAITED, Tracker

    cfg = compose(tiny_overrides(tmp_path, "carbon.enabled=false"))
    cache = StageCache(tmp_path, "prep")
    fp = prep_fingerprint(cfg)
    tracker = Tracker.from_config(cfg)
    records: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            records.append(prep(StageContext(cfg, tracker)))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    with cache.claim(fp, 0) as claim:  # a builder that will fail: the others wait for it
        assert not claim.done
        threads = [threading.Thread(target=run) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        assert cache.lookup(fp) is None and not records  # all three are waiting
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert sorted(r.cache_hit for r in records) == [False, True, True]
    assert len({r.path for r in records}) == 1
    runs = [MlflowClient(tracker.uri).get_run(r.run_id).data.tags for r in records]
    assert sorted(t[TAG_CACHE] for t in runs) == ["hit", "hit", "miss"]
    assert all(float(t[TAG_CACHE_WAITED]) > 0 for t in runs)  # every one of them waited
    assert sorted(p.name for p in cache.root.iterdir()) == [fp]  # no second copy, lock or temp dir


def test_wait_timeout_fails_the_stage_before_its_run_starts(tmp_path: Path) -> None:
    """Past cache.wait_timeout_s the stage stops with one line naming the key; no child run is left."""
    from mlflow import MlflowClient

    from pipelines.cache.store import StageCache
    from pipelines.config.compose import compose
    from pipelines.runtime.locks import BuildTimeout
    from pipelines.stages import prep
    from pipelines.stages.common import StageContext
    from pipelines.stages.prep import prep_fingerprint
    from pipelines.tracking.runs import Tracker

    cfg = compose(tiny_overrides(tmp_path, "carbon.enabled=false", "cache.wait_timeout_s=1"))
    tracker = Tracker.from_config(cfg)
    with StageCache(tmp_path, "prep").claim(prep_fingerprint(cfg), 0):
        with pytest.raises(BuildTimeout, match=r"gave up after 1 s waiting for prep \w+ being built by pid"):
            prep(StageContext(cfg, tracker))
    assert MlflowClient(tracker.uri).search_runs([tracker.experiment_id]) == []


# --- 4 whole pipelines at once ---------------------------------------------------------------


def start_runs(home: Path, seeds: Sequence[int], logs: Path, *extra: str,
               env: dict[str, str] | None = None) -> list[tuple[int, subprocess.Popen[bytes]]]:
    """``transferlab run`` (tiny config) once per seed, all started together on state dir ``home``;
    ``env`` replaces the environment (PYTHONPATH and offline switches are added)."""
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ if env is None else env)
    env.pop("PREFECT_HOME", None)  # the state dir's own Prefect home, as for a user
    env.update({"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    procs = []
    for i, seed in enumerate(seeds):
        cmd = [sys.executable, "-m", "pipelines.cli", "run", *tiny_overrides(home, f"seed={seed}", *extra)]
        log = open(logs / f"run{i}-seed{seed}.log", "wb")  # noqa: SIM115 - closed with the process
        procs.append((seed, subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)))
    return procs


def wait_runs(procs: list[tuple[int, subprocess.Popen[bytes]]], logs: Path, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    for _, proc in procs:
        try:
            codes.append(proc.wait(max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            for _, p in procs:
                p.kill()
            pytest.fail(f"runs not finished after {timeout:.0f} s\n{tails(logs)}")
    return codes


def tails(logs: Path, lines: int = 40) -> str:
    return "\n".join(f"--- {p.name} ---\n" + "\n".join(p.read_text(errors="replace").splitlines()[-lines:])
                     for p in sorted(logs.glob("*.log")))


def check_concurrent_runs(uri: str, seeds: Sequence[int], logs: Path, experiment: str = "transferlab"
                          ) -> dict[str, Any]:
    """Every pipeline finished with its own 6 children; nothing RUNNING; shared outputs built once.

    Returns figures for reports: runs, cache hits, stages that waited for another run.
    """
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=5000)
    parents = {r.info.run_id: r for r in runs if r.data.tags.get("transferlab.kind") == "pipeline"}
    children = [r for r in runs if r.data.tags.get("transferlab.kind") != "pipeline"]
    assert len(parents) == len(seeds), tails(logs)
    assert sorted(int(p.data.params["seed"]) for p in parents.values()) == sorted(seeds)
    assert [r.info.run_id for r in runs if r.info.status != "FINISHED"] == [], tails(logs)
    by_parent: dict[str, list[str]] = {p: [] for p in parents}
    for child in children:
        parent = child.data.tags.get("mlflow.parentRunId")
        assert parent in parents, (child.info.run_id, child.data.tags.get("transferlab.stage"), parent)
        assert child.data.params["seed"] == parents[parent].data.params["seed"]  # its own pipeline's child
        by_parent[parent].append(child.data.tags["transferlab.stage"])
    for parent, stages in by_parent.items():
        assert sorted(stages) == ["evaluate", "finetune", "finetune", "finetune", "prep", "pretrain"], (parent, stages)
    # Each cached output was built by exactly one run; every other run that needed it reused it.
    built: dict[tuple[str, str], list[str]] = {}
    for child in children:
        tags = child.data.tags
        if "transferlab.fingerprint" in tags:
            built.setdefault((tags["transferlab.stage"], tags["transferlab.fingerprint"]), []).append(
                tags["transferlab.cache"])
    assert all(v.count("miss") == 1 for v in built.values()), built
    hits = sum(v.count("hit") for v in built.values())
    waits = sum(1 for c in children if "transferlab.cache_waited_s" in c.data.tags)
    repeated = len(seeds) - len(set(seeds))
    # prep is shared by all seeds; pretrain, the three fine-tunes (pretrained, scratch, tfidf) and
    # evaluate's measurements by the repeated ones.
    assert hits == len(seeds) - 1 + 5 * repeated, built
    return {"runs": len(seeds), "hits": hits, "waits": waits, "children": len(children)}


@pytest.mark.slow
def test_four_pipelines_at_once_on_a_fresh_store(tmp_path: Path) -> None:
    home, logs = tmp_path / "home", tmp_path / "logs"
    t0 = time.monotonic()
    procs = start_runs(home, SEEDS, logs)
    codes = wait_runs(procs, logs, timeout=1500)
    print(f"\n4 pipelines at once: {time.monotonic() - t0:.0f} s")
    assert codes == [0, 0, 0, 0], tails(logs)
    text = tails(logs, lines=10_000)
    assert "Traceback" not in text and "already exists" not in text, tails(logs)
    figures = check_concurrent_runs(f"sqlite:///{home / 'mlflow.db'}", SEEDS, logs)
    print(f"figures: {figures}")
    with sqlite3.connect(home / "prefect" / "prefect.db") as db:  # the runs' temporary servers shared it
        states = db.execute("select f.name, r.state_type from flow_run r join flow f on f.id = r.flow_id").fetchall()
    assert sorted(states) == [("transfer_learning", "COMPLETED")] * 4, states
    leftovers = [p.name for p in (home / "cache").rglob("*") if p.name.startswith((".lock-", ".tmp-", ".partial-"))]
    assert leftovers == []
