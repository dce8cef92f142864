"""The cached-stage skeleton, written once for prep, pretrain and fine-tuning.

Every cached stage does the same around its own work: claim the cache entry (or wait for
the process building it), open its MLflow child run, reuse the finished entry on a hit or
build it on a miss, publish it with ``record.json`` last, log what the run shows, and turn
the entry into the record it returns. A stage supplies only what differs
(:class:`CachedStage`): its fingerprint, how to build the entry, what to log, what record
to return.

Two ways to build: in a temp dir that is published atomically (a failed build leaves
nothing), or ``resumable``: in a work dir that outlives a kill (``ResumableBuild``), whose
rerun continues the same MLflow run and sums carbon over attempts (pretraining).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from pipelines.cache.store import ResumableBuild, StageCache, write_record
from pipelines.config.schema import TransferLabConfig
from pipelines.runtime.locks import Claim
from pipelines.stages.common import StageContext, StageRun, run_fields, tracked_stage
from pipelines.tracking.carbon import AttemptLedger
from pipelines.tracking.runs import TAG_CACHE_WAITED, Tracker

log = logging.getLogger("transferlab")

R = TypeVar("R")


@dataclass(frozen=True)
class CacheEntry:
    """A finished entry as this run sees it: its ``record.json``, where it lives, and
    whether this run reused it (a hit) or built it."""

    record: dict[str, Any]
    path: Path
    hit: bool

    def record_fields(self, run: StageRun) -> dict[str, Any]:
        """The fields of every cached stage's record (``records.CachedRecord``); call once the
        run has ended, so its carbon figures are final."""
        return {**run_fields(run), "fingerprint": self.record["fingerprint"], "path": str(self.path),
                "cache_hit": self.hit, "source_run_id": self.record["run_id"] if self.hit else run.run_id,
                "avoided_kg": run.avoided_kg, "avoided_kwh": run.avoided_kwh}


@dataclass(frozen=True)
class CachedStage(Generic[R]):
    """What one cached stage supplies to :func:`cached_stage`."""

    name: str  # the cache dir (cache/<name>/) and the MLflow stage tag
    fingerprint: str
    # Writes the output into the given dir and returns record.json's own fields (``stage``,
    # ``fingerprint`` and ``run_id`` are added); logs what only a build makes (artifacts).
    build: Callable[[StageRun, Path], dict[str, Any]]
    # After the run has ended (carbon final), the build lock still held: the stage's record.
    make_record: Callable[[StageRun, CacheEntry], R]
    # In the run, on a hit and after a build: what the run shows of the entry (metrics, tags).
    log: Callable[[StageRun, CacheEntry], None]
    label: str | None = None  # in log lines ("finetune[pretrained]"); default: name
    run_name: str | None = None  # default: name
    tags: dict[str, str] | None = None
    resumable: bool = False  # build in a work dir that survives a kill, and resume it
    # Resumable only: on the work dir before the run starts (set aside what a rerun must not use).
    before_run: Callable[[Path], None] | None = None


def wait_timeout(cfg: TransferLabConfig) -> float:
    """How long a stage waits for another process building the same output (cache.wait_timeout_s)."""
    return float(cfg.cache.wait_timeout_s)


def cached_stage(ctx: StageContext, stage: CachedStage[R]) -> R:
    """Reuse the stage's finished cache entry or build it, in the stage's own MLflow child run.

    Another run building the same entry: wait for it (before this run starts, so the wait
    is not timed or charged as carbon), then reuse it. The build lock is held until the
    record is made, so a waiter finds everything the build does (a registered model) done.
    """
    cache = StageCache(ctx.home, stage.name)
    with cache.claim(stage.fingerprint, wait_timeout(ctx.cfg)) as claim:
        if not claim.done:
            build = _build_resumable if stage.resumable else _build
            return build(ctx, stage, cache, claim)
    with tracked_stage(ctx, stage.name, stage.run_name, stage.tags) as run:
        cached = _lookup(run, cache, stage, claim)
        if cached is None:  # removed between the claim and now (cache gc): not ours to rebuild
            raise RuntimeError(f"{stage.name} cache entry {cache.path(stage.fingerprint)} disappeared")
        entry = CacheEntry(cached, cache.path(stage.fingerprint), hit=True)
        stage.log(run, entry)
    return stage.make_record(run, entry)


def _lookup(run: StageRun, cache: StageCache, stage: CachedStage[Any], claim: Claim) -> dict[str, Any] | None:
    """The finished entry's record if the cache has one; says which it was in the log and
    MLflow, and records a wait for another process's build (tag ``transferlab.cache_waited_s``)."""
    fp, label = stage.fingerprint, stage.label or stage.name
    if claim.waited_for:
        run.set_tags({TAG_CACHE_WAITED: f"{claim.waited_s:.1f}"})
    cached = cache.lookup(fp)
    if cached is None:
        log.info("%s: cache miss %s; computing", label, fp)
        run.mark_cache(False, fp)
    else:
        log.info("%s: cache hit %s; reusing %s instead of recomputing", label, fp, cache.path(fp))
        run.mark_cache(True, fp, cached.get("run_id"))
    return cached


