"""LightningModule for fine-tuning a sequence classifier."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics.classification import MulticlassAccuracy
from transformers import PreTrainedModel

from modules.tasks import VAL_METRIC
from modules.training.finetune_module import FineTuneModule
from modules.training.optim import adamw_with_schedule


class SequenceClassification(FineTuneModule):
    """Fine-tunes any ``AutoModelForSequenceClassification`` model.

    Test predictions are kept (as plain ints) so the caller can write them out and compute
    reports without touching tensors. Subclasses (the token tagger) change what a
    prediction is and the name of the validation accuracy, nothing else.
    """

    val_accuracy_name = VAL_METRIC["classification"]

    def __init__(
        self,
        model: PreTrainedModel,
        num_labels: int,
        lr: float,
        weight_decay: float,
        warmup_ratio: float,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model"], logger=False)
        self.model = model
        self.val_acc = MulticlassAccuracy(num_classes=num_labels, average="micro")
        self.test_outputs = []  # one predicted class id per test row

    def _forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(**batch)  # logits: (B, num_labels)
        return out.loss, out.logits.argmax(dim=-1)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _ = self._forward(batch)
        self.log("train/loss", loss, on_step=True, on_epoch=False, batch_size=batch["labels"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, preds = self._forward(batch)
        self.val_acc.update(preds, batch["labels"])
        self.log("val/loss", loss, on_epoch=True, batch_size=batch["labels"].shape[0])
        self.log(self.val_accuracy_name, self.val_acc, on_epoch=True)

    def on_test_epoch_start(self) -> None:
        self.test_outputs = []

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # Test metrics are computed once, from the saved predictions (Task.score), so MLflow,
        # the report and the sweep all show the same numbers.
        _, preds = self._forward(batch)
        self.test_outputs.extend(preds.tolist())

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        total = int(self.trainer.estimated_stepping_batches)
        return adamw_with_schedule(self.model, hp["lr"], hp["weight_decay"], int(hp["warmup_ratio"] * total), total,
                                   "linear")
