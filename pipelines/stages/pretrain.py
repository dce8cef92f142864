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

Under DDP/FSDP every rank calls :func:`pretrain`; only global rank 0 touches MLflow,
carbon and the cache (:func:`_train_in_other_rank` is the rest).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipelines import checkpoint_refs as model_init
from pipelines.cache.store import ResumableBuild, StageCache, fingerprint, write_record
from pipelines.config.schema import TransferLabConfig
from pipelines.runtime.distributed import is_rank_zero
from pipelines.stages.common import (
    StageContext,
    StageRun,
    cache_fields,
    record,
    reuse,
    tracked_stage,
    wait_timeout,
)
from pipelines.tracking import registry
from pipelines.tracking.carbon import AttemptLedger
from pipelines.tracking.runs import Tracker, tracking_uri

log = logging.getLogger("transferlab")


def pretrain_fingerprint(cfg: TransferLabConfig, prep_fp: str) -> str:
    # devices/strategy/num_nodes change the global batch (per-device batch x world size),
    # so they are part of what the result depends on.
    trainer = {k: getattr(cfg.trainer, k) for k in ("accelerator", "precision", "deterministic", "devices", "strategy",
                                              "num_nodes")}
    # A checkpoint counts by its content digest, not its URI (an alias can move).
    return fingerprint("pretrain", {"prep": prep_fp, "model": model_init.model_identity(cfg.model),
                                    "pretrain": asdict(cfg.pretrain),
                                    "trainer": trainer, "seed": cfg.seed})


def lightning_logger(ctx: StageContext, run: StageRun):
    """Lightning's MLFlowLogger writing into the stage's own child run.

    On a resumed run this is the same run id as before, so the step axis continues.
    """
    from lightning.pytorch.loggers import MLFlowLogger

    return MLFlowLogger(experiment_name=ctx.cfg.tracking.experiment, tracking_uri=tracking_uri(ctx.cfg),
                        run_id=run.run_id)


def _train(ctx: StageContext, prep_record: dict[str, Any], work_dir: Path, logger: Any = False):
    """The one call into modules/ (all ranks)."""
    from modules.training.recipes import pretrain_language_model

    cfg = ctx.cfg
    return pretrain_language_model(Path(prep_record["path"]), work_dir, cfg.model, cfg.pretrain,
                                   cfg.trainer, cfg.seed, logger=logger)


def _resumable_run_id(tracker: Tracker, state: dict[str, Any]) -> str | None:
    """The earlier attempt's run id if that run still exists in this tracking store."""
    run_id = state.get("run_id")
    if not run_id:
        return None
    try:
        run = tracker.client.get_run(run_id)
    except Exception:  # another store (tracking.uri changed) or purged
        log.warning("pretrain: earlier MLflow run %s not found; starting a new run", run_id)
        return None
    if run.info.lifecycle_stage == "deleted":
        log.warning("pretrain: earlier MLflow run %s was deleted; starting a new run", run_id)
        return None
    return run_id


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


def _build(ctx: StageContext, prep_record: dict[str, Any], cache: StageCache, fp: str,
           passthrough: bool = False) -> dict[str, Any]:
    """Train (or continue training) into the partial dir, then publish it (rank 0)."""
    from modules.training.checkpointing import latest_good_checkpoint, set_aside

    cfg = ctx.cfg
    with ResumableBuild(cache, fp) as build:
        resume_run_id = _resumable_run_id(ctx.tracker, build.state()) if build.resuming else None
        ckpt_dir = build.path / "checkpoints"
        set_aside(ckpt_dir, latest_good_checkpoint(ckpt_dir))  # before any rank can pick a bad one
        with tracked_stage(ctx, "pretrain", resume_run_id=resume_run_id,
                           ledger=AttemptLedger(build.path / "carbon")) as run:
            build.save_state({"run_id": run.run_id, "fingerprint": fp})
            run.mark_cache(False, fp)
            if resume_run_id:
                log.info("pretrain: resuming %s in MLflow run %s", build.path, run.run_id)
            else:
                log.info("pretrain: training %s for %d steps in %s", cfg.model.name,
                         cfg.pretrain.max_steps, build.path)
            if passthrough:  # max_steps=0: the checkpoint itself is this pipeline's pretrained model
                from modules.training.recipes import export_checkpoint

                assert cfg.model.init_path, "resolve_init ran before the stages"
                result = export_checkpoint(Path(cfg.model.init_path), Path(prep_record["path"]), build.path,
                                           cfg.model)
            else:
                result = _train(ctx, prep_record, build.path, lightning_logger(ctx, run))
            metrics = result.metrics
            run.log_metrics({"model/non_embedding_parameters": result.parameters})
            if getattr(result, "resumed_from_step", None) is not None:
                run.set_tags({"transferlab.resumed_from_step": str(result.resumed_from_step)})
            _tag_init(run, cfg)
            _prune_for_publish(build.path)
            if not passthrough:  # a pass-through is already stored where model.init points
                run.log_artifact(build.path / "hf_model", "hf_model")
            if (build.path / "checkpoints" / "last.ckpt").exists():
                run.log_artifact(build.path / "checkpoints" / "last.ckpt", "checkpoints")
        # After the run (and its carbon tracker, which writes into the work dir) has ended.
        write_record(build.path, {"stage": "pretrain", "fingerprint": fp, "run_id": run.run_id,
                                  "metrics": metrics, "steps": result.steps, "parameters": result.parameters})
        final = build.publish()
    # After the run ended, so the carbon figures are final.
    registered = None if passthrough else _register(ctx, run, fp, prep_record, None, metrics)
    return record("pretrain", run, **cache_fields(run, cache, fp, None), hf_model=str(final / "hf_model"),
                  metrics=metrics, registered_model=registered)


