"""Knowledge distillation for sequence classification: the loss and the LightningModule.

A student learns from a teacher's soft labels (Hinton et al., 2015): the KL divergence
between the teacher's and the student's class distributions at temperature ``T``, scaled
by ``T^2`` so its gradients keep their size as ``T`` grows, mixed with the cross-entropy on
the true label where a row has one. Rows without a label (unlabeled text, label ``-100``)
contribute the KL term alone, which is what lets a small labeled budget plus plenty of
unlabeled text teach the student more than the labels could.

The teacher's logits are computed once, before training (``modules.training.distill_recipe``),
and ride in the batch as ``teacher_logits``: the teacher never runs inside an epoch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from modules.training.classification import SequenceClassification

IGNORE_LABEL = -100  # an unlabeled row's label: no cross-entropy term


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      alpha: float, temperature: float) -> torch.Tensor:
    """Mean over the batch of the per-row loss

    - labeled row:   ``alpha * T^2 * KL(p_teacher^T || p_student^T) + (1 - alpha) * CE(student, label)``
    - unlabeled row (label ``-100``): ``T^2 * KL(p_teacher^T || p_student^T)``

    where ``p^T = softmax(logits / T)``. ``alpha=0`` on labeled rows is plain cross-entropy,
    ``alpha=1`` plain distillation.
    """
    t = temperature
    log_p_student = F.log_softmax(student_logits.float() / t, dim=-1)  # (B, C)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=-1)  # (B, C)
    # KL(teacher || student) per row: sum_c p_t * (log p_t - log p_s)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1) * t * t  # (B,)
    labeled = labels != IGNORE_LABEL  # (B,)
    safe_labels = torch.where(labeled, labels, torch.zeros_like(labels))  # (B,); unlabeled rows: any valid id
    ce = F.cross_entropy(student_logits.float(), safe_labels, reduction="none")  # (B,)
    per_row = torch.where(labeled, alpha * kl + (1.0 - alpha) * ce, kl)  # (B,)
    return per_row.mean()


class DistillationClassification(SequenceClassification):
    """``SequenceClassification`` whose training loss is :func:`distillation_loss` against the
    precomputed ``teacher_logits`` in each training batch. Validation and test are the
    parent's (cross-entropy on the true labels, accuracy), so early stopping and the tested
    epoch are chosen exactly as for a fine-tune on labels alone."""

    def __init__(self, model: PreTrainedModel, num_labels: int, lr: float, weight_decay: float, warmup_ratio: float,
                 alpha: float, temperature: float) -> None:
        super().__init__(model, num_labels, lr, weight_decay, warmup_ratio)
        self.save_hyperparameters(ignore=["model"], logger=False)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        teacher_logits = batch.pop("teacher_logits")  # (B, C), float
        labels = batch.pop("labels")  # (B,), -100 on unlabeled rows
        logits = self.model(**batch).logits  # (B, C)
        loss = distillation_loss(logits, teacher_logits, labels, self.hparams["alpha"], self.hparams["temperature"])
        self.log("train/loss", loss, on_step=True, on_epoch=False, batch_size=labels.shape[0])
        return loss
