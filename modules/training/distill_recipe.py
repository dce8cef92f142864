"""The distillation recipe: teacher logits once, then a student trained on them.

Like ``modules.training.recipes.finetune_on_task`` (same labeled subset, same validation and
test splits, same early stopping and scoring), except that the student's training rows are
the labeled budget plus unlabeled texts, each carrying the teacher's logits, and the loss
is ``modules.training.distillation.distillation_loss``. Classification only.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, replace
from pathlib import Path

import lightning as L
import torch
from datasets import Dataset, load_from_disk
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, DataCollatorWithPadding

from modules.config import DistillConfig, FinetuneConfig, TrainerConfig, required
from modules.data.distillation import TEACHER_LOGITS, DistillationData
from modules.data.tokenization import tokenize_labeled
from modules.models.checkpoints import clamp_max_length
from modules.models.factory import build_classifier, count_parameters
from modules.models.freeze import apply_strategy
from modules.training.callbacks import ProgressLog
from modules.training.distillation import IGNORE_LABEL, DistillationClassification
from modules.training.recipes import SINGLE_DEVICE, FinetuneResult, monitor_mode
from modules.training.trainer import make_trainer

log = logging.getLogger("transferlab")

NAME = "distilled"  # how the student is named among the inits in reports and summaries


@dataclass(frozen=True)
class DistillJob:
    """Which distillation to run, apart from how (``finetune``, ``distill``, ``trainer``)."""

    prep_dir: Path  # the prepared data; its labeled/ splits
    student: Path  # a local HF checkpoint dir: the student's architecture, weights and tokenizer
    student_family: str
    teacher: Path  # a fine-tuned sequence classifier (save_pretrained dir with its tokenizer)
    teacher_family: str
    out_dir: Path
    trust_remote_code: bool = False


@dataclass
class DistillResult(FinetuneResult):
    unlabeled_examples: int = 0  # unlabeled rows the student trained on (beside train_examples labeled ones)
    teacher_parameters: int = 0  # non-embedding parameters, as pretraining counts them
    student_parameters: int = 0
    teacher_agreement: float | None = None  # share of test rows where the student predicts the teacher's class


def inference_device(accelerator: str) -> torch.device:
    """Where the teacher runs: the GPU when the trainer is told to use one and there is one."""
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


@torch.inference_mode()
def teacher_logits(teacher: Path, family: str, texts: list[str], num_labels: int, max_length: int, batch_size: int,
                   device: torch.device, trust_remote_code: bool = False) -> list[list[float]]:
    """The teacher's class logits for ``texts`` (one list of ``num_labels`` floats per text),
    in eval mode without gradients, tokenized with the teacher's own tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(str(teacher))
    model = build_classifier(teacher, "pretrained", num_labels, None, trust_remote_code).eval()
    model.to(device)  # in place (nn.Module.to returns self; transformers' typing of it confuses mypy)
    rows = tokenize_labeled(Dataset.from_dict({"text": texts}), tokenizer, max_length, family)
    rows = rows.select_columns(["input_ids", "attention_mask"]).with_format("python")
    out: list[list[float]] = []
    for batch in DataLoader(rows, batch_size=batch_size, collate_fn=DataCollatorWithPadding(tokenizer)):
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits  # (B, C)
        out.extend(logits.float().cpu().tolist())
    return out


def unlabeled_indices(pool_size: int, labeled: list[int], n: int | None, seed: int) -> list[int]:
    """Up to ``n`` pool rows outside the labeled subset (all of them for None), a seeded draw."""
    taken = set(labeled)
    rest = [i for i in range(pool_size) if i not in taken]
    random.Random(seed).shuffle(rest)
    if n is not None and n > len(rest):
        log.warning("distill.unlabeled=%d exceeds the %d unlabeled rows of the labeled pool; using all of them",
                    n, len(rest))
    return sorted(rest if n is None else rest[:n])


