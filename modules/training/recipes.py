"""Training recipes: model + data + Trainer in, plain results out.

The pipeline stages call these with a logger they own and get back JSON-able results;
nothing here knows about MLflow runs, caching or Prefect.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from datasets import load_from_disk
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import Logger
from transformers import AutoTokenizer

from modules.data.datamodules import ClassificationData, LanguageModelingData
from modules.data.sampling import stratified_subset
from modules.models.factory import build_classifier, build_lm, count_parameters, lm_config
from modules.training.callbacks import ProgressLog, ThroughputMonitor, flops_per_token
from modules.training.classification import SequenceClassification
from modules.training.lm import LanguageModelPretraining
from modules.training.trainer import make_trainer

log = logging.getLogger("transferlab")

# Dense peak FLOP/s for MFU when trainer.peak_flops is null. CPU: the fp32 matmul peak
# measured on the 2-core AVX-512 reference machine (~200 GFLOP/s); GPU: H100 SXM bf16.
DEFAULT_PEAK_FLOPS = {"cpu": 2.0e11, "gpu": 9.89e14, "cuda": 9.89e14}


def attention_layers(model_cfg: dict[str, Any]) -> int:
    """Attention blocks per token for the FLOP count: a seq2seq decoder layer has two
    (self and cross attention) on top of the encoder's."""
    if model_cfg["family"] != "seq2seq":
        return model_cfg["n_layer"]
    return model_cfg["n_layer"] + 2 * (model_cfg.get("n_decoder_layer") or model_cfg["n_layer"])


@dataclass
class PretrainResult:
    steps: int
    metrics: dict[str, float]
    parameters: int
    last_checkpoint: str | None
    hf_model: str


@dataclass
class FinetuneResult:
    metrics: dict[str, float]
    predictions: list[int]
    labels: list[int]
    train_examples: int
    best_checkpoint: str | None
    epochs: int


def pretrain_language_model(
    prep_dir: Path,
    out_dir: Path,
    model_cfg: dict[str, Any],
    pretrain_cfg: dict[str, Any],
    trainer_cfg: dict[str, Any],
    seed: int,
    logger: Logger | bool = False,
) -> PretrainResult:
    """Pretrain a fresh LM on the prepared blocks and export it with ``save_pretrained``."""
    L.seed_everything(seed, workers=True, verbose=False)
    family = model_cfg["family"]
    tokenizer = AutoTokenizer.from_pretrained(str(prep_dir / "tokenizer"))
    model = build_lm(lm_config(model_cfg, tokenizer), family)
    n_params = count_parameters(model)
    if trainer_cfg["compile"]:
        # The compiled wrapper forwards attribute access, so save_pretrained below still
        # writes the plain model's weights.
        model = torch.compile(model)
    log.info("pretrain: %s (%s), %.2fM non-embedding parameters", model_cfg["name"], family, n_params / 1e6)

    data = LanguageModelingData(prep_dir / "lm", tokenizer, family, pretrain_cfg["batch_size"],
                                pretrain_cfg["mlm_probability"], seed=seed,
                                mask_ratio=pretrain_cfg["mask_ratio"], poisson_lambda=pretrain_cfg["poisson_lambda"])
    module = LanguageModelPretraining(model, pretrain_cfg["lr"], pretrain_cfg["weight_decay"],
                                      pretrain_cfg["warmup_steps"], pretrain_cfg["max_steps"])
    every = trainer_cfg["log_every_n_steps"]
    throughput = ThroughputMonitor(
        flops_per_token(n_params, attention_layers(model_cfg), model_cfg["n_embd"], pretrain_cfg["block_size"]),
        trainer_cfg["peak_flops"] or DEFAULT_PEAK_FLOPS.get(trainer_cfg["accelerator"], DEFAULT_PEAK_FLOPS["cpu"]),
        every,
    )
    checkpoints = ModelCheckpoint(dirpath=out_dir / "checkpoints", save_last=True, save_top_k=0,
                                  every_n_train_steps=pretrain_cfg["val_every_n_steps"])
    trainer = make_trainer(
        trainer_cfg, out_dir, [throughput, ProgressLog("pretrain", trainer_cfg["progress_every_n_steps"]), checkpoints],
        logger,
        max_steps=pretrain_cfg["max_steps"],
        val_check_interval=pretrain_cfg["val_every_n_steps"],
        check_val_every_n_epoch=None,
        limit_val_batches=pretrain_cfg["val_batches"],
        gradient_clip_val=pretrain_cfg["grad_clip"],
    )
    trainer.fit(module, datamodule=data)
    if trainer.global_step % pretrain_cfg["val_every_n_steps"]:
        trainer.validate(module, datamodule=data, verbose=False)  # the final model's val loss
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("val/", "train/"))}
    if throughput.steady_tokens_per_sec() is not None:
        metrics["train/tokens_per_sec"] = throughput.steady_tokens_per_sec()

    hf_dir = out_dir / "hf_model"
    module.model.save_pretrained(str(hf_dir))
    tokenizer.save_pretrained(str(hf_dir))
    last = out_dir / "checkpoints" / "last.ckpt"
    return PretrainResult(trainer.global_step, metrics, n_params, str(last) if last.exists() else None, str(hf_dir))