def _train_in_other_rank(ctx: StageContext, prep_record: dict[str, Any], cache: StageCache,
                         fp: str) -> dict[str, Any]:
    """Ranks > 0: the same training in the same work dir; no run, carbon, record or publish."""
    if cache.lookup(fp) is None:  # rank 0 sees the same cache state, so it trains too
        _train(ctx, prep_record, ResumableBuild(cache, fp).path)
    return {"stage": "pretrain", "fingerprint": fp, "path": str(cache.path(fp))}


def _tag_init(run: StageRun, cfg: TransferLabConfig) -> None:
    if not model_init.is_scratch(cfg.model):
        run.set_tags({"transferlab.model_init": model_init.source_label(cfg.model.init)})


def _register(ctx: StageContext, run: StageRun, fp: str, prep_record: dict[str, Any], cached: dict[str, Any] | None,
              metrics: dict[str, float]) -> dict[str, Any] | None:
    """Register the export under pretrain.register_as (one version per fingerprint)."""
    if not ctx.cfg.pretrain.register_as:
        return None
    source, carbon = run.run_id, run.carbon.as_dict()
    if cached is not None:
        source = cached["run_id"]
        if registry.has_hf_model(ctx.tracker, source):
            carbon = registry.source_carbon(ctx.tracker, source)
        else:  # the building run is not in this store: this run carries the export
            source = run.run_id
            run.log_artifact(StageCache(ctx.home, "pretrain").path(fp) / "hf_model", "hf_model")
    steps = (cached or {}).get("steps", ctx.cfg.pretrain.max_steps)
    return registry.register_export(ctx.tracker, ctx.cfg, run.run_id, source, fp, prep_record, steps, metrics, carbon)


def pretrain(ctx: StageContext, prep_record: dict[str, Any]) -> dict[str, Any]:
    cfg = model_init.resolve_init(ctx.cfg)  # no-op when the flow resolved it already
    passthrough = model_init.passthrough(cfg)
    fp = pretrain_fingerprint(cfg, prep_record["lm_fingerprint"])
    cache = StageCache(ctx.home, "pretrain")
    if not is_rank_zero():
        return _train_in_other_rank(ctx, prep_record, cache, fp)
    # Another run training the same model: wait for it, then reuse its export. The build
    # lock is held through publishing and registering, so a waiter finds both done.
    with cache.claim(fp, wait_timeout(cfg)) as claim:
        if not claim.done:
            return _build(ctx, prep_record, cache, fp, passthrough)
    with tracked_stage(ctx, "pretrain") as run:
        cached = reuse(run, cache, fp, "pretrain", claim)
        # The metrics of the model this pipeline uses, so the run reads complete.
        run.log_metrics({k: v for k, v in cached["metrics"].items() if k.startswith("val/")})
        _tag_init(run, cfg)
    # After the run ended, so the carbon figures are final.
    registered = None if passthrough else _register(ctx, run, fp, prep_record, cached, cached["metrics"])
    return record("pretrain", run, **cache_fields(run, cache, fp, cached),
                  hf_model=str(cache.path(fp) / "hf_model"), metrics=cached["metrics"], registered_model=registered)
