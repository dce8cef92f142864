"""LightningModule for fine-tuning a per-token tagger (NER-style)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torchmetrics.classification import MulticlassAccuracy
from transformers import PreTrainedModel

from modules.training.optim import adamw_with_schedule

IGNORE = -100


class TokenTagging(L.LightningModule):
    """Fine-tunes any ``AutoModelForTokenClassification`` model.

    Batches carry ``labels`` (the word's tag on one sub-token per word, -100 elsewhere) and
    ``word_index`` (which word that sub-token stands for, -1 elsewhere), so test
    predictions come back as one tag id per *word*: entity metrics are computed on words,
    whatever the tokenizer did to them. Words with no token (cut by truncation) are
    predicted ``O`` (id 0).
    """

    def __init__(self, model: PreTrainedModel, num_labels: int, lr: float, weight_decay: float,
                 warmup_ratio: float) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model"], logger=False)
        self.model = model
        # accuracy over labelled sub-tokens = over words (one labelled sub-token per word)
        self.val_acc = MulticlassAccuracy(num_classes=num_labels, average="micro", ignore_index=IGNORE)
        self.test_outputs: list[list[int]] = []

    def _forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = {k: v for k, v in batch.items() if k not in ("word_index", "num_words")}
        out = self.model(**inputs)  # logits: (B, T, num_labels)
        return out.loss, out.logits.argmax(dim=-1)  # (), (B, T)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _ = self._forward(batch)
        self.log("train/loss", loss, on_step=True, on_epoch=False, batch_size=batch["labels"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, preds = self._forward(batch)
        self.val_acc.update(preds, batch["labels"])
        self.log("val/loss", loss, on_epoch=True, batch_size=batch["labels"].shape[0])
        self.log("val/token_accuracy", self.val_acc, on_epoch=True)

    def on_test_epoch_start(self) -> None:
        self.test_outputs = []

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        _, preds = self._forward(batch)  # (B, T)
        for row_preds, row_words, n in zip(preds.tolist(), batch["word_index"].tolist(),
                                           batch["num_words"].tolist(), strict=True):
            tags = [0] * n
            for tag, word in zip(row_preds, row_words, strict=True):
                if word >= 0:
                    tags[word] = tag
            self.test_outputs.append(tags)

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        total = int(self.trainer.estimated_stepping_batches)
        return adamw_with_schedule(self.model, hp.lr, hp.weight_decay, int(hp.warmup_ratio * total), total, "linear")
