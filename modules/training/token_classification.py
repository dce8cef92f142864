"""LightningModule for fine-tuning a per-token tagger (NER-style)."""

from __future__ import annotations

import torch
from torchmetrics.classification import MulticlassAccuracy
from transformers import PreTrainedModel

from modules.tasks import VAL_METRIC
from modules.training.classification import SequenceClassification

IGNORE = -100


class TokenTagging(SequenceClassification):
    """Fine-tunes any ``AutoModelForTokenClassification`` model.

    Batches carry ``labels`` (the word's tag on one sub-token per word, -100 elsewhere) and
    ``word_index`` (which word that sub-token stands for, -1 elsewhere), so test
    predictions come back as one tag id per *word*: entity metrics are computed on words,
    whatever the tokenizer did to them. Words with no token (cut by truncation) are
    predicted ``O`` (id 0).
    """

    val_accuracy_name = VAL_METRIC["token_classification"]

    def __init__(self, model: PreTrainedModel, num_labels: int, lr: float, weight_decay: float,
                 warmup_ratio: float) -> None:
        super().__init__(model, num_labels, lr, weight_decay, warmup_ratio)
        # accuracy over labelled sub-tokens = over words (one labelled sub-token per word)
        self.val_acc = MulticlassAccuracy(num_classes=num_labels, average="micro", ignore_index=IGNORE)
        self.test_outputs = []  # one list of word tag ids per test sentence

    def _forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = {k: v for k, v in batch.items() if k not in ("word_index", "num_words")}
        out = self.model(**inputs)  # logits: (B, T, num_labels)
        return out.loss, out.logits.argmax(dim=-1)  # (), (B, T)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        _, preds = self._forward(batch)  # (B, T)
        for row_preds, row_words, n in zip(preds.tolist(), batch["word_index"].tolist(),
                                           batch["num_words"].tolist(), strict=True):
            tags = [0] * n
            for tag, word in zip(row_preds, row_words, strict=True):
                if word >= 0:
                    tags[word] = tag
            self.test_outputs.append(tags)
