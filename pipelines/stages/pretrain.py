"""pretrain: train the LM on the prepared corpus and export it; cached by fingerprint."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipelines.cache import StageCache, fingerprint, write_record
from pipelines.stages.common import StageContext, StageRun, record, tracked_stage
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
        cached = cache.lookup(fp)
        if cached is not None:
            log.info("pretrain: cache hit %s, reusing %s", fp, cache.path(fp))
            run.mark_cache(True, fp, cached.get("run_id"))
            # The metrics of the model this pipeline uses, so the run reads complete.
            run.log_metrics({k: v for k, v in cached["metrics"].items() if k.startswith("val/")})
            metrics = cached["metrics"]
        else:
            log.info("pretrain: cache miss %s; training %s for %d steps", fp, cfg["model"]["name"],
                     cfg["pretrain"]["max_steps"])
            run.mark_cache(False, fp)
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
    return record("pretrain", run, fingerprint=fp, path=str(cache.path(fp)),
                  hf_model=str(cache.path(fp) / "hf_model"), cache_hit=cached is not None,
                  source_run_id=cached["run_id"] if cached else run.run_id, metrics=metrics)
