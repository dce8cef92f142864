"""pretrain: train the LM on the prepared corpus and export it; cached by fingerprint."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

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
    return fingerprint("pretrain", {"prep": prep_fp, "model": cfg["model"], "pretrain": cfg["pretrain"],
                                    "trainer": trainer, "seed": cfg["seed"]})


def lightning_logger(ctx: StageContext, run: StageRun):
    """Lightning's MLFlowLogger writing into the stage's own child run."""
    from lightning.pytorch.loggers import MLFlowLogger

    return MLFlowLogger(experiment_name=ctx.cfg["tracking"]["experiment"], tracking_uri=tracking_uri(ctx.cfg),
                        run_id=run.run_id)


def pretrain(ctx: StageContext, prep_record: dict[str, Any]) -> dict[str, Any]:
    from modules.training.recipes import pretrain_language_model

    cfg = ctx.cfg
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
                result = pretrain_language_model(Path(prep_record["path"]), tmp, cfg["model"], cfg["pretrain"],
                                                 cfg["trainer"], cfg["seed"], logger=lightning_logger(ctx, run))
                metrics = result.metrics
                write_record(tmp, {"stage": "pretrain", "fingerprint": fp, "run_id": run.run_id,
                                   "metrics": metrics, "steps": result.steps, "parameters": result.parameters})
            run.log_metrics({"model/non_embedding_parameters": result.parameters})
            final = cache.path(fp)
            run.log_artifact(final / "hf_model", "hf_model")
            if (final / "checkpoints" / "last.ckpt").exists():
                run.log_artifact(final / "checkpoints" / "last.ckpt", "checkpoints")
    return record("pretrain", run, **cache_fields(run, cache, fp, cached),
                  hf_model=str(cache.path(fp) / "hf_model"), metrics=metrics)
