"""Raw text before tokenization, whatever the source."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RawData:
    corpus: dict[str, list[str]]  # "train"/"validation" -> documents for LM pretraining
    labeled: dict[str, list[tuple[str, int]]]  # "train"/"validation"/"test" -> (text, label id)
    label_names: list[str]  # label id -> name
