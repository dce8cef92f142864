"""The contract every fine-tuning task fills, so one recipe trains them all.

Data flows: the prep stage stores the task's *raw* rows (``to_dataset``) under
``labeled/``; fine-tuning tokenizes them with the tokenizer of the model being tuned
(``tokenize``), so any checkpoint, with any vocabulary, can be tuned on the same rows.
Test predictions are written as plain files (``save_predictions``) and every metric is
computed from those files (``score``), so the evaluate stage and the sweep report score
exactly what was saved.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.config import FinetuneConfig
from modules.tasks import HEADLINE, TASK_FAMILIES

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from modules.data.datamodules import FineTuneData
    from modules.training.finetune_module import FineTuneModule


class Task(ABC):
    name: str  # the finetune.task value; keys the tables in modules/tasks/__init__.py
    # (metric name, column title) pairs for the report table; the headline first.
    report_columns: tuple[tuple[str, str], ...]
    predictions_file: str

    @property
    def families(self) -> tuple[str, ...]:
        """The LM families with a head for this task (``modules.tasks.TASK_FAMILIES``)."""
        return TASK_FAMILIES[self.name]

    @property
    def headline(self) -> str:
        """The metric the task is judged by, without "test/", e.g. "accuracy" (``modules.tasks.HEADLINE``)."""
        return HEADLINE[self.name]

    @abstractmethod
    def to_dataset(self, rows: Sequence[Any], label_names: list[str]) -> Dataset:
        """Raw rows of one split (as the data source yields them) -> a dataset with typed columns."""

    @abstractmethod
    def label_names(self, ds: Dataset) -> list[str]:
        """Class / tag names stored with the data ([] for tasks without a label set)."""

    @abstractmethod
    def corpus_texts(self, rows: Sequence[Any]) -> list[str]:
        """Text for the pretraining corpus when the labeled file is the only data."""

    @abstractmethod
    def inputs(self, ds: Dataset) -> list[str]:
        """What a served model is asked for each row of a split: one text (modules/models/inference.py)."""

    @abstractmethod
    def subset(self, pool: Dataset, n: int, seed: int) -> list[int]:
        """Indices of an ``n``-example training subset (stratified where there are classes);
        raises ``DataError`` when the subset cannot contain what the task needs."""

    @abstractmethod
    def tokenize(self, ds: Dataset, tokenizer: PreTrainedTokenizerBase, family: str, max_length: int,
                 finetune_cfg: FinetuneConfig) -> Dataset:
        """Model inputs (and ``labels``) for one split."""

    @abstractmethod
    def build_model(self, source: str | Path, weights: str, family: str, label_names: list[str],
                    dropout: float | None, trust_remote_code: bool) -> PreTrainedModel:
        """The task's transformers head on the architecture at ``source``: its weights
        (weights="pretrained"), or its config with fresh weights (weights="scratch")."""

    @abstractmethod
    def datamodule(self, splits: dict[str, Dataset], tokenizer: PreTrainedTokenizerBase, family: str,
                   batch_size: int, eval_batch_size: int, group_by_length: bool = False) -> FineTuneData:
        """Validation and test batches come longest-first: the recipe maps test outputs back
        with ``FineTuneData.in_row_order``."""

    @abstractmethod
    def lightning_module(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, family: str,
                         label_names: list[str], finetune_cfg: FinetuneConfig) -> FineTuneModule:
        """The module; after ``trainer.test`` its ``test_outputs`` holds one JSON-able entry
        per test row, in the order the test loader gave the rows."""

    @abstractmethod
    def prediction_rows(self, test: Dataset, outputs: list[Any], label_names: list[str]) -> list[dict[str, Any]]:
        """Join raw test rows with the module's outputs: what ``save_predictions`` writes."""

    @abstractmethod
    def save_predictions(self, path: Path, rows: list[dict[str, Any]]) -> None: ...

    @abstractmethod
    def load_predictions(self, path: Path) -> list[dict[str, Any]]: ...

    @abstractmethod
    def score(self, rows: list[dict[str, Any]], label_names: list[str]) -> dict[str, float]:
        """Test metrics from saved predictions, names without the "test/" prefix."""

    def chance(self, label_names: list[str]) -> float | None:
        """The headline metric of a random guess, for plots (None: no meaningful level)."""
        return None
