"""The contract between a task's training module and the fine-tuning recipe."""

from __future__ import annotations

from typing import Any

import lightning as L
from transformers import PreTrainedModel


class FineTuneModule(L.LightningModule):
    """A task's LightningModule as the recipe uses it: ``model`` is the transformers model it
    trains (saved after the test), and after ``trainer.test`` ``test_outputs`` holds one
    JSON-able entry per test row, in order. Declared here so the recipe is typed against
    every task's module, not against ``nn.Module``'s dynamic attributes."""

    model: PreTrainedModel
    test_outputs: list[Any]
