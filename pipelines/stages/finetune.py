"""finetune: train a classifier from the pretrained export or from scratch, test it; or
classify zero-shot with the pretrained causal LM (init=zero_shot)."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from pipelines.cache import atomic_dir
from pipelines.errors import UserError
from pipelines.stages.common import StageContext, record, tracked_stage
from pipelines.stages.pretrain import lightning_logger
from pipelines.tracking import TAG_INIT, TAG_STRATEGY, TAG_TASK

log = logging.getLogger("transferlab")


def _write_predictions(path: Path, labels: list[int], predictions: list[int]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "label", "prediction"])
        writer.writerows(zip(range(len(labels)), labels, predictions, strict=True))


def zero_shot(ctx: StageContext, prep_record: dict[str, Any], pretrain_record: dict[str, Any]) -> dict[str, Any]:
    """init=zero_shot: no training; the pretrained causal LM classifies the test split by
    scoring each label's verbalisation after a prompt (modules/evaluation/zero_shot.py)."""
    from modules.evaluation.zero_shot import zero_shot_test
    from pipelines.config import check_zero_shot
    from pipelines.model_init import family_of

    cfg = ctx.cfg
    ft = cfg["finetune"]
    hf_model = Path(pretrain_record["hf_model"])
    # A model.init checkpoint's family is only known now (the config check covers scratch models).
    check_zero_shot(ft, family_of(json.loads((hf_model / "config.json").read_text()), str(hf_model)))
    names = prep_record["label_names"]
    if ft["zero_shot_verbalizers"] is not None and len(ft["zero_shot_verbalizers"]) != len(names):
        raise UserError(f"bad value for 'finetune.zero_shot_verbalizers': {len(ft['zero_shot_verbalizers'])} "
                        f"given for {len(names)} labels ({', '.join(names)}); one per label, in label-id order")
    tags = {TAG_INIT: "zero_shot", TAG_TASK: ft["task"]}
    with tracked_stage(ctx, "finetune", "finetune-zero_shot", tags) as run:
        out = run.workdir / "output"
        with atomic_dir(out) as tmp:
            result = zero_shot_test(prep_record["path"], hf_model, ft["zero_shot_template"],
                                    ft["zero_shot_verbalizers"], ft["zero_shot_normalize"],
                                    cfg["evaluate"]["batch_size"], cfg["model"]["trust_remote_code"])
            _write_predictions(tmp / "predictions.csv", result.labels, result.predictions)
        run.log_metrics({**result.metrics, "data/train_examples": 0, "model/trainable_parameters": 0})
        run.log_artifact(out / "predictions.csv")
        log.info("finetune[zero_shot]: verbalizers %s; test/accuracy %.4f (chance %.4f)",
                 result.verbalizers, result.metrics["test/accuracy"], 1 / len(names))
    return record("finetune", run, init="zero_shot", strategy=None, path=str(out),
                  predictions=str(out / "predictions.csv"), metrics=result.metrics)


def finetune(ctx: StageContext, prep_record: dict[str, Any], pretrain_record: dict[str, Any], init: str) -> dict[str, Any]:
    """Both inits use the pretrained export's architecture and tokenizer; only the
    weights differ (``init=scratch`` re-initialises them), on the same labeled subset.
    ``init=zero_shot`` trains nothing (see ``zero_shot``)."""
    if init == "zero_shot":
        return zero_shot(ctx, prep_record, pretrain_record)
    from modules.training.recipes import finetune_classifier

    cfg = ctx.cfg
    tags = {TAG_INIT: init, TAG_TASK: cfg["finetune"]["task"], TAG_STRATEGY: cfg["finetune"]["strategy"]}
    with tracked_stage(ctx, "finetune", f"finetune-{init}", tags) as run:
        out = run.workdir / "output"
        with atomic_dir(out) as tmp:
            result = finetune_classifier(Path(prep_record["path"]), Path(pretrain_record["hf_model"]), init, tmp,
                                         cfg["finetune"], cfg["trainer"], cfg["seed"],
                                         cfg["evaluate"]["batch_size"], logger=lightning_logger(ctx, run),
                                         trust_remote_code=cfg["model"]["trust_remote_code"])
            _write_predictions(tmp / "predictions.csv", result.labels, result.predictions)
            # The best weights live on in hf_model/; the Lightning checkpoint (with optimizer
            # state, ~3x the size) has served its purpose once the test ran.
            shutil.rmtree(tmp / "checkpoints", ignore_errors=True)
        run.log_metrics({"data/train_examples": result.train_examples, "train/epochs": result.epochs,
                         "model/trainable_parameters": result.trainable_parameters})
        run.log_artifact(out / "predictions.csv")
        run.log_artifact(out / "hf_model", "hf_model")
    return record("finetune", run, init=init, strategy=result.strategy, path=str(out), predictions=str(out / "predictions.csv"),
                  metrics=result.metrics)
