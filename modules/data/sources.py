"""One entry point over every ``data.source``: load, validate early, fingerprint.

The pipeline validates data in pre-flight, before any MLflow run or cache entry exists, by
loading it fully (only a full read finds a non-UTF-8 byte, an empty labeled file or a
single-class label column). The loaded data is kept for the prep stage of the same process,
keyed by the data fingerprint, so the files are parsed once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any

from modules.config import DataConfig
from modules.data.raw import RawData

SYNTHETIC_KEYS = ("seed", "num_topics", "words_per_topic", "neutral_words", "corpus_documents", "labeled_train",
                  "labeled_val", "labeled_test", "val_fraction", "cue_rate")
_validated: dict[str, RawData] = {}  # at most one entry: data fingerprint -> data loaded by check_data


def has_labels(cfg: DataConfig) -> bool:
    """Whether the source gives a labeled task; known from the config alone."""
    source = cfg.source
    if source == "local_text":
        return bool(cfg.labeled_path)
    if source == "hub":
        return cfg.label_column is not None
    return True  # synthetic, local_labeled


def inputs(cfg: DataConfig) -> dict[str, Any]:
    """What the data is made of: sha256 of every input file (globs expanded, sorted), or the hub id."""
    source = cfg.source
    if source in ("local_text", "local_labeled"):
        from pathlib import Path

        from modules.data.files import digest
        from modules.data.local import input_files

        return {key: sorted([path, digest(Path(path))] for path in paths)
                for key, paths in input_files(cfg).items()}
    if source == "hub":
        from modules.data.hub import hub_id

        return {"hub": hub_id(cfg), "path": cfg.hub_path, "name": cfg.hub_name, "revision": cfg.revision}
    return {}


def data_fingerprint(cfg: DataConfig) -> str:
    """16 hex digits over the data config and the input contents (fits MLflow's digest column)."""
    blob = json.dumps({"data": asdict(cfg), "inputs": inputs(cfg)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _synthetic(cfg: DataConfig, task: str) -> RawData:
    """The synthetic corpus plus the labeled rows of ``task``, all from one lexicon, so a
    model pretrained on the corpus knows the topic of every cue word any task uses."""
    from modules.data.synthetic import generate

    data = generate(**{k: getattr(cfg, k) for k in SYNTHETIC_KEYS})
    sizes = {"train": cfg.labeled_train, "validation": cfg.labeled_val, "test": cfg.labeled_test}
    if task == "token_classification":
        from modules.data.synthetic_tagging import generate_tagging

        rows, names = generate_tagging(data.lexicon, cfg.seed, sizes)
        return RawData(data.corpus, rows, names, task=task)
    if task == "seq2seq":
        from modules.data.synthetic_seq2seq import generate_pairs

        return RawData(data.corpus, generate_pairs(data.lexicon, cfg.seed, sizes), [], task=task)
    return data


def _load(cfg: DataConfig, task: str) -> RawData:
    source = cfg.source
    if source == "synthetic":
        return _synthetic(cfg, task)
    if source == "local_text":
        from modules.data.local import load_local_text

        return load_local_text(cfg, task)
    if source == "local_labeled":
        from modules.data.local import load_local_labeled

        return load_local_labeled(cfg, task)
    if source == "hub":
        if task != "classification":
            from modules.data.errors import DataError

            raise DataError(f"data.source=hub reads text + label columns (finetune.task=classification); for "
                            f"finetune.task={task} download the data once and use data=local_labeled")
        from modules.data.hub import load_hub

        return load_hub(cfg)
    raise ValueError(f"unknown data.source {source!r}")


def check_data(cfg: DataConfig, task: str = "classification") -> None:
    """Load and validate the data (raises ``DataError``); keep it for :func:`load_raw`."""
    if cfg.source == "synthetic":
        return  # generated: nothing the user can get wrong that the config check missed
    key = f"{data_fingerprint(cfg)}-{task}"
    if key not in _validated:
        data = _load(cfg, task)
        _validated.clear()
        _validated[key] = data


def validated_label_names(cfg: DataConfig, task: str = "classification") -> list[str] | None:
    """The label names of the data :func:`check_data` loaded (None if it holds none for ``cfg``),
    so pre-flight can check budgets against the class count without a second read."""
    data = _validated.get(f"{data_fingerprint(cfg)}-{task}")
    return list(data.label_names) if data is not None else None


def load_raw(cfg: DataConfig, task: str = "classification") -> RawData:
    """The raw corpus and the labeled splits of ``task`` from ``data.source`` (reusing a pre-flight load)."""
    if cfg.source != "synthetic" and _validated:
        data = _validated.pop(f"{data_fingerprint(cfg)}-{task}", None)
        if data is not None:
            return data
    return _load(cfg, task)
