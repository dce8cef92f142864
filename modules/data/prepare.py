"""Prepare data for training: raw text -> a tokenizer (trained, or a checkpoint's own) +
tokenized datasets on disk (``lm/`` always, ``labeled/`` when the source has labels)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict

from modules.config import DataConfig, ModelConfig, TokenizerConfig
from modules.data.sources import load_raw
from modules.data.tokenization import make_tokenizer, pack_for_lm

# Loading lives in modules/data/sources.py (one entry point over every data.source).


def prepare_data(out_dir: Path, data_cfg: DataConfig, tokenizer_cfg: TokenizerConfig, family: str,
                 block_size: int, model_cfg: ModelConfig | None = None,
                 task: str = "classification") -> dict[str, Any]:
    """Write ``tokenizer/``, ``lm/`` (packed blocks) and ``labeled/`` (the rows of ``task``)
    under ``out_dir``.

    Returns the dataset statistics (row and token counts, label names) for logging.
    """
    from modules.tasks import get_task

    data = load_raw(data_cfg, task)
    # model_cfg: model.init / trust_remote_code for tokenizer.kind=pretrained (or auto + a checkpoint).
    tokenizer, kind = make_tokenizer(data.corpus["train"], tokenizer_cfg, family, model_cfg)
    tokenizer.save_pretrained(str(out_dir / "tokenizer"))

    corpus = DatasetDict({split: Dataset.from_dict({"text": texts}) for split, texts in data.corpus.items()})
    lm = DatasetDict({split: pack_for_lm(ds, tokenizer, block_size, family) for split, ds in corpus.items()})
    lm.save_to_disk(str(out_dir / "lm"))

    # Raw rows with typed columns (ClassLabel keeps the id -> name mapping with the data);
    # fine-tuning tokenizes them with the tuned model's own tokenizer. A source without
    # labels (a plain corpus) writes no labeled/ at all: stats say has_labels.
    labeled = DatasetDict()
    if data.has_labels:
        spec = get_task(task)
        labeled = DatasetDict({split: spec.to_dataset(rows, data.label_names) for split, rows in data.labeled.items()})
        labeled.save_to_disk(str(out_dir / "labeled"))

    return {
        "tokenizer_kind": kind,
        "vocab_size": len(tokenizer),
        "has_labels": data.has_labels,
        "task": task,
        "label_names": data.label_names,
        "sources": data.sources,
        "corpus_documents": {s: len(t) for s, t in data.corpus.items()},
        "lm_blocks": {s: ds.num_rows for s, ds in lm.items()},
        "lm_tokens": {s: ds.num_rows * block_size for s, ds in lm.items()},
        "labeled_rows": {s: ds.num_rows for s, ds in labeled.items()},
    }
