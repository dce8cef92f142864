"""pretrain: train the LM on the prepared corpus and export it; cached by fingerprint, resumable.

A pretraining run can take hours and die at any moment (SIGKILL, preemption, OOM). It
builds in a deterministic work dir, ``cache/pretrain/.partial-<fp>/`` (see
``pipelines.cache.store.ResumableBuild``), that outlives the process:

- ``checkpoints/step=*.ckpt`` — atomic Lightning checkpoints every
  ``pretrain.checkpoint_every_n_steps``, newest ``pretrain.keep_checkpoints`` kept;
- ``state.json`` — the MLflow child run id, so the rerun continues the same run;
- ``carbon/attempt-*.json`` — each attempt's running carbon figures.

Running the same command again resumes from the newest intact checkpoint, reopens the
same MLflow run (step axis continues), sums carbon over attempts and, when training is
done, renames the dir to ``cache/pretrain/<fp>`` with ``record.json`` written last.
Another run needing the same model meanwhile waits for this one (``StageCache.claim``)
and reuses it; if this one dies, the waiter resumes the partial dir in its place.

The claim, the resumable build and publishing are the shared skeleton
(``pipelines.stages.cached``); this module supplies the training (:func:`_train_and_export`).

Under DDP/FSDP global rank 0 calls :func:`pretrain` and only it touches MLflow, carbon and
the cache; the other ranks call :func:`pretrain_in_worker_rank` (``runtime.distributed``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

from pipelines import checkpoint_refs
from pipelines.cache.store import ResumableBuild, StageCache, fingerprint
from pipelines.config.schema import TransferLabConfig
from pipelines.stages.cached import CachedStage, CacheEntry, cached_stage
from pipelines.stages.common import StageContext, StageRun
from pipelines.stages.records import PrepRecord, PretrainRecord
from pipelines.tracking import registry
from pipelines.tracking.runs import tracking_uri

log = logging.getLogger("transferlab")


def pretrain_fingerprint(cfg: TransferLabConfig, prep_fp: str) -> str:
    # devices/strategy/num_nodes change the global batch (per-device batch x world size),
    # so they are part of what the result depends on.
    trainer = {k: getattr(cfg.trainer, k) for k in ("accelerator", "precision", "deterministic", "devices", "strategy",
                                              "num_nodes")}
    # A checkpoint counts by its content digest, not its URI (an alias can move).
    return fingerprint("pretrain", {"prep": prep_fp, "model": checkpoint_refs.model_identity(cfg.model),
                                    "pretrain": asdict(cfg.pretrain),
                                    "trainer": trainer, "seed": cfg.seed})


@contextmanager
def lightning_logger(ctx: StageContext, run: StageRun) -> Iterator[Any]:
    """Lightning's MLFlowLogger writing into the stage's own child run, off the training thread.

    synchronous=False: step metrics go to the store from MLflow's logging thread, so a
    sqlite write (~10 ms) never stalls a training step; leaving the block (also on an error)
    flushes them, so the run is complete before the stage ends it. On a resumed run this is
    the same run id as before, so the step axis continues.
    """
    import mlflow
    from lightning.pytorch.loggers import MLFlowLogger

    try:
        yield MLFlowLogger(experiment_name=ctx.cfg.tracking.experiment, tracking_uri=tracking_uri(ctx.cfg),
                           run_id=run.run_id, synchronous=False)
    finally:
        mlflow.flush_async_logging()


def _prune_for_publish(work_dir: Path) -> None:
    """Drop the step checkpoints (resume points) once ``last.ckpt`` holds the final state."""
    from modules.training.checkpointing import step_checkpoints

    ckpt_dir = work_dir / "checkpoints"
    if not ckpt_dir.is_dir():  # a pass-through trains nothing
        return
    for _, path in step_checkpoints(ckpt_dir):
        path.unlink()
    for path in ckpt_dir.glob("*.corrupt"):
        path.unlink()


def _set_aside_bad_checkpoint(work_dir: Path) -> None:
    """Before any rank can resume from it: an unreadable newest checkpoint is moved aside."""
    from modules.training.checkpointing import latest_good_checkpoint, set_aside

    ckpt_dir = work_dir / "checkpoints"
    set_aside(ckpt_dir, latest_good_checkpoint(ckpt_dir))


def _train_and_export(ctx: StageContext, prep_record: PrepRecord, passthrough: bool, run: StageRun,
                      work_dir: Path) -> dict[str, Any]:
    """Train (or continue training) the LM in the work dir and export it; record.json's fields.

    With ``passthrough`` (max_steps=0) the checkpoint itself is this pipeline's pretrained model.
    """
    from modules.training.recipes import export_checkpoint, pretrain_language_model

    cfg = ctx.cfg
    log.info("pretrain: training %s for %d steps in %s", cfg.model.name, cfg.pretrain.max_steps, work_dir)
    if passthrough:
        assert cfg.model.init_path, "resolve_init ran before the stages"
        result = export_checkpoint(Path(cfg.model.init_path), Path(prep_record.path), work_dir, cfg.model)
    else:
        with lightning_logger(ctx, run) as logger:
            result = pretrain_language_model(Path(prep_record.path), work_dir, cfg.model, cfg.pretrain,
                                             cfg.trainer, cfg.seed, logger=logger)
    run.log_metrics({"model/non_embedding_parameters": result.parameters})
    if result.compiled is not None:  # what trainer.compile=auto decided, and against which threshold
        try:
            run.tracker.log_params(run.run_id, result.compiled.params())
        except Exception as exc:  # params are write-once: a resumed attempt that decided otherwise
            log.info("pretrain: compile decision not recorded again (%s)", exc)
    if getattr(result, "resumed_from_step", None) is not None:
        run.set_tags({"transferlab.resumed_from_step": str(result.resumed_from_step)})
    _prune_for_publish(work_dir)
    if not passthrough:  # a pass-through is already stored where model.init points
        run.log_artifact(work_dir / "hf_model", "hf_model")
    if (work_dir / "checkpoints" / "last.ckpt").exists():
        run.log_artifact(work_dir / "checkpoints" / "last.ckpt", "checkpoints")
    return {"metrics": result.metrics, "steps": result.steps, "parameters": result.parameters}


def pretrain_in_worker_rank(ctx: StageContext, prep_record: PrepRecord) -> None:
    """Ranks > 0 of a DDP/FSDP pretraining: the same training in rank 0's work dir; no run,
    carbon, record or publish (rank 0 owns those)."""
    from modules.training.recipes import pretrain_language_model

    cfg = checkpoint_refs.resolve_init(ctx.cfg)
    cache = StageCache(ctx.home, "pretrain")
    fp = pretrain_fingerprint(cfg, prep_record.lm_fingerprint)
    if cache.lookup(fp) is None:  # rank 0 sees the same cache state, so it trains too
        pretrain_language_model(Path(prep_record.path), ResumableBuild(cache, fp).path, cfg.model,
                                cfg.pretrain, cfg.trainer, cfg.seed, logger=False)


def _tag_init(run: StageRun, cfg: TransferLabConfig) -> None:
    if not cfg.model.from_scratch:
        run.set_tags({"transferlab.model_init": checkpoint_refs.source_label(cfg.model.init)})


def _register(ctx: StageContext, run: StageRun, prep_record: PrepRecord, entry: CacheEntry) -> dict[str, Any] | None:
    """Register the export under pretrain.register_as (one version per fingerprint)."""
    if not ctx.cfg.pretrain.register_as:
        return None
    source, carbon = run.run_id, run.carbon.as_dict()
    if entry.hit:
        source = entry.record["run_id"]
        if registry.has_hf_model(ctx.tracker, source):
            carbon = registry.source_carbon(ctx.tracker, source)
        else:  # the building run is not in this store: this run carries the export
            source = run.run_id
            run.log_artifact(entry.path / "hf_model", "hf_model")
    max_steps = ctx.cfg.pretrain.max_steps
    steps = entry.record.get("steps", max_steps) if entry.hit else max_steps  # a build: what it was asked
    return registry.register_export(ctx.tracker, ctx.cfg, run.run_id, source, entry.record["fingerprint"],
                                    prep_record, steps, entry.record["metrics"], carbon)


def pretrain(ctx: StageContext, prep_record: PrepRecord) -> PretrainRecord:
    """Rank 0's pretraining (other ranks: :func:`pretrain_in_worker_rank`), cached and resumable."""
    cfg = checkpoint_refs.resolve_init(ctx.cfg)  # no-op when the flow resolved it already
    passthrough = checkpoint_refs.passthrough(cfg)

    def log_entry(run: StageRun, entry: CacheEntry) -> None:
        if entry.hit:  # the metrics of the model this pipeline uses, so the run reads complete
            run.log_metrics({k: v for k, v in entry.record["metrics"].items() if k.startswith("val/")})
        _tag_init(run, cfg)

    def make_record(run: StageRun, entry: CacheEntry) -> PretrainRecord:
        registered = None if passthrough else _register(ctx, run, prep_record, entry)
        return PretrainRecord(**entry.record_fields(run), hf_model=str(entry.path / "hf_model"),
                              metrics=entry.record["metrics"], registered_model=registered)

    fp = pretrain_fingerprint(cfg, prep_record.lm_fingerprint)
    return cached_stage(ctx, CachedStage("pretrain", fp, partial(_train_and_export, ctx, prep_record, passthrough),
                                         make_record, log_entry, resumable=True, before_run=_set_aside_bad_checkpoint))
