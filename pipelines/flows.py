"""Prefect flows that order the stages; the stages themselves know nothing of Prefect.

Training runs on the flow's own thread (tasks are called, not submitted) so Lightning's
signal handling works, and tasks pass small records (paths, fingerprints, run ids),
never models or datasets.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from pipelines import stages
from pipelines.cache.store import StageCache
from pipelines.checkpoint_refs import resolve_init
from pipelines.config.compose import check_task, check_zero_shot, compose
from pipelines.config.schema import TransferLabConfig
from pipelines.errors import UserError
from pipelines.preflight import check_inputs
from pipelines.runtime import lifecycle
from pipelines.runtime.distributed import global_rank, is_rank_zero
from pipelines.stages.common import StageContext
from pipelines.stages.finetune import init_label, register_best
from pipelines.stages.prep import prep_fingerprint
from pipelines.stages.pretrain import pretrain_in_worker_rank
from pipelines.stages.records import EvaluateRecord, FinetuneRecord, PrepRecord, PretrainRecord, StageRecord
from pipelines.tracking import liveness
from pipelines.tracking.publish import pipeline_markdown, publish, run_link
from pipelines.tracking.runs import TAG_KIND, Tracker, run_context, tracking_uri

log = logging.getLogger("transferlab")

# How long a non-zero rank waits for rank 0 to finish the prep stage (torchrun/SLURM start
# every rank at once; Lightning's own launcher starts them after prep is done).
PREP_WAIT_S = float(os.environ.get("TRANSFERLAB_PREP_WAIT_S", 3600))

STAGES = ("prep", "pretrain", "finetune", "evaluate")

# Reuse across runs is the stage cache's job (content-addressed, visible in MLflow);
# Prefect's default policy keys on the flow run and would only add hashing work.
# Task runs are named after the stage (not "prep-a3f"), so the Prefect UI reads as the pipeline;
# the Python names end in _task so that ``prep`` etc. name only the stage functions (pipelines.stages).
def _task(name: str) -> Any:
    return task(name=name, task_run_name=name, cache_policy=NO_CACHE, persist_result=False)


@_task("prep")
def prep_task(cfg: TransferLabConfig, parent_run_id: str) -> PrepRecord:
    return stages.prep(StageContext.create(cfg, parent_run_id))


@_task("pretrain")
def pretrain_task(cfg: TransferLabConfig, prep_record: PrepRecord, parent_run_id: str) -> PretrainRecord:
    return stages.pretrain(StageContext.create(cfg, parent_run_id), prep_record)


@_task("finetune")
def finetune_task(cfg: TransferLabConfig, prep_record: PrepRecord, pretrain_record: PretrainRecord, init: str,
                  parent_run_id: str) -> FinetuneRecord:
    return stages.finetune(StageContext.create(cfg, parent_run_id), prep_record, pretrain_record, init)


@_task("distill")
def distill_task(cfg: TransferLabConfig, prep_record: PrepRecord, pretrain_record: PretrainRecord,
                 finetune_records: list[FinetuneRecord], parent_run_id: str) -> FinetuneRecord:
    return stages.distill(StageContext.create(cfg, parent_run_id), prep_record, pretrain_record, finetune_records)


@_task("evaluate")
def evaluate_task(cfg: TransferLabConfig, prep_record: PrepRecord, pretrain_record: PretrainRecord,
                  finetune_records: list[FinetuneRecord], parent_run_id: str) -> EvaluateRecord:
    return stages.evaluate(StageContext.create(cfg, parent_run_id), prep_record, pretrain_record, finetune_records)


def carbon_totals(records: list[StageRecord]) -> dict[str, float]:
    """Pipeline carbon totals; a figure missing in any stage is left out, not summed as 0."""
    out: dict[str, float] = {}
    for key, metric in (("emissions_kg", "carbon/emissions_kg"), ("energy_kwh", "carbon/energy_kwh"),
                        ("duration_s", "carbon/duration_s")):
        values = [r.carbon.as_dict()[key] for r in records]
        if values and all(v is not None for v in values):
            out[metric] = float(sum(v for v in values if v is not None))
    return out


def stage_summaries(records: list[StageRecord]) -> list[dict[str, Any]]:
    """The summary's (and the CLI's) line per stage: name, cache hit, what this run spent."""
    return [{"stage": r.label, "cache_hit": r.cache_hit, **r.carbon.as_dict()} for r in records]


def headline(task: str, tuned: list[FinetuneRecord]) -> dict[str, Any]:
    """The summary's headline: the task's test metric by name (accuracy, entity_f1 or chrf)
    and its value per init, so no reader shows chrF or entity F1 under an "accuracy" label."""
    from modules.tasks import HEADLINE

    metric = HEADLINE[task]
    return {"metric": metric, "by_init": {r.init: r.metrics.get(f"test/{metric}") for r in tuned}}


def per_init_test_metrics(tuned: list[FinetuneRecord]) -> dict[str, float]:
    """Each fine-tune's test metrics keyed by init (``test/chrf/scratch``), as the evaluate stage names them."""
    return {f"{key}/{r.init}": v for r in tuned for key, v in r.metrics.items() if key.startswith("test/")}


