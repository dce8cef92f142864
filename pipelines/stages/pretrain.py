"""pretrain: train the LM on the prepared corpus and export it; cached by fingerprint."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipelines import model_init, registry
from pipelines.cache import StageCache, fingerprint, write_record
from pipelines.stages.common import (
    StageContext,
    StageRun,
    cache_fields,
    record,
    reuse,
    tracked_stage,
)
from pipelines.tracking import tracking_uri

log = logging.getLogger("transferlab")


def pretrain_fingerprint(cfg: dict[str, Any], prep_fp: str) -> str:
    trainer = {k: cfg["trainer"][k] for k in ("accelerator", "precision", "deterministic")}
    # A checkpoint counts by its content digest, not its URI (an alias can move).
    return fingerprint("pretrain", {"prep": prep_fp, "model": model_init.model_identity(cfg["model"]),
                                    "pretrain": cfg["pretrain"],
                                    "trainer": trainer, "seed": cfg["seed"]})


def lightning_logger(ctx: StageContext, run: StageRun):
    """Lightning's MLFlowLogger writing into the stage's own child run."""
    from lightning.pytorch.loggers import MLFlowLogger

    return MLFlowLogger(experiment_name=ctx.cfg["tracking"]["experiment"], tracking_uri=tracking_uri(ctx.cfg),
                        run_id=run.run_id)


def pretrain(ctx: StageContext, prep_record: dict[str, Any]) -> dict[str, Any]:
    from modules.training.recipes import export_checkpoint, pretrain_language_model

    cfg = model_init.resolve_init(ctx.cfg)  # no-op when the flow resolved it already
    passthrough = model_init.passthrough(cfg)
    fp = pretrain_fingerprint(cfg, prep_record["fingerprint"])
    cache = StageCache(ctx.home, "pretrain")
    with tracked_stage(ctx, "pretrain") as run:
        cached = reuse(run, cache, fp, "pretrain")
        if cached is not None:
            # The metrics of the model this pipeline uses, so the run reads complete.
            run.log_metrics({k: v for k, v in cached["metrics"].items() if k.startswith("val/")})
            metrics = cached["metrics"]
        else:
            log.info("pretrain: training %s for %d steps", cfg["model"]["name"], cfg["pretrain"]["max_steps"])
            with cache.build(fp) as tmp:
                if passthrough:  # max_steps=0: the checkpoint itself is this pipeline's pretrained model
                    result = export_checkpoint(Path(cfg["model"]["init_path"]), Path(prep_record["path"]), tmp,
                                               cfg["model"])
                else:
                    result = pretrain_language_model(Path(prep_record["path"]), tmp, cfg["model"],
                                                     cfg["pretrain"], cfg["trainer"], cfg["seed"],
                                                     logger=lightning_logger(ctx, run))
                metrics = result.metrics
                write_record(tmp, {"stage": "pretrain", "fingerprint": fp, "run_id": run.run_id,
                                   "metrics": metrics, "steps": result.steps, "parameters": result.parameters})
            run.log_metrics({"model/non_embedding_parameters": result.parameters})
            final = cache.path(fp)
            if not passthrough:  # a pass-through is already stored where model.init points
                run.log_artifact(final / "hf_model", "hf_model")
            if (final / "checkpoints" / "last.ckpt").exists():
                run.log_artifact(final / "checkpoints" / "last.ckpt", "checkpoints")
        if not model_init.is_scratch(cfg["model"]):
            run.set_tags({"transferlab.model_init": model_init.source_label(cfg["model"]["init"])})
    # After the run ended, so the carbon figures are final.
    registered = None if passthrough else _register(ctx, run, fp, prep_record, cached, metrics)
    return record("pretrain", run, **cache_fields(run, cache, fp, cached),
                  hf_model=str(cache.path(fp) / "hf_model"), metrics=metrics, registered_model=registered)


def _register(ctx: StageContext, run: StageRun, fp: str, prep_record: dict[str, Any], cached: dict[str, Any] | None,
              metrics: dict[str, float]) -> dict[str, Any] | None:
    """Register the export under pretrain.register_as (one version per fingerprint)."""
    if not ctx.cfg["pretrain"]["register_as"]:
        return None
    source, carbon = run.run_id, run.carbon.as_dict()
    if cached is not None:
        source = cached["run_id"]
        if registry.has_hf_model(ctx.tracker, source):
            carbon = registry.source_carbon(ctx.tracker, source)
        else:  # the building run is not in this store: this run carries the export
            source = run.run_id
            run.log_artifact(StageCache(ctx.home, "pretrain").path(fp) / "hf_model", "hf_model")
    steps = (cached or {}).get("steps", ctx.cfg["pretrain"]["max_steps"])
    return registry.register_export(ctx.tracker, ctx.cfg, run.run_id, source, fp, prep_record, steps, metrics, carbon)