def finetune_classifier(
    prep_dir: Path,
    source_model: Path,
    init: str,
    out_dir: Path,
    finetune_cfg: dict[str, Any],
    trainer_cfg: dict[str, Any],
    seed: int,
    eval_batch_size: int = 64,
    logger: Logger | bool = False,
) -> FinetuneResult:
    """Fine-tune ``init`` (pretrained weights or a fresh copy of the architecture) on a
    stratified ``train_examples`` subset, early-stopped on val/loss; test the best epoch."""
    L.seed_everything(seed, workers=True, verbose=False)
    tokenizer = AutoTokenizer.from_pretrained(str(source_model))
    splits = load_from_disk(str(prep_dir / "labeled"))
    num_labels = splits["train"].features["label"].num_classes
    pool = splits["train"]
    budget = finetune_cfg["train_examples"]
    if budget > len(pool):
        log.warning("finetune.train_examples=%d exceeds the labeled pool (%d); using all of it", budget, len(pool))
    subset = pool.select(stratified_subset(pool["label"], budget, seed))
    data = ClassificationData({"train": subset, "validation": splits["validation"], "test": splits["test"]},
                              tokenizer, finetune_cfg["batch_size"], eval_batch_size)

    model = build_classifier(source_model, init, num_labels, finetune_cfg["dropout"])
    module = SequenceClassification(model, num_labels, finetune_cfg["lr"], finetune_cfg["weight_decay"],
                                    finetune_cfg["warmup_ratio"])
    steps_per_epoch = max(1, len(subset) // finetune_cfg["batch_size"])
    best = ModelCheckpoint(dirpath=out_dir / "checkpoints", monitor="val/loss", mode="min", save_top_k=1,
                           filename="best")
    stop = EarlyStopping(monitor="val/loss", mode="min", patience=finetune_cfg["patience"])
    name = f"finetune[{init}]"
    trainer = make_trainer(
        {**trainer_cfg, "log_every_n_steps": min(trainer_cfg["log_every_n_steps"], steps_per_epoch)},
        out_dir, [best, stop, ProgressLog(name, trainer_cfg["progress_every_n_steps"])], logger,
        max_epochs=finetune_cfg["max_epochs"],
    )
    log.info("%s: %d labeled examples, %d classes", name, len(subset), num_labels)
    trainer.fit(module, datamodule=data)
    trainer.test(module, datamodule=data, ckpt_path="best" if best.best_model_path else None, verbose=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("test/", "val/"))}
    log.info("%s: stopped after %d epochs; test/accuracy %.4f", name, trainer.current_epoch, metrics.get("test/accuracy", float("nan")))
    hf_dir = out_dir / "hf_model"
    module.model.save_pretrained(str(hf_dir))
    tokenizer.save_pretrained(str(hf_dir))
    return FinetuneResult(metrics, list(module.test_predictions), list(splits["test"]["label"]), len(subset),
                          best.best_model_path or None, trainer.current_epoch)