@contextmanager
def parent_run(cfg: TransferLabConfig, name: str, tags: dict[str, str], what: str) -> Iterator[tuple[Tracker, str]]:
    """The MLflow parent run of a pipeline or sweep: (tracker, parent run id).

    An earlier, killed run's leftovers are marked KILLED / Crashed first; the run lease is
    taken before the parent run exists, so a kill from here on leaves nothing unmarked (see
    pipelines.tracking.liveness); SIGTERM waits until the block is left.
    """
    lifecycle.follow_runner()  # a served run ends with the `up`/`serve` that started it
    liveness.reap_quietly(cfg.paths.home)  # an earlier, killed run's leftovers: KILLED / Crashed
    with liveness.pipeline_run(cfg) as lease, \
            run_context(tracker := Tracker.from_config(cfg), name, tags) as parent, \
            lifecycle.deferred_sigterm():
        lease.bind(parent)
        tracker.log_config(parent, cfg)
        log.info("%s: MLflow parent run %s in %s", what, parent, tracking_uri(cfg))
        yield tracker, parent


def run_worker(cfg: TransferLabConfig, until: str) -> dict[str, Any]:
    """What a rank > 0 does for any command: reuse rank 0's prep, take part in pretraining, stop.

    No Prefect, no MLflow, no carbon tracker, no cache writes. Stages after pretraining run
    single-device in rank 0 only.
    """
    ctx = StageContext.create(cfg)  # a NullTracker in this rank
    fp = prep_fingerprint(cfg)
    cache = StageCache(ctx.home, "prep")
    deadline = time.monotonic() + PREP_WAIT_S
    while cache.lookup(fp) is None:
        if time.monotonic() > deadline:
            raise UserError(f"rank {global_rank()}: no prepared data {cache.path(fp)} after {PREP_WAIT_S:.0f} s; "
                            "paths.home must be on a filesystem all nodes share")
        time.sleep(2.0)
    prep_record = stages.prep(ctx)  # a cache hit: reads the record, logs nowhere
    if until == "prep":
        return {"rank": global_rank(), "until": until}
    pretrain_in_worker_rank(ctx, prep_record)
    return {"rank": global_rank(), "until": "pretrain"}


