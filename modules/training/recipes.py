"""Training recipes: model + data + Trainer in, plain results out.

The pipeline stages call these with a logger they own and get back JSON-able results;
nothing here knows about MLflow runs, caching or Prefect.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
from datasets import load_from_disk
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import Logger
from transformers import AutoTokenizer

from modules.config import FinetuneConfig, ModelConfig, PretrainConfig, TrainerConfig, required
from modules.data.datamodules import LanguageModelingData
from modules.models.factory import (
    build_lm,
    count_parameters,
    fit_vocab,
    lm_config,
    load_lm,
    matmul_parameters,
)
from modules.models.freeze import apply_strategy
from modules.models.lora import LoraSettings, apply_lora, save_lora
from modules.training.callbacks import ExampleThroughput, ProgressLog, ThroughputMonitor, flops_per_token
from modules.training.checkpointing import (
    AtomicCheckpointIO,
    latest_good_checkpoint,
    step_checkpoint_callback,
)
from modules.training.compile_policy import CompileDecision, decide_compile
from modules.training.hardware import default_num_workers, default_peak_flops, resolve_precision
from modules.training.lm import LanguageModelPretraining
from modules.training.trainer import make_trainer

log = logging.getLogger("transferlab")
# finetune.strategy=linear_probe/partial put the frozen body in eval mode on purpose
# (modules/models/freeze.py); Lightning warns about any eval-mode module at fit start.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")

# Trainer settings for stages that never scale out (fine-tuning, evaluation).
SINGLE_DEVICE: dict[str, Any] = {"devices": 1, "strategy": "auto", "num_nodes": 1}


def attention_layers(model_cfg: ModelConfig) -> int:
    """Attention blocks per token for the FLOP count: a seq2seq decoder layer has two
    (self and cross attention) on top of the encoder's."""
    if model_cfg.family != "seq2seq":
        return model_cfg.n_layer
    return model_cfg.n_layer + 2 * (model_cfg.n_decoder_layer or model_cfg.n_layer)


@dataclass
class PretrainResult:
    steps: int
    metrics: dict[str, float]
    parameters: int
    last_checkpoint: str | None
    hf_model: str
    resumed_from_step: int | None = None  # the checkpoint's step when this attempt resumed
    compiled: CompileDecision | None = None  # None: nothing trained (a pass-through export)


@dataclass
class FinetuneResult:
    metrics: dict[str, float]
    predictions: list[dict[str, Any]]  # one row per test example (Task.prediction_rows)
    train_examples: int
    best_checkpoint: str | None
    epochs: int
    strategy: str = "full"
    trainable_parameters: int = 0  # parameters the optimizer updated (all of them for strategy=full)
    label_names: list[str] | None = None
    # The best epoch's (the tested one's) value of finetune.monitor; None: never validated.
    best_score: float | None = None
    total_parameters: int = 0  # of the model as exported (hf_model/)
    adapter_bytes: int | None = None  # strategy=lora: adapter/ on disk (None: none written)
    # How fast this run trained and tested (throughput/*): a property of the run, not of the
    # cached output, so it is logged but not part of ``metrics``.
    speed: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FinetuneJob:
    """Which fine-tune to run, apart from how (the ``finetune``/``trainer`` config groups):
    the data, the checkpoint and its weights, and where the result goes."""

    prep_dir: Path  # the prepared data; its labeled/ splits are tuned and tested on
    source_model: Path  # a local HF checkpoint dir: architecture and tokenizer (and weights)
    weights: str  # "pretrained": the checkpoint's weights; "scratch": fresh weights, same architecture
    family: str  # causal | masked | seq2seq
    out_dir: Path  # hf_model/, checkpoints/ and Lightning's files
    name: str | None = None  # how logs name the fine-tune (finetune[<name>]); default: weights
    trust_remote_code: bool = False


