"""LightningModule for language-model pretraining (causal, masked or seq2seq denoising)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torchmetrics import MeanMetric
from transformers import PreTrainedModel

from modules.training.optim import adamw_with_schedule


class LanguageModelPretraining(L.LightningModule):
    """Wraps any transformers LM whose forward returns ``loss`` when given ``labels``.

    The objective lives in the batch, not here: the collator decides whether labels are
    the inputs (causal; the model shifts them), masked positions (MLM, -100 elsewhere) or
    the original block behind a text-infilled encoder input (seq2seq; the model shifts
    them into decoder inputs, -100 on padding).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        lr: float,
        weight_decay: float,
        warmup_steps: int,
        max_steps: int,
        grad_clip: float = 0.0,
        fused_adamw: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model"], logger=False)
        self.model = model
        self.val_loss = MeanMetric()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.model(**batch).loss  # batch: input_ids/labels (B, T)
        self.log("train/loss", loss, on_step=True, on_epoch=False)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Clipping here instead of through Trainer(gradient_clip_val): Lightning refuses its
        # own clipping for a fused optimizer under mixed precision, although with bf16 (no
        # grad scaler) the gradients are already true values at this point.
        if self.hparams["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(self.parameters(), self.hparams["grad_clip"])

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss = self.model(**batch).loss
        # Weight by predicted tokens so the epoch mean is a per-token loss (MLM masks vary;
        # seq2seq labels are -100 on padding only).
        n_targets = (batch["labels"] != -100).sum()
        self.val_loss.update(loss, weight=n_targets)

    def on_validation_epoch_end(self) -> None:
        loss = self.val_loss.compute()
        self.val_loss.reset()
        # MeanMetric.compute() already all-reduces across DDP ranks, so every rank holds the
        # global value; sync_dist only tells Lightning so (averaging equal values is a no-op).
        self.log("val/loss", loss, sync_dist=True)
        self.log("val/perplexity", torch.exp(loss.clamp(max=50.0)), sync_dist=True)

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        return adamw_with_schedule(self.model, hp["lr"], hp["weight_decay"], hp["warmup_steps"], hp["max_steps"],
                                   "cosine", fused=hp["fused_adamw"])

