"""Deterministic splits and label ids, shared by every source.

A split a source does not provide is cut with its own ``random.Random(seed)``, so the same
files and seed always give the same rows, and cutting the labeled splits does not depend
on how large the corpus is. Label ids follow a stable order (numeric when every label is an
integer, else lexicographic) so a file's ``1..4`` or ``neg/pos`` map the same way each time.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from modules.config import DataConfig
from modules.data.errors import DataError

T = TypeVar("T")


def _shuffled(n: int, seed: int) -> list[int]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def cut_corpus(docs: list[str], val_fraction: float, seed: int, key: str) -> dict[str, list[str]]:
    """Hold out ``val_fraction`` of the documents (at least one) for LM validation."""
    if len(docs) < 2:
        raise DataError(f"{key}: {len(docs)} document(s); pretraining needs at least 2 (one for validation)")
    order = _shuffled(len(docs), seed)
    n_val = min(len(docs) - 1, max(1, round(len(docs) * val_fraction)))
    held = set(order[:n_val])
    return {"train": [d for i, d in enumerate(docs) if i not in held],
            "validation": [d for i, d in enumerate(docs) if i in held]}


def cut_labeled(pool: list[T], missing: Sequence[str], fractions: dict[str, float], seed: int,
                key: str) -> dict[str, list[T]]:
    """Cut the ``missing`` splits (``validation``/``test``) from ``pool``; the rest is ``train``.

    Sizes are fractions of the whole pool, each at least one row, and train keeps at least one.
    """
    if not missing:
        return {"train": list(pool)}
    sizes = {split: max(1, round(len(pool) * fractions[split])) for split in missing}
    if sum(sizes.values()) >= len(pool):
        raise DataError(f"{key}: {len(pool)} labeled rows are too few to cut {' and '.join(missing)} splits from "
                        f"(give data.validation_path/data.test_path, or more rows)")
    order = _shuffled(len(pool), seed)
    out: dict[str, list[T]] = {}
    start = 0
    for split in missing:
        out[split] = [pool[i] for i in sorted(order[start:start + sizes[split]])]
        start += sizes[split]
    out["train"] = [pool[i] for i in sorted(order[start:])]
    return out


def label_order(labels: set[str]) -> list[str]:
    """Numeric order when every label is an integer (``2 < 10``), else lexicographic."""
    try:
        return sorted(labels, key=int)
    except ValueError:
        return sorted(labels)


def encode_labels(splits: dict[str, list[tuple[str, str]]], label_key: str,
                  names: list[str] | None = None) -> tuple[dict[str, list[tuple[str, int]]], list[str]]:
    """(text, label name) rows -> (text, label id) rows and the id -> name list.

    ``names`` fixes the order (a hub ``ClassLabel``); otherwise it is :func:`label_order`.
    A task needs at least two classes: one class cannot be classified.
    """
    present = {y for rows in splits.values() for _, y in rows}
    if len(present) < 2:
        only = next(iter(present), None)
        raise DataError(f"{label_key}: the labels have a single class ({only!r}); classification needs at least 2",
                        repr(only))
    names = list(names) if names is not None else label_order(present)
    ids = {name: i for i, name in enumerate(names)}
    unknown = present - set(ids)
    if unknown:
        raise DataError(f"{label_key}: labels {sorted(unknown)} are not among the class names {names}",
                        str(sorted(unknown)), str(names))
    return {split: [(t, ids[y]) for t, y in rows] for split, rows in splits.items()}, names


SPLIT_KEYS = {"validation": "validation_path", "test": "test_path"}


def read_splits(cfg: DataConfig, path_key: str,
                read: Callable[[list[Path], str, DataConfig], list[T]]) -> tuple[dict[str, list[T]], list[str]]:
    """Train/validation/test rows of any labeled file format, and the files read.

    ``data.<path_key>`` holds the train rows; ``data.validation_path``/``data.test_path``
    give those splits, and the ones not given are cut from train with ``data.seed``.
    ``read(paths, key, cfg)`` parses one config key's files (raising ``DataError``).
    """
    from modules.data.files import expand

    key = f"data.{path_key}"
    paths = expand(getattr(cfg, path_key), key)
    pool = read(paths, key, cfg)
    given: dict[str, list[T]] = {}
    for split, split_key in SPLIT_KEYS.items():
        if getattr(cfg, split_key):
            split_paths = expand(getattr(cfg, split_key), f"data.{split_key}")
            given[split] = read(split_paths, f"data.{split_key}", cfg)
            paths += split_paths
    missing = [s for s in ("validation", "test") if s not in given]
    fractions = {"validation": cfg.labeled_val_fraction, "test": cfg.labeled_test_fraction}
    splits = {**cut_labeled(pool, missing, fractions, cfg.seed, key), **given}
    return {s: splits[s] for s in ("train", "validation", "test")}, [str(p) for p in paths]