def pretrain_language_model(
    prep_dir: Path,
    out_dir: Path,
    model_cfg: ModelConfig,
    pretrain_cfg: PretrainConfig,
    trainer_cfg: TrainerConfig,
    seed: int,
    logger: Logger | bool = False,
) -> PretrainResult:
    """Pretrain an LM on the prepared blocks and export it with ``save_pretrained``: a fresh
    one, or with ``model.init_path`` set, continue pretraining that checkpoint (domain adaptation).

    Resumable: step checkpoints go to ``out_dir/checkpoints`` every
    ``pretrain.checkpoint_every_n_steps`` (atomically, newest ``keep_checkpoints`` kept), and
    if that directory already holds one, training continues from the newest intact one
    (model, optimizer, LR schedule, global step), so the run ends at ``max_steps`` like an
    uninterrupted one. The data order after a mid-epoch resume is not bit-identical: the
    DataLoader is not stateful, so the interrupted epoch restarts its shuffled order.
    Under a multi-process strategy every rank calls this and reaches the same resume
    point; only global rank 0 writes the export.
    """
    L.seed_everything(seed, workers=True, verbose=False)
    family = model_cfg.family
    tokenizer = AutoTokenizer.from_pretrained(str(prep_dir / "tokenizer"))
    if model_cfg.init_path:
        # from_pretrained returns eval mode, and Lightning keeps modules' modes: dropout back on.
        model = load_lm(model_cfg.init_path, family, model_cfg.trust_remote_code).train()
        fit_vocab(model, tokenizer)
        if model.config.pad_token_id is None:  # classifiers built from the export need it
            model.config.pad_token_id = tokenizer.pad_token_id
    else:
        model = build_lm(lm_config(model_cfg, tokenizer), family)
    n_params = count_parameters(model)
    ckpt_dir = out_dir / "checkpoints"
    resume_from = latest_good_checkpoint(ckpt_dir)
    resumed_step = int(resume_from.stem.split("=")[1]) if resume_from is not None else None
    compiling = decide_compile(trainer_cfg.compile, pretrain_cfg.max_steps - (resumed_step or 0),
                               trainer_cfg.accelerator, trainer_cfg.compile_min_steps)
    log.info("pretrain: %s (%s), %.2fM non-embedding parameters; compile %s (%s)", model_cfg.name, family,
             n_params / 1e6, "on" if compiling.compile else "off", compiling.reason)
    if compiling.compile:
        if compiling.min_steps is not None:
            # auto promised a faster run, not a different one: if inductor fails on this
            # model or machine, dynamo falls back to eager with a warning instead of failing the run.
            import torch._dynamo

            torch._dynamo.config.suppress_errors = True
        # In place (nn.Module.compile), not torch.compile(model): the wrapper would prefix
        # every checkpoint key with "_orig_mod.", so a run killed with compile on could not
        # resume with it off (compile is not in the fingerprint) or the other way round.
        model.compile()

    workers = trainer_cfg.num_workers
    data = LanguageModelingData(prep_dir / "lm", tokenizer, family, pretrain_cfg.batch_size,
                                pretrain_cfg.mlm_probability, seed=seed,
                                mask_ratio=pretrain_cfg.mask_ratio, poisson_lambda=pretrain_cfg.poisson_lambda,
                                num_workers=(default_num_workers(trainer_cfg.accelerator) if workers is None
                                             else workers))
    precision = resolve_precision(trainer_cfg.precision, trainer_cfg.accelerator)
    # Without a grad scaler (fp32, bf16) the module clips and AdamW runs fused. fp16's
    # scaler needs Lightning's unscale-then-clip path, and FSDP's sharded gradients its
    # global-norm clipping; both rule out a fused AdamW in Lightning.
    lightning_clips = precision.startswith("16") or "fsdp" in str(trainer_cfg.strategy).lower()
    module = LanguageModelPretraining(model, required(pretrain_cfg.lr, "pretrain.lr"), pretrain_cfg.weight_decay,
                                      pretrain_cfg.warmup_steps, pretrain_cfg.max_steps,
                                      grad_clip=0.0 if lightning_clips else pretrain_cfg.grad_clip,
                                      fused_adamw=not lightning_clips)
    every = trainer_cfg.log_every_n_steps
    throughput = ThroughputMonitor(
        flops_per_token(matmul_parameters(model), attention_layers(model_cfg), model_cfg.n_embd,
                        pretrain_cfg.block_size),
        trainer_cfg.peak_flops or default_peak_flops(trainer_cfg.accelerator, precision),
        every,
    )
    checkpoints = step_checkpoint_callback(ckpt_dir, pretrain_cfg.checkpoint_every_n_steps,
                                           pretrain_cfg.keep_checkpoints)
    trainer = make_trainer(
        trainer_cfg, out_dir, [throughput, ProgressLog("pretrain", trainer_cfg.progress_every_n_steps), checkpoints],
        logger,
        plugins=[AtomicCheckpointIO()],
        max_steps=pretrain_cfg.max_steps,
        val_check_interval=pretrain_cfg.val_every_n_steps,
        check_val_every_n_epoch=None,
        limit_val_batches=pretrain_cfg.val_batches,
        gradient_clip_val=pretrain_cfg.grad_clip if lightning_clips else None,
    )
    if resume_from is not None:
        log.info("pretrain: resuming from %s (step %d of %d)", resume_from, resumed_step, pretrain_cfg.max_steps)
    trainer.fit(module, datamodule=data, ckpt_path=str(resume_from) if resume_from else None)
    if trainer.global_step % pretrain_cfg.val_every_n_steps or resumed_step == trainer.global_step:
        # The final model's val loss (collective under DDP: every rank runs it). Also after a
        # resume from the final step, where fit() had nothing left to do.
        trainer.validate(module, datamodule=data, verbose=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("val/", "train/"))}
    tokens_per_sec = throughput.steady_tokens_per_sec()
    if tokens_per_sec is not None:
        metrics["train/tokens_per_sec"] = tokens_per_sec

    last = ckpt_dir / "last.ckpt"
    trainer.save_checkpoint(last)  # every rank calls it; the strategy writes once
    hf_dir = out_dir / "hf_model"
    if trainer.is_global_zero:
        module.model.save_pretrained(str(hf_dir))
        tokenizer.save_pretrained(str(hf_dir))
    release_process_group()
    return PretrainResult(trainer.global_step, metrics, n_params, str(last), str(hf_dir), resumed_step, compiling)


