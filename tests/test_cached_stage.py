"""The cached-stage skeleton (pipelines.stages.cached) with a stand-in stage: a miss builds
and publishes, a hit reuses without building, a failed build publishes nothing, and a
resumable build that failed continues in the same MLflow run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_overrides

from pipelines.cache.store import StageCache
from pipelines.config.compose import compose
from pipelines.stages.cached import CachedStage, CacheEntry, cached_stage
from pipelines.stages.common import StageContext, StageRun
from pipelines.stages.records import CachedRecord

FP = "0123456789abcdef"


class Toy:
    """A stage that writes one file; counts its builds and what it was shown."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.builds: list[Path] = []
        self.logged: list[tuple[str, bool]] = []
        self.before_run: list[Path] = []

    def build(self, run: StageRun, out: Path) -> dict[str, Any]:
        self.builds.append(out)
        (out / "data.txt").write_text("built")
        if self.fail:
            raise RuntimeError("simulated build failure")
        return {"answer": 42}

    def log(self, run: StageRun, entry: CacheEntry) -> None:
        self.logged.append((run.run_id, entry.hit))
        run.log_metrics({"toy/answer": entry.record["answer"]})

    def make_record(self, run: StageRun, entry: CacheEntry) -> CachedRecord:
        return CachedRecord(**entry.record_fields(run))

    def stage(self, resumable: bool = False) -> CachedStage[CachedRecord]:
        return CachedStage("toy", FP, self.build, self.make_record, self.log, label="toy[x]", run_name="toy-x",
                           tags={"toy.tag": "yes"}, resumable=resumable,
                           before_run=self.before_run.append if resumable else None)


@pytest.fixture
def ctx(tmp_path: Path) -> StageContext:
    return StageContext.create(compose(tiny_overrides(tmp_path, "carbon.enabled=false")))


def _run(ctx: StageContext, run_id: str) -> Any:
    return ctx.tracker.client.get_run(run_id)


@pytest.mark.parametrize("resumable", [False, True])
def test_a_miss_builds_and_publishes_then_a_hit_reuses(ctx: StageContext, resumable: bool) -> None:
    toy = Toy()
    first = cached_stage(ctx, toy.stage(resumable))
    cache = StageCache(ctx.home, "toy")
    assert first.cache_hit is False and first.source_run_id == first.run_id and first.fingerprint == FP
    assert Path(first.path) == cache.path(FP) and (cache.path(FP) / "data.txt").read_text() == "built"
    # record.json: the stage's own fields plus what the skeleton adds, as before the skeleton.
    assert json.loads((cache.path(FP) / "record.json").read_text()) == {
        "answer": 42, "stage": "toy", "fingerprint": FP, "run_id": first.run_id}
    assert [p.name for p in cache.root.iterdir()] == [FP]  # no temp or work dir left
    run = _run(ctx, first.run_id)
    assert run.data.tags["transferlab.cache"] == "miss" and run.data.tags["transferlab.stage"] == "toy"
    assert run.data.tags["toy.tag"] == "yes" and run.data.tags["mlflow.runName"] == "toy-x"
    assert run.data.metrics["toy/answer"] == 42

    second = cached_stage(ctx, toy.stage(resumable))
    assert len(toy.builds) == 1  # reused, not rebuilt
    assert second.cache_hit is True and second.run_id != first.run_id and second.source_run_id == first.run_id
    assert second.path == first.path
    run = _run(ctx, second.run_id)
    assert run.data.tags["transferlab.cache"] == "hit"
    assert run.data.tags["transferlab.cache_source_run"] == first.run_id
    assert run.data.metrics["toy/answer"] == 42  # the log hook runs on a hit too
    assert toy.logged == [(first.run_id, False), (second.run_id, True)]


def test_a_failed_build_publishes_nothing_and_the_next_run_builds(ctx: StageContext) -> None:
    with pytest.raises(RuntimeError, match="simulated build failure"):
        cached_stage(ctx, Toy(fail=True).stage())
    cache = StageCache(ctx.home, "toy")
    assert cache.lookup(FP) is None and not any(p.name != f".lock-{FP}" for p in cache.root.iterdir())
    failed = ctx.tracker.client.search_runs([ctx.tracker.experiment_id], "attributes.status = 'FAILED'")
    assert [r.data.tags["transferlab.stage"] for r in failed] == ["toy"]

    toy = Toy()
    rec = cached_stage(ctx, toy.stage())
    assert rec.cache_hit is False and len(toy.builds) == 1 and cache.lookup(FP) is not None


def test_a_failed_resumable_build_keeps_its_work_dir_and_resumes_in_the_same_run(ctx: StageContext) -> None:
    broken = Toy(fail=True)
    with pytest.raises(RuntimeError, match="simulated build failure"):
        cached_stage(ctx, broken.stage(resumable=True))
    cache = StageCache(ctx.home, "toy")
    work = cache.root / f".partial-{FP}"
    assert cache.lookup(FP) is None and (work / "data.txt").exists() and not (work / "record.json").exists()
    first_run = json.loads((work / "state.json").read_text())["run_id"]
    assert broken.before_run == [work]

    toy = Toy()
    rec = cached_stage(ctx, toy.stage(resumable=True))
    assert toy.builds == [work] and toy.before_run == [work]  # the same work dir, set up before the run
    assert rec.run_id == first_run and rec.cache_hit is False  # the earlier attempt's MLflow run continues
    assert not work.exists() and cache.lookup(FP)["run_id"] == first_run
    assert _run(ctx, first_run).info.status == "FINISHED"
