"""Raw text before tokenization, whatever the source."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RawData:
    corpus: dict[str, list[str]]  # "train"/"validation" -> documents for LM pretraining
    # "train"/"validation"/"test" -> rows of the task ({} if none): classification (text, label id);
    # token_classification (tokens, tag ids); seq2seq (source, target).
    labeled: dict[str, list[Any]]
    label_names: list[str]  # label / tag id -> name; [] when the task has none (seq2seq) or no labels
    # Where the data came from (file paths or a hub id), for the record and MLflow inputs.
    sources: list[str] = field(default_factory=list)
    task: str = "classification"  # what the rows of ``labeled`` are (modules/tasks)

    @property
    def has_labels(self) -> bool:
        """A source without labels (a plain corpus) can be pretrained on, not fine-tuned on."""
        return bool(self.labeled)
