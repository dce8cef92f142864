"""Token classification (NER-style tagging): one tag per word, scored per entity (seqeval).

Rows are (words, tag ids). A word may become several sub-tokens; exactly one of them
carries the word's tag and the rest are ignored in the loss (-100): the first sub-token
for a bidirectional (masked) model, as BERT did for CoNLL-2003, and the *last* one for a
causal model, whose first sub-token cannot see the rest of the word (attention only looks
left), so only the last sub-token's state knows the whole word.

Words are joined with single spaces and tokenized as one text, then mapped to tokens by
character offsets. That keeps the input exactly as in pretraining: tokenizing pre-split
words (``is_split_into_words``) would drop the byte-level BPE's space marker (``Ġ``) from
every word and feed the model token ids it never saw in context.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from datasets import ClassLabel, Dataset, Features, List, Value
from transformers import (
    DataCollatorForTokenClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from modules.config import FinetuneConfig, required
from modules.data.datamodules import FineTuneData
from modules.data.errors import DataError
from modules.tasks.base import Task
from modules.tasks.classification import metric_key

if TYPE_CHECKING:
    from modules.training.finetune_module import FineTuneModule

IGNORE = -100  # label of sub-tokens, special tokens and padding: not in the loss
ENTITY_PREFIXES = ("B-", "I-", "E-", "S-")


def entity_type(tag: str) -> str | None:
    """The entity type a tag marks (``B-PER`` -> ``PER``; a bare ``PER`` -> ``PER``), None for ``O``."""
    if tag == "O":
        return None
    return tag[2:] if tag.startswith(ENTITY_PREFIXES) else tag


def scheme_tag(tag: str) -> str:
    """A tag as seqeval reads it: a bare type name (IO files without prefixes) becomes ``I-<type>``."""
    return tag if tag == "O" or tag.startswith(ENTITY_PREFIXES) else f"I-{tag}"


def label_position(family: str) -> str:
    """Which sub-token of a word carries its tag: ``last`` for causal models (see module doc)."""
    return "last" if family == "causal" else "first"


def align_labels(offsets: list[tuple[int, int]], spans: list[tuple[int, int]], tags: list[int],
                 position: str) -> tuple[list[int], list[int]]:
    """Per-token labels (the word's tag on one sub-token, -100 elsewhere) and per-token word
    indices (the word whose tag the token carries, -1 elsewhere).

    ``offsets`` are the tokens' character spans (special tokens: (0, 0)); ``spans`` the
    words'. A token belongs to the word its span overlaps (a byte-level BPE token includes
    the space before the word, which overlaps no word); words cut off by truncation have
    no token and so no label.
    """
    owner = [-1] * len(offsets)
    w = 0
    for t, (start, end) in enumerate(offsets):
        if end <= start:
            continue  # special token
        while w < len(spans) and spans[w][1] <= start:
            w += 1
        if w < len(spans) and start < spans[w][1] and end > spans[w][0]:
            owner[t] = w
    chosen: dict[int, int] = {}
    for t, word in enumerate(owner):
        if word >= 0 and (position == "last" or word not in chosen):
            chosen[word] = t
    labels = [IGNORE] * len(offsets)
    word_index = [-1] * len(offsets)
    for word, t in chosen.items():
        labels[t] = tags[word]
        word_index[t] = word
    return labels, word_index


def tokenize_tagged(ds: Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int, family: str) -> Dataset:
    """``input_ids``/``attention_mask``/``labels``/``word_index`` for (tokens, tags) rows; no padding."""
    if not getattr(tokenizer, "is_fast", False):
        raise DataError("finetune.task=token_classification needs a fast (Rust) tokenizer: it maps words to "
                        "tokens by character offsets")
    position = label_position(family)

    def tokenize(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        texts, all_spans = [], []
        for words in batch["tokens"]:
            spans, start = [], 0
            for word in words:
                spans.append((start, start + len(word)))
                start += len(word) + 1
            texts.append(" ".join(words))
            all_spans.append(spans)
        enc = tokenizer(texts, truncation=True, max_length=max_length, return_offsets_mapping=True)
        labels, word_index = [], []
        for offsets, spans, tags in zip(enc["offset_mapping"], all_spans, batch["tags"], strict=True):
            y, w = align_labels(offsets, spans, tags, position)
            labels.append(y)
            word_index.append(w)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels,
                "word_index": word_index, "num_words": [len(words) for words in batch["tokens"]]}

    return ds.map(tokenize, batched=True, desc="tokenize tagged")


class TaggingCollator:
    """Pads inputs and ``labels`` (transformers' token-classification collator) and the
    ``word_index`` map (with -1, on the tokenizer's padding side) that turns token
    predictions back into one tag per word."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.inner = DataCollatorForTokenClassification(tokenizer, label_pad_token_id=IGNORE)
        self.left = tokenizer.padding_side == "left"

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        word_index = [f.pop("word_index") for f in features]
        num_words = [f.pop("num_words") for f in features]
        batch = self.inner(features)
        width = batch["input_ids"].shape[1]
        pad = [[-1] * (width - len(w)) for w in word_index]
        rows = [p + w if self.left else w + p for p, w in zip(pad, word_index, strict=True)]
        batch["word_index"] = torch.tensor(rows, dtype=torch.long)  # (B, T)
        batch["num_words"] = torch.tensor(num_words, dtype=torch.long)  # (B,)
        return batch


class TaggingData(FineTuneData):
    COLUMNS = ["input_ids", "attention_mask", "labels", "word_index", "num_words"]

    def __init__(self, splits: dict[str, Dataset], tokenizer: PreTrainedTokenizerBase, batch_size: int,
                 eval_batch_size: int = 64, num_workers: int = 0, group_by_length: bool = False) -> None:
        super().__init__({k: v.select_columns(self.COLUMNS) for k, v in splits.items()}, TaggingCollator(tokenizer),
                         batch_size, eval_batch_size, num_workers, group_by_length)


def entity_types(label_names: Sequence[str]) -> list[str]:
    """Entity types in first-seen tag order (``B-PER``, ``I-PER`` -> ``PER`` once)."""
    return list(dict.fromkeys(t for t in map(entity_type, label_names) if t is not None))


def tagging_subset(tags: Sequence[Sequence[int]], label_names: Sequence[str], n: int, seed: int) -> list[int]:
    """Indices of ``n`` sentences in which every entity type of the pool appears.

    Cover first (rarest type first, a random sentence holding it that covers the most
    still-missing types), then fill round-robin over types from shuffled per-type pools,
    so types stay as balanced as the pool allows. Raises ``DataError`` naming
    ``finetune.train_examples`` when ``n`` sentences cannot cover every type.
    """
    if n >= len(tags):
        return list(range(len(tags)))
    rng = random.Random(seed)
    types_of = [{entity_type(label_names[t]) for t in row} - {None} for row in tags]
    by_type: dict[str, list[int]] = defaultdict(list)
    for i, types in enumerate(types_of):
        for typ in types:
            by_type[typ].append(i)  # type: ignore[index]
    order = [t for t in entity_types(label_names) if t in by_type]
    for pool in by_type.values():
        rng.shuffle(pool)
    chosen: list[int] = []
    taken: set[int] = set()
    missing = set(order)
    while missing and len(chosen) < n:
        rarest = min(missing, key=lambda t: (len(by_type[t]), order.index(t)))
        best = max(by_type[rarest], key=lambda i: len(types_of[i] & missing))  # first max: shuffled order
        chosen.append(best)
        taken.add(best)
        missing -= types_of[best]
    if missing:
        raise DataError(f"finetune.train_examples={n} sentences cannot contain every entity type "
                        f"({len(order)}: {', '.join(order)}); missing {', '.join(sorted(missing))}; "
                        f"raise finetune.train_examples", ", ".join(order), ", ".join(sorted(missing)))
    rest = [i for i in range(len(tags)) if not types_of[i]]
    rng.shuffle(rest)
    streams = [iter(by_type[t]) for t in order] + [iter(rest)]
    while len(chosen) < n:  # terminates: n < len(tags), and every sentence is in some stream
        for stream in streams:
            pick = next((i for i in stream if i not in taken), None)
            if pick is not None and len(chosen) < n:
                chosen.append(pick)
                taken.add(pick)
    return chosen


class TokenClassification(Task):
    name = "token_classification"
    report_columns = (("entity_f1", "entity F1"), ("token_accuracy", "token accuracy"))
    predictions_file = "predictions.jsonl"

    def to_dataset(self, rows: Sequence[Any], label_names: list[str]) -> Dataset:
        features = Features({"tokens": List(Value("string")), "tags": List(ClassLabel(names=label_names))})
        return Dataset.from_dict({"tokens": [list(w) for w, _ in rows], "tags": [list(t) for _, t in rows]},
                                 features=features)

    def label_names(self, ds: Dataset) -> list[str]:
        return list(ds.features["tags"].feature.names)

    def corpus_texts(self, rows: Sequence[Any]) -> list[str]:
        return [" ".join(words) for words, _ in rows]

    def inputs(self, ds: Dataset) -> list[str]:
        return [" ".join(words) for words in ds["tokens"]]  # a served tagger gets the sentence

    def subset(self, pool: Dataset, n: int, seed: int) -> list[int]:
        return tagging_subset(pool["tags"], self.label_names(pool), n, seed)

    def tokenize(self, ds: Dataset, tokenizer: PreTrainedTokenizerBase, family: str, max_length: int,
                 finetune_cfg: FinetuneConfig) -> Dataset:
        return tokenize_tagged(ds, tokenizer, max_length, family)

    def build_model(self, source: str | Path, weights: str, family: str, label_names: list[str],
                    dropout: float | None, trust_remote_code: bool) -> PreTrainedModel:
        from modules.models.factory import build_token_classifier

        return build_token_classifier(source, weights, label_names, dropout, trust_remote_code)

    def datamodule(self, splits: dict[str, Dataset], tokenizer: PreTrainedTokenizerBase, family: str,
                   batch_size: int, eval_batch_size: int, group_by_length: bool = False) -> FineTuneData:
        return TaggingData(splits, tokenizer, batch_size, eval_batch_size, group_by_length=group_by_length)

    def lightning_module(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, family: str,
                         label_names: list[str], finetune_cfg: FinetuneConfig) -> FineTuneModule:
        from modules.training.token_classification import TokenTagging

        return TokenTagging(model, len(label_names), required(finetune_cfg.lr, "finetune.lr"),
                            finetune_cfg.weight_decay, finetune_cfg.warmup_ratio)

    def prediction_rows(self, test: Dataset, outputs: list[Any], label_names: list[str]) -> list[dict[str, Any]]:
        return [{"index": i, "tokens": words, "tags": [label_names[t] for t in tags],
                 "predictions": [label_names[p] for p in preds]}
                for i, (words, tags, preds) in enumerate(zip(test["tokens"], test["tags"], outputs, strict=True))]

    def save_predictions(self, path: Path, rows: list[dict[str, Any]]) -> None:
        with open(path, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")

    def load_predictions(self, path: Path) -> list[dict[str, Any]]:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def score(self, rows: list[dict[str, Any]], label_names: list[str]) -> dict[str, float]:
        """Micro entity precision/recall/F1 (an entity counts when type and span both match),
        F1 per entity type (``entity_f1/<TYPE>``) and word-level tag accuracy."""
        from seqeval.metrics import (
            accuracy_score,
            classification_report,
            f1_score,
            precision_score,
            recall_score,
        )

        gold = [[scheme_tag(t) for t in r["tags"]] for r in rows]
        pred = [[scheme_tag(t) for t in r["predictions"]] for r in rows]
        out = {
            "entity_precision": float(precision_score(gold, pred, zero_division=0)),
            "entity_recall": float(recall_score(gold, pred, zero_division=0)),
            "entity_f1": float(f1_score(gold, pred, zero_division=0)),
            "token_accuracy": float(accuracy_score(gold, pred)),
        }
        report = classification_report(gold, pred, output_dict=True, zero_division=0)
        for typ in entity_types(label_names):
            out[f"entity_f1/{metric_key(typ)}"] = float(report.get(typ, {}).get("f1-score", 0.0))
        return out


TASK = TokenClassification()