def distill_on_task(job: DistillJob, finetune_cfg: FinetuneConfig, distill_cfg: DistillConfig,
                    trainer_cfg: TrainerConfig, seed: int, eval_batch_size: int = 64,
                    logger: Logger | bool = False) -> DistillResult:
    """Train the student on the teacher's soft labels (labeled subset + unlabeled texts),
    early-stopped on ``finetune.monitor`` over the labeled validation split; test the best
    epoch and score it with the task's ``score``, as a fine-tune is."""
    from modules.tasks import get_task

    if finetune_cfg.task != "classification":
        raise ValueError(f"distillation serves finetune.task=classification only (task is {finetune_cfg.task!r})")
    task = get_task("classification")
    L.seed_everything(seed, workers=True, verbose=False)
    raw = load_from_disk(str(job.prep_dir / "labeled"))
    label_names = task.label_names(raw["train"])
    pool = raw["train"]
    labeled = task.subset(pool, finetune_cfg.train_examples, seed)
    unlabeled = unlabeled_indices(len(pool), labeled, distill_cfg.unlabeled, seed)
    texts = list(pool.select(labeled)["text"]) + list(pool.select(unlabeled)["text"])
    labels = list(pool.select(labeled)["label"]) + [IGNORE_LABEL] * len(unlabeled)

    device = inference_device(trainer_cfg.accelerator)
    teacher_len = clamp_max_length(finetune_cfg.max_length, job.teacher, "distill teacher")
    soft = teacher_logits(job.teacher, job.teacher_family, [*texts, *raw["test"]["text"]], len(label_names),
                          teacher_len, eval_batch_size, device, job.trust_remote_code)
    train_soft, test_soft = soft[: len(texts)], soft[len(texts):]
    log.info("distill: teacher logits for %d labeled + %d unlabeled texts (and %d test texts) on %s",
             len(labeled), len(unlabeled), len(test_soft), device)

    tokenizer = AutoTokenizer.from_pretrained(str(job.student))
    max_length = clamp_max_length(finetune_cfg.max_length, job.student, NAME)
    train = Dataset.from_dict({"text": texts, "labels": labels, TEACHER_LOGITS: train_soft})
    splits = {"train": tokenize_labeled(train, tokenizer, max_length, job.student_family)}
    for split in ("validation", "test"):
        splits[split] = tokenize_labeled(raw[split], tokenizer, max_length,
                                         job.student_family).rename_column("label", "labels")
    data = DistillationData(splits, tokenizer, finetune_cfg.batch_size, eval_batch_size,
                            group_by_length=finetune_cfg.group_by_length)

    model = task.build_model(job.student, "pretrained", job.student_family, label_names, finetune_cfg.dropout,
                             job.trust_remote_code)
    frozen = apply_strategy(model, finetune_cfg.strategy, finetune_cfg.trainable_layers)
    module = DistillationClassification(model, len(label_names), required(finetune_cfg.lr, "finetune.lr"),
                                        finetune_cfg.weight_decay, finetune_cfg.warmup_ratio, distill_cfg.alpha,
                                        distill_cfg.temperature)
    steps_per_epoch = max(1, len(texts) // finetune_cfg.batch_size)
    monitor, mode = finetune_cfg.monitor, monitor_mode(finetune_cfg.monitor)
    best = ModelCheckpoint(dirpath=job.out_dir / "checkpoints", monitor=monitor, mode=mode, save_top_k=1,
                           filename="best")
    stop = EarlyStopping(monitor=monitor, mode=mode, patience=finetune_cfg.patience)
    name = f"distill[{NAME}]"
    trainer = make_trainer(
        replace(trainer_cfg, **SINGLE_DEVICE, log_every_n_steps=min(trainer_cfg.log_every_n_steps, steps_per_epoch)),
        job.out_dir, [best, stop, ProgressLog(name, trainer_cfg.progress_every_n_steps)], logger,
        max_epochs=finetune_cfg.max_epochs,
    )
    log.info("%s: alpha %g, temperature %g; %d labeled + %d unlabeled texts; %d of %d parameters train, lr %g",
             name, distill_cfg.alpha, distill_cfg.temperature, len(labeled), len(unlabeled),
             frozen.trainable_parameters, frozen.total_parameters, finetune_cfg.lr)
    trainer.fit(module, datamodule=data)
    trainer.test(module, datamodule=data, ckpt_path="best" if best.best_model_path else None, verbose=False)
    predictions = data.in_row_order("test", list(module.test_outputs))
    rows = task.prediction_rows(raw["test"], predictions, label_names)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    metrics.update({f"test/{k}": v for k, v in task.score(rows, label_names).items()})
    teacher_preds = [max(range(len(s)), key=s.__getitem__) for s in test_soft]
    agreement = sum(p == t for p, t in zip(predictions, teacher_preds, strict=True)) / max(1, len(predictions))
    log.info("%s: stopped after %d epochs; test/%s %.4f, agrees with the teacher on %.1f%% of test rows", name,
             trainer.current_epoch, task.headline, metrics[f"test/{task.headline}"], 100 * agreement)
    hf_dir = job.out_dir / "hf_model"
    module.model.save_pretrained(str(hf_dir))
    tokenizer.save_pretrained(str(hf_dir))
    best_score = best.best_model_score
    return DistillResult(metrics, rows, len(labeled), best.best_model_path or None, trainer.current_epoch,
                         finetune_cfg.strategy, frozen.trainable_parameters, label_names,
                         float(best_score) if best_score is not None else None,
                         unlabeled_examples=len(unlabeled), teacher_parameters=_parameters(job.teacher),
                         student_parameters=count_parameters(module.model), teacher_agreement=agreement)


def _parameters(checkpoint: Path) -> int:
    """A checkpoint's non-embedding parameter count without loading its weights onto a device."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(str(checkpoint)))
    return count_parameters(model)