def run_pipeline(cfg: TransferLabConfig, until: str = "evaluate") -> dict[str, Any]:
    """Run the stages up to ``until`` under one MLflow parent run; return a summary."""
    if until not in STAGES:
        raise UserError(f"unknown stage {until!r} (choices: {', '.join(STAGES)})")
    check_inputs(cfg, until)  # before the parent run exists: bad input leaves nothing behind
    resolve_init(cfg)  # model.init -> a local checkpoint dir (downloads); every rank needs it
    if until in ("finetune", "evaluate"):  # a checkpoint's family is known now: fail before pretraining
        check_zero_shot(cfg.finetune, cfg.model.family)
        check_task(cfg.finetune, cfg.model.family)
    if not is_rank_zero():  # another rank of a DDP/FSDP pretraining: train only, log nothing
        return run_worker(cfg, until)
    started = time.perf_counter()
    name = cfg.tracking.run_name or f"{cfg.experiment_name}-{cfg.model.name}"
    tags = {TAG_KIND: "pipeline", "transferlab.experiment": cfg.experiment_name, "transferlab.until": until}
    with parent_run(cfg, name, tags, "pipeline") as (tracker, parent):
        records: list[StageRecord] = [prep_record := prep_task(cfg, parent)]
        summary: dict[str, Any] = {"parent_run_id": parent, "tracking_uri": tracking_uri(cfg),
                                   "experiment": cfg.tracking.experiment,
                                   "experiment_id": tracker.experiment_id, "until": until}
        if until != "prep":
            records.append(pretrain_record := pretrain_task(cfg, prep_record, parent))
        if until in ("finetune", "evaluate"):
            tuned = [finetune_task.with_options(task_run_name=f"finetune[{init_label(init)}]")(
                cfg, prep_record, pretrain_record, init, parent) for init in cfg.finetune.inits]
            if cfg.distill.enabled:  # a student of one of them: one more init in the summary and the report
                tuned = [*tuned, distill_task(cfg, prep_record, pretrain_record, tuned, parent)]
            records += tuned
            summary["headline"] = headline(cfg.finetune.task, tuned)
            summary["inference"] = {r.init: r.inference for r in tuned if r.inference}  # what using each costs
            registered = register_best(StageContext(cfg, tracker, parent), prep_record, pretrain_record, tuned)
            if registered:
                summary["registered_model"] = registered
        if until == "evaluate":
            records.append(ev := evaluate_task(cfg, prep_record, pretrain_record, tuned, parent))
            summary["report"] = ev.report
            summary["evaluate"] = ev.metrics
            for name_ in ev.artifacts:  # the report and the plots it links to
                tracker.log_artifact(parent, f"{ev.path}/{name_}")
        totals = carbon_totals(records)
        parent_metrics = dict(totals)
        if until == "finetune":  # no evaluate stage to name them: the same per-init keys it would log
            parent_metrics.update(per_init_test_metrics(tuned))
        if until == "evaluate":
            parent_metrics.update({k: v for k, v in summary["evaluate"].items() if k.startswith("test/")})
        tracker.log_metrics(parent, parent_metrics)
        summary["stages"] = stage_summaries(records)
        summary["totals"] = totals
    summary["wall_s"] = time.perf_counter() - started
    _publish_summary(cfg, summary)
    return summary


def _publish_summary(cfg: TransferLabConfig, summary: dict[str, Any]) -> None:
    """The run's headline numbers and a link to its MLflow parent, on the Prefect flow run."""
    from pathlib import Path

    link = run_link(cfg, summary["tracking_uri"], summary["experiment_id"], summary["parent_run_id"])
    report = Path(summary["report"]).read_text() if summary.get("report") else None
    publish(pipeline_markdown(summary, link, report), f"transferlab {summary['until']}: key metrics and MLflow link")


@flow(name="transfer_learning")
def transfer_learning(overrides: list[str] | None = None) -> dict[str, Any]:
    """The whole pipeline: prep -> pretrain -> finetune (each of finetune.inits) [-> distill] -> evaluate."""
    return run_pipeline(compose(overrides or []), "evaluate")


@flow(name="transferlab_stage")
def run_stage(stage: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """One stage, with its missing upstream stages produced (or reused from cache) first."""
    return run_pipeline(compose(overrides or []), stage)
