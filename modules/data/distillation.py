"""Batches for distillation: token ids padded per batch, the teacher's logits alongside."""

from __future__ import annotations

from typing import Any

import torch
from datasets import Dataset
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from modules.data.datamodules import FineTuneData

TEACHER_LOGITS = "teacher_logits"


class DistillationCollator:
    """Pads ``input_ids``/``attention_mask`` (and stacks ``labels``) as classification does,
    and stacks each row's precomputed ``teacher_logits`` into a float tensor (B, C). Rows
    without teacher logits (validation, test) give a batch without them."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.pad = DataCollatorWithPadding(tokenizer)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        logits = [r[TEACHER_LOGITS] for r in rows if TEACHER_LOGITS in r]
        batch = dict(self.pad([{k: v for k, v in r.items() if k != TEACHER_LOGITS} for r in rows]))
        if logits:
            batch[TEACHER_LOGITS] = torch.tensor(logits, dtype=torch.float32)  # (B, C)
        return batch


class DistillationData(FineTuneData):
    """Train: labeled and unlabeled rows (``labels`` -100 where there is none) with their
    teacher logits; validation and test: the labeled splits, as a fine-tune sees them."""

    def __init__(self, splits: dict[str, Dataset], tokenizer: PreTrainedTokenizerBase, batch_size: int,
                 eval_batch_size: int = 64, num_workers: int = 0, group_by_length: bool = False) -> None:
        columns = ["input_ids", "attention_mask", "labels"]
        kept = {k: v.select_columns(columns + ([TEACHER_LOGITS] if k == "train" else [])) for k, v in splits.items()}
        super().__init__(kept, DistillationCollator(tokenizer), batch_size, eval_batch_size, num_workers,
                         group_by_length)
