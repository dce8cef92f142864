"""What every stage shares: its MLflow child run, its carbon tracker, its work dir."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipelines.config.schema import TransferLabConfig
from pipelines.runtime.distributed import is_rank_zero
from pipelines.runtime.env import worker_name
from pipelines.stages.records import Carbon
from pipelines.tracking.carbon import AttemptLedger, CarbonResult, track_carbon
from pipelines.tracking.runs import (
    TAG_CACHE,
    TAG_CACHE_SOURCE,
    TAG_FINGERPRINT,
    TAG_STAGE,
    TAG_WORKER,
    Tracker,
    run_context,
)

log = logging.getLogger("transferlab")


@dataclass
class StageContext:
    """The composed config plus where to log; passed to every stage function."""

    cfg: TransferLabConfig
    tracker: Tracker
    parent_run_id: str | None = None

    @classmethod
    def create(cls, cfg: TransferLabConfig, parent_run_id: str | None = None) -> StageContext:
        return cls(cfg, Tracker.from_config(cfg), parent_run_id)

    @property
    def home(self) -> Path:
        return Path(self.cfg.paths.home)


@dataclass
class StageRun:
    """Handle on a running stage: its MLflow run id and a private work directory."""

    run_id: str
    workdir: Path
    tracker: Tracker
    carbon: CarbonResult = field(default_factory=CarbonResult)
    avoided_kg: float | None = None  # on a cache hit: what building the reused output cost
    avoided_kwh: float | None = None

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        self.tracker.log_metrics(self.run_id, metrics, step)

    def set_tags(self, tags: dict[str, str]) -> None:
        self.tracker.set_tags(self.run_id, tags)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.tracker.log_artifact(self.run_id, path, artifact_path)

    def mark_cache(self, hit: bool, fp: str, source_run_id: str | None = None) -> None:
        tags = {TAG_CACHE: "hit" if hit else "miss", TAG_FINGERPRINT: fp}
        if hit and source_run_id:
            tags[TAG_CACHE_SOURCE] = source_run_id
        self.set_tags(tags)
        if hit and source_run_id:
            # What this reuse avoided: the recorded cost of the run that built the output.
            try:
                source = self.tracker.metrics(source_run_id)
            except Exception:  # source run in another store, or deleted
                source = {}
            self.avoided_kg = source.get("carbon/emissions_kg")
            self.avoided_kwh = source.get("carbon/energy_kwh")
            if self.avoided_kg is not None:
                self.log_metrics({"carbon/avoided_kg": self.avoided_kg})


@contextmanager
def tracked_stage(ctx: StageContext, stage: str, run_name: str | None = None,
                  tags: dict[str, str] | None = None, resume_run_id: str | None = None,
                  ledger: AttemptLedger | None = None) -> Iterator[StageRun]:
    """An MLflow child run with the config logged and a codecarbon tracker around the body.

    Carbon figures are logged even when the body fails: the energy was spent either way.
    A resumable stage passes ``resume_run_id`` (continue that run instead of starting one)
    and a carbon ``ledger`` (persist this attempt's figures, add the earlier attempts').
    Ranks > 0 of a distributed run track no carbon (rank 0's tracker measures the node).
    """
    worker = {TAG_WORKER: worker_name()}
    with run_context(ctx.tracker, run_name or stage, {TAG_STAGE: stage, **worker, **(tags or {})},
                     ctx.parent_run_id, resume_run_id) as run_id:
        if resume_run_id:  # resumed, perhaps by another process or machine than the one that began it
            ctx.tracker.set_tags(run_id, worker)
        ctx.tracker.log_config(run_id, ctx.cfg)
        workdir = ctx.home / "runs" / run_id
        if is_rank_zero():  # other ranks only reuse prep and train; they write no run files
            workdir.mkdir(parents=True, exist_ok=True)
        run = StageRun(run_id, workdir, ctx.tracker)
        carbon_cfg = ctx.cfg.carbon if is_rank_zero() else replace(ctx.cfg.carbon, enabled=False)
        carbon = track_carbon(carbon_cfg, workdir / "carbon", ledger)
        try:
            with carbon as run.carbon:
                yield run
        finally:
            run.log_metrics(run.carbon.metrics())
            if carbon_cfg.enabled and run.carbon.missing:
                run.set_tags({"transferlab.carbon": "missing"})
            if run.carbon.csv:
                run.log_artifact(run.carbon.csv)


def run_fields(run: StageRun) -> dict[str, Any]:
    """The fields of every stage's record (``records.StageRecord``): its run and, once the run
    has ended, what it spent."""
    return {"run_id": run.run_id, "carbon": Carbon(**run.carbon.as_dict())}