def _entry_record(stage: CachedStage[Any], run: StageRun, fields: dict[str, Any]) -> dict[str, Any]:
    return {**fields, "stage": stage.name, "fingerprint": stage.fingerprint, "run_id": run.run_id}


def _build(ctx: StageContext, stage: CachedStage[R], cache: StageCache, claim: Claim) -> R:
    """Build in a temp dir published only when complete: a failed build leaves nothing."""
    with tracked_stage(ctx, stage.name, stage.run_name, stage.tags) as run:
        _lookup(run, cache, stage, claim)
        with cache.build(stage.fingerprint) as tmp:
            record = _entry_record(stage, run, stage.build(run, tmp))
            write_record(tmp, record)
        entry = CacheEntry(record, cache.path(stage.fingerprint), hit=False)
        stage.log(run, entry)
    return stage.make_record(run, entry)


def _build_resumable(ctx: StageContext, stage: CachedStage[R], cache: StageCache, claim: Claim) -> R:
    """Build (or continue building) in ``.partial-<fp>``, which a kill leaves for the rerun:
    the same MLflow run continues and the carbon of earlier attempts is added."""
    with ResumableBuild(cache, stage.fingerprint) as work:
        resume_run_id = _resumable_run_id(ctx.tracker, stage.name, work.state()) if work.resuming else None
        if stage.before_run is not None:
            stage.before_run(work.path)
        with tracked_stage(ctx, stage.name, stage.run_name, stage.tags, resume_run_id=resume_run_id,
                           ledger=AttemptLedger(work.path / "carbon")) as run:
            work.save_state({"run_id": run.run_id, "fingerprint": stage.fingerprint})
            _lookup(run, cache, stage, claim)
            if resume_run_id:
                log.info("%s: resuming %s in MLflow run %s", stage.name, work.path, run.run_id)
            record = _entry_record(stage, run, stage.build(run, work.path))
            entry = CacheEntry(record, cache.path(stage.fingerprint), hit=False)
            stage.log(run, entry)
        # After the run (and its carbon ledger, which writes into the work dir) has ended.
        write_record(work.path, record)
        work.publish()
    return stage.make_record(run, entry)


def _resumable_run_id(tracker: Tracker, stage: str, state: dict[str, Any]) -> str | None:
    """The earlier attempt's run id if that run still exists in this tracking store."""
    run_id = state.get("run_id")
    if not run_id:
        return None
    try:
        run = tracker.client.get_run(run_id)
    except Exception:  # another store (tracking.uri changed) or purged
        log.warning("%s: earlier MLflow run %s not found; starting a new run", stage, run_id)
        return None
    if run.info.lifecycle_stage == "deleted":
        log.warning("%s: earlier MLflow run %s was deleted; starting a new run", stage, run_id)
        return None
    return run_id
