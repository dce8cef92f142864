"""finetune: train a classifier from the pretrained export or from scratch, test it."""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path
from typing import Any

from pipelines.cache import atomic_dir
from pipelines.stages.common import StageContext, record, tracked_stage
from pipelines.stages.pretrain import lightning_logger
from pipelines.tracking import TAG_INIT, TAG_STRATEGY, TAG_TASK

log = logging.getLogger("transferlab")


def finetune(ctx: StageContext, prep_record: dict[str, Any], pretrain_record: dict[str, Any], init: str) -> dict[str, Any]:
    """Both inits use the pretrained export's architecture and tokenizer; only the
    weights differ (``init=scratch`` re-initialises them), on the same labeled subset."""
    from modules.training.recipes import finetune_classifier

    cfg = ctx.cfg
    tags = {TAG_INIT: init, TAG_TASK: cfg["finetune"]["task"], TAG_STRATEGY: cfg["finetune"]["strategy"]}
    with tracked_stage(ctx, "finetune", f"finetune-{init}", tags) as run:
        out = run.workdir / "output"
        with atomic_dir(out) as tmp:
            result = finetune_classifier(Path(prep_record["path"]), Path(pretrain_record["hf_model"]), init, tmp,
                                         cfg["finetune"], cfg["trainer"], cfg["seed"],
                                         cfg["evaluate"]["batch_size"], logger=lightning_logger(ctx, run))
            with open(tmp / "predictions.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["index", "label", "prediction"])
                writer.writerows(zip(range(len(result.labels)), result.labels, result.predictions, strict=True))
            # The best weights live on in hf_model/; the Lightning checkpoint (with optimizer
            # state, ~3x the size) has served its purpose once the test ran.
            shutil.rmtree(tmp / "checkpoints", ignore_errors=True)
        run.log_metrics({"data/train_examples": result.train_examples, "train/epochs": result.epochs,
                         "model/trainable_parameters": result.trainable_parameters})
        run.log_artifact(out / "predictions.csv")
        run.log_artifact(out / "hf_model", "hf_model")
    return record("finetune", run, init=init, strategy=result.strategy, path=str(out), predictions=str(out / "predictions.csv"),
                  metrics=result.metrics)
