"""Raw text before tokenization, whatever the source."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RawData:
    corpus: dict[str, list[str]]  # "train"/"validation" -> documents for LM pretraining
    labeled: dict[str, list[tuple[str, int]]]  # "train"/"validation"/"test" -> (text, label id); {} if none
    label_names: list[str]  # label id -> name; [] when the source has no labels
    # Where the data came from (file paths or a hub id), for the record and MLflow inputs.
    sources: list[str] = field(default_factory=list)

    @property
    def has_labels(self) -> bool:
        """A source without labels (a plain corpus) can be pretrained on, not fine-tuned on."""
        return bool(self.labeled)
