"""Sequence classification (binary or multi-class): one label per text."""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.config import FinetuneConfig, required
from modules.tasks.base import Task

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from modules.data.datamodules import FineTuneData
    from modules.training.finetune_module import FineTuneModule


def metric_key(name: str) -> str:
    """A class name as an MLflow metric path segment (letters, digits, _ - . space)."""
    return re.sub(r"[^\w\-. ]", "_", str(name))[:64] or "_"


class Classification(Task):
    name = "classification"
    report_columns = (("accuracy", "accuracy"), ("f1_macro", "macro-F1"))
    predictions_file = "predictions.csv"

    def to_dataset(self, rows: Sequence[Any], label_names: list[str]) -> Dataset:
        # ClassLabel keeps the id -> name mapping with the data, so no stage has to guess it.
        from datasets import ClassLabel, Dataset, Features, Value

        features = Features({"text": Value("string"), "label": ClassLabel(names=label_names)})
        return Dataset.from_dict({"text": [t for t, _ in rows], "label": [y for _, y in rows]}, features=features)

    def label_names(self, ds: Dataset) -> list[str]:
        return list(ds.features["label"].names)

    def corpus_texts(self, rows: Sequence[Any]) -> list[str]:
        return [text for text, _ in rows]

    def inputs(self, ds: Dataset) -> list[str]:
        return list(ds["text"])

    def subset(self, pool: Dataset, n: int, seed: int) -> list[int]:
        """Stratified: every class appears once ``n`` reaches the number of classes; fewer
        examples than classes cannot represent them all, which is refused, not guessed around."""
        from modules.data.errors import DataError
        from modules.data.sampling import stratified_subset

        names = self.label_names(pool)
        present = set(pool["label"])
        if n < len(present):
            listing = f"{', '.join(names[:8])}{', ...' if len(names) > 8 else ''}"
            raise DataError(f"bad value for 'finetune.train_examples': {n} labeled examples cannot contain all "
                            f"{len(present)} classes ({listing}); use at least {len(present)}", listing)
        return stratified_subset(pool["label"], n, seed)

    def tokenize(self, ds: Dataset, tokenizer: PreTrainedTokenizerBase, family: str, max_length: int,
                 finetune_cfg: FinetuneConfig) -> Dataset:
        from modules.data.tokenization import tokenize_labeled

        return tokenize_labeled(ds, tokenizer, max_length, family)

    def build_model(self, source: str | Path, weights: str, family: str, label_names: list[str],
                    dropout: float | None, trust_remote_code: bool) -> PreTrainedModel:
        from modules.models.factory import build_classifier

        return build_classifier(source, weights, len(label_names), dropout, trust_remote_code)

    def datamodule(self, splits: dict[str, Dataset], tokenizer: PreTrainedTokenizerBase, family: str,
                   batch_size: int, eval_batch_size: int, group_by_length: bool = False) -> FineTuneData:
        from modules.data.datamodules import ClassificationData

        return ClassificationData(splits, tokenizer, batch_size, eval_batch_size, group_by_length=group_by_length)

    def lightning_module(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, family: str,
                         label_names: list[str], finetune_cfg: FinetuneConfig) -> FineTuneModule:
        from modules.training.classification import SequenceClassification

        return SequenceClassification(model, len(label_names), required(finetune_cfg.lr, "finetune.lr"),
                                      finetune_cfg.weight_decay, finetune_cfg.warmup_ratio)

    def prediction_rows(self, test: Dataset, outputs: list[Any], label_names: list[str]) -> list[dict[str, Any]]:
        return [{"index": i, "text": text, "label": label, "prediction": pred}
                for i, (text, label, pred) in enumerate(zip(test["text"], test["label"], outputs, strict=True))]

    def save_predictions(self, path: Path, rows: list[dict[str, Any]]) -> None:
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["index", "label", "prediction", "text"], extrasaction="ignore")
            writer.writeheader()
            writer.writerows({"text": "", **r} for r in rows)

    def load_predictions(self, path: Path) -> list[dict[str, Any]]:
        with open(path, newline="") as f:
            return [{**r, "label": int(r["label"]), "prediction": int(r["prediction"])} for r in csv.DictReader(f)]

    def score(self, rows: list[dict[str, Any]], label_names: list[str]) -> dict[str, float]:
        """Accuracy, macro-F1 and one F1 per class (``f1/<class name>``)."""
        from sklearn.metrics import f1_score

        from modules.evaluation.metrics import classification_metrics

        labels = [r["label"] for r in rows]
        preds = [r["prediction"] for r in rows]
        out = classification_metrics(labels, preds, len(label_names))
        per_class = f1_score(labels, preds, average=None, labels=list(range(len(label_names))), zero_division=0)
        out.update({f"f1/{metric_key(name)}": float(f) for name, f in zip(label_names, per_class, strict=True)})
        return out

    def chance(self, label_names: list[str]) -> float | None:
        return 1 / len(label_names) if label_names else None


TASK = Classification()
