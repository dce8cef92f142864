"""Prepare data for training: raw text -> trained tokenizer + tokenized datasets on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from modules.data.sources import load_raw
from modules.data.tokenization import (
    pack_for_lm,
    tokenize_labeled,
    tokenizer_kind_for,
    train_tokenizer,
)

# Loading lives in modules/data/sources.py (one entry point over every data.source).
__all__ = ["load_raw", "prepare_data"]


def load_pretrained_tokenizer(path: str | None):
    """A checkpoint's own tokenizer (its embeddings only fit its ids). GPT-2-style tokenizers
    have no pad token; batching needs one, so EOS doubles as pad, as is customary."""
    from transformers import AutoTokenizer

    if not path:
        raise ValueError("tokenizer.kind=pretrained needs tokenizer.path (or model.init)")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def prepare_data(out_dir: Path, data_cfg: dict[str, Any], tokenizer_cfg: dict[str, Any], family: str,
                 block_size: int, max_length: int) -> dict[str, Any]:
    """Write ``tokenizer/``, ``lm/`` (packed blocks) and ``labeled/`` under ``out_dir``.

    Returns the dataset statistics (row and token counts, label names) for logging.
    """
    data = load_raw(data_cfg)
    kind = tokenizer_kind_for(family, tokenizer_cfg["kind"])
    if kind == "pretrained":
        tokenizer = load_pretrained_tokenizer(tokenizer_cfg["path"])
    else:
        tokenizer = train_tokenizer(data.corpus["train"], kind, tokenizer_cfg["vocab_size"],
                                    tokenizer_cfg["min_frequency"])
    tokenizer.save_pretrained(str(out_dir / "tokenizer"))

    corpus = DatasetDict({split: Dataset.from_dict({"text": texts}) for split, texts in data.corpus.items()})
    lm = DatasetDict({split: pack_for_lm(ds, tokenizer, block_size, family) for split, ds in corpus.items()})
    lm.save_to_disk(str(out_dir / "lm"))

    # ClassLabel keeps the id -> name mapping with the data, so no stage has to guess it.
    # A source without labels (a plain corpus) writes no labeled/ at all: stats say has_labels.
    labeled = DatasetDict()
    if data.has_labels:
        features = Features({"text": Value("string"), "label": ClassLabel(names=data.label_names)})
        labeled = DatasetDict({
            split: tokenize_labeled(Dataset.from_dict({"text": [t for t, _ in rows], "label": [y for _, y in rows]},
                                                      features=features), tokenizer, max_length)
            for split, rows in data.labeled.items()
        })
        labeled.save_to_disk(str(out_dir / "labeled"))

    return {
        "tokenizer_kind": kind,
        "vocab_size": len(tokenizer),
        "has_labels": data.has_labels,
        "label_names": data.label_names,
        "sources": data.sources,
        "corpus_documents": {s: len(t) for s, t in data.corpus.items()},
        "lm_blocks": {s: ds.num_rows for s, ds in lm.items()},
        "lm_tokens": {s: ds.num_rows * block_size for s, ds in lm.items()},
        "labeled_rows": {s: ds.num_rows for s, ds in labeled.items()},
    }