def release_process_group() -> None:
    """Tear down a DDP process group once pretraining is done.

    Fine-tuning runs single-device in rank 0 after the other ranks have exited; a live
    group would make torchmetrics and Lightning try to sync with processes that are gone.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def export_checkpoint(init_dir: Path, prep_dir: Path, out_dir: Path, model_cfg: ModelConfig) -> PretrainResult:
    """pretrain.max_steps=0: the checkpoint itself becomes the pretrained export.

    Copies config + safetensors (never pickles) into ``out_dir/hf_model`` with the prepared
    tokenizer, after checking the weights load into the family's LM class. Only when prep
    added tokens (a ``<pad>`` for a tokenizer without one) are the weights re-saved, with
    the embeddings grown to fit.
    """
    import json
    import shutil

    model = load_lm(init_dir, model_cfg.family, model_cfg.trust_remote_code)
    n_params = count_parameters(model)
    tokenizer = AutoTokenizer.from_pretrained(str(prep_dir / "tokenizer"))
    hf_dir = out_dir / "hf_model"
    hf_dir.mkdir(parents=True)
    if fit_vocab(model, tokenizer):  # prep added tokens (a <pad>): the weights change shape
        model.config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(str(hf_dir))
    del model
    for f in ([] if (hf_dir / "config.json").exists() else init_dir.iterdir()):
        if f.is_file() and (f.suffix in (".safetensors", ".py") or f.name in ("config.json", "generation_config.json")
                            or f.name.endswith(".safetensors.index.json")):
            shutil.copy2(f, hf_dir / f.name)
    config = json.loads((hf_dir / "config.json").read_text())
    if config.get("pad_token_id") is None and tokenizer.pad_token_id is not None:
        config["pad_token_id"] = tokenizer.pad_token_id  # GPT-2-style classifiers need it for batches
        (hf_dir / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer.save_pretrained(str(hf_dir))
    log.info("pretrain: max_steps=0; %s passed through as the pretrained model (%.2fM non-embedding parameters)",
             init_dir, n_params / 1e6)
    return PretrainResult(0, {}, n_params, None, str(hf_dir))


def monitor_mode(monitor: str) -> str:
    """A loss improves downwards, an accuracy upwards."""
    return "min" if monitor.endswith("loss") else "max"


def finetune_on_task(
    job: FinetuneJob,
    finetune_cfg: FinetuneConfig,
    trainer_cfg: TrainerConfig,
    seed: int,
    eval_batch_size: int = 64,
    logger: Logger | bool = False,
) -> FinetuneResult:
    """Fine-tune ``job.weights`` (the checkpoint's, or a fresh copy of its architecture) on
    a ``train_examples`` subset of the ``finetune.task`` labeled rows, early-stopped on ``finetune.monitor``;
    test the best epoch and return the test predictions as rows (``Task.prediction_rows``).

    The rows are tokenized here with the tuned model's own tokenizer, so a checkpoint with
    another vocabulary than the pipeline's tunes on exactly the same examples.
    """
    from modules.tasks import get_task

    task_name, weights, family, source_model = finetune_cfg.task, job.weights, job.family, job.source_model
    task = get_task(task_name)
    L.seed_everything(seed, workers=True, verbose=False)
    tokenizer = AutoTokenizer.from_pretrained(str(source_model))
    raw = load_from_disk(str(job.prep_dir / "labeled"))
    label_names = task.label_names(raw["train"])
    pool = raw["train"]
    budget = finetune_cfg.train_examples
    if budget > len(pool):
        log.warning("finetune.train_examples=%d exceeds the labeled pool (%d); using all of it", budget, len(pool))
    subset = pool.select(task.subset(pool, budget, seed))
    max_length = finetune_cfg.max_length
    splits = {split: task.tokenize(ds, tokenizer, family, max_length, finetune_cfg)
              for split, ds in (("train", subset), ("validation", raw["validation"]), ("test", raw["test"]))}
    data = task.datamodule(splits, tokenizer, family, finetune_cfg.batch_size, eval_batch_size,
                           finetune_cfg.group_by_length)

    model = task.build_model(source_model, weights, family, label_names, finetune_cfg.dropout, job.trust_remote_code)
    strategy = finetune_cfg.strategy
    if strategy == "lora":
        model, frozen = apply_lora(model, LoraSettings.from_config(finetune_cfg))
    else:
        frozen = apply_strategy(model, strategy, finetune_cfg.trainable_layers)
    if weights == "scratch" and strategy in ("linear_probe", "lora"):
        log.warning("finetune[scratch]: strategy=%s trains on a frozen *random* body; "
                    "a baseline only, not a fine-tune", strategy)
    module = task.lightning_module(model, tokenizer, family, label_names, finetune_cfg)
    steps_per_epoch = max(1, len(subset) // finetune_cfg.batch_size)
    out_dir = job.out_dir
    monitor, mode = finetune_cfg.monitor, monitor_mode(finetune_cfg.monitor)
    best = ModelCheckpoint(dirpath=out_dir / "checkpoints", monitor=monitor, mode=mode, save_top_k=1,
                           filename="best")
    stop = EarlyStopping(monitor=monitor, mode=mode, patience=finetune_cfg.patience)
    name = f"finetune[{job.name or weights}]"
    speed = ExampleThroughput()
    trainer = make_trainer(
        # Scale-out is for pretraining: fine-tunes are small and run on one device in rank 0.
        replace(trainer_cfg, **SINGLE_DEVICE, log_every_n_steps=min(trainer_cfg.log_every_n_steps, steps_per_epoch)),
        out_dir, [best, stop, ProgressLog(name, trainer_cfg.progress_every_n_steps), speed], logger,
        max_epochs=finetune_cfg.max_epochs,
    )
    log.info("%s: %s, %d labeled examples%s; strategy=%s, %d of %d parameters train (%d of %d layers), lr %g",
             name, task_name, len(subset), f", {len(label_names)} classes" if label_names else "", strategy,
             frozen.trainable_parameters, frozen.total_parameters, frozen.trainable_layers, frozen.total_layers,
             finetune_cfg.lr)
    trainer.fit(module, datamodule=data)
    trainer.test(module, datamodule=data, ckpt_path="best" if best.best_model_path else None, verbose=False)
    rows = task.prediction_rows(raw["test"], data.in_row_order("test", list(module.test_outputs)), label_names)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    metrics.update({f"test/{k}": v for k, v in task.score(rows, label_names).items()})
    headline = f"test/{task.headline}"
    log.info("%s: stopped after %d epochs; %s %.4f", name, trainer.current_epoch, headline, metrics[headline])
    hf_dir = out_dir / "hf_model"
    adapter_bytes = None
    if strategy == "lora":
        # The adapter of a scratch init only reproduces the model over that run's random weights: not written.
        adapter_bytes = save_lora(module.model, hf_dir, None if weights == "scratch" else out_dir / "adapter")
    else:
        module.model.save_pretrained(str(hf_dir))
    tokenizer.save_pretrained(str(hf_dir))
    best_score = best.best_model_score
    return FinetuneResult(metrics, rows, len(subset), best.best_model_path or None, trainer.current_epoch, strategy,
                          frozen.trainable_parameters, label_names,
                          float(best_score) if best_score is not None else None,
                          total_parameters=frozen.total_parameters, adapter_bytes=adapter_bytes,
                          speed=speed.metrics())
