"""Read the user's own data from local files.

Corpus: ``.txt`` files, one document per non-empty line (``.jsonl`` with a text field
works too). Labeled: ``.csv``/``.tsv`` (or ``.jsonl``) with a header naming the text and
label columns. Labels may be ints or strings; they are mapped to ids in sorted order and
the mapping travels with the data as a ``ClassLabel``. Splits the files do not provide are
cut deterministically from the labeled file with ``data.seed``.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

from modules.data.errors import DataError
from modules.data.raw import RawData

LABELED_SUFFIXES = {".csv", ".tsv", ".jsonl"}
CORPUS_SUFFIXES = {".txt", ".jsonl"}


def _existing(path: str | None, key: str, suffixes: set[str]) -> Path:
    if not path:
        raise DataError(f"{key} is not set (give a file path, e.g. {key}=path/to/file{sorted(suffixes)[0]})")
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{key}: file not found: {p}")
    if p.suffix.lower() not in suffixes:
        raise DataError(f"{key}: unsupported file type {p.suffix!r} for {p} (use one of {', '.join(sorted(suffixes))})")
    if p.stat().st_size == 0:
        raise DataError(f"{key}: file is empty: {p}")
    return p


def _read_text(path: Path, key: str, encoding: str) -> str:
    try:
        return path.read_text(encoding=encoding)
    except UnicodeDecodeError as exc:
        raise DataError(f"{key}: {path} is not valid {encoding} ({exc.reason} at byte {exc.start}); "
                        f"set data.encoding to the file's encoding") from exc


def _rows(path: Path, key: str, encoding: str) -> tuple[list[str], list[dict[str, Any]]]:
    """Header and rows of a csv/tsv/jsonl file."""
    text = _read_text(path, key, encoding)
    if path.suffix.lower() == ".jsonl":
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        return (list(rows[0]) if rows else []), rows
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    # GLUE-style TSVs contain bare quote characters inside sentences: no quoting for TSV.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter, quoting=quoting)
    return list(reader.fieldnames or []), list(reader)


def _header(path: Path, key: str, encoding: str) -> list[str]:
    """Column names from the first line only, so a pre-flight check stays cheap on big files."""
    try:
        with open(path, encoding=encoding) as f:
            first = f.readline()
    except UnicodeDecodeError as exc:
        raise DataError(f"{key}: {path} is not valid {encoding} ({exc.reason}); "
                        f"set data.encoding to the file's encoding") from exc
    if path.suffix.lower() == ".jsonl":
        return list(json.loads(first)) if first.strip() else []
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    return next(csv.reader([first], delimiter=delimiter, quoting=quoting), [])


def _check_columns(header: list[str], path: Path, needed: dict[str, str]) -> None:
    for key, column in needed.items():
        if column not in header:
            raise DataError(f"{key}: column {column!r} not in {path} (columns: {', '.join(header) or 'none'})")


def read_corpus(path: Path, key: str, encoding: str, text_column: str) -> list[str]:
    if path.suffix.lower() == ".jsonl":
        header, rows = _rows(path, key, encoding)
        _check_columns(header, path, {"data.text_column": text_column})
        docs = [str(r[text_column]).strip() for r in rows]
    else:
        docs = [line.strip() for line in _read_text(path, key, encoding).splitlines()]
    docs = [d for d in docs if d]
    if not docs:
        raise DataError(f"{key}: no text in {path}")
    return docs


def read_labeled(path: Path, key: str, cfg: dict[str, Any]) -> list[tuple[str, str]]:
    header, rows = _rows(path, key, cfg["encoding"])
    _check_columns(header, path, {"data.text_column": cfg["text_column"], "data.label_column": cfg["label_column"]})
    out = [(str(r[cfg["text_column"]]).strip(), str(r[cfg["label_column"]]).strip()) for r in rows]
    out = [(t, y) for t, y in out if t and y]
    if not out:
        raise DataError(f"{key}: no labeled rows in {path}")
    return out


def _label_order(labels: set[str]) -> list[str]:
    try:
        return sorted(labels, key=int)
    except ValueError:
        return sorted(labels)


def check_local(cfg: dict[str, Any]) -> None:
    """Fail fast (before any work) on missing files or columns; reads only headers."""
    _existing(cfg["corpus_path"], "data.corpus_path", CORPUS_SUFFIXES)
    for key in ("labeled_path", "validation_path", "test_path"):
        if key == "labeled_path" or cfg[key]:
            path = _existing(cfg[key], f"data.{key}", LABELED_SUFFIXES)
            header = _header(path, f"data.{key}", cfg["encoding"])
            _check_columns(header, path, {"data.text_column": cfg["text_column"],
                                          "data.label_column": cfg["label_column"]})


def load_local(cfg: dict[str, Any]) -> RawData:
    corpus_path = _existing(cfg["corpus_path"], "data.corpus_path", CORPUS_SUFFIXES)
    docs = read_corpus(corpus_path, "data.corpus_path", cfg["encoding"], cfg["text_column"])
    rng = random.Random(cfg["seed"])
    order = list(range(len(docs)))
    rng.shuffle(order)
    n_val = max(1, int(round(len(docs) * cfg["val_fraction"])))
    corpus = {"train": [docs[i] for i in sorted(order[n_val:])], "validation": [docs[i] for i in sorted(order[:n_val])]}

    pool = read_labeled(_existing(cfg["labeled_path"], "data.labeled_path", LABELED_SUFFIXES), "data.labeled_path", cfg)
    given = {split: read_labeled(_existing(cfg[key], f"data.{key}", LABELED_SUFFIXES), f"data.{key}", cfg)
             for split, key in (("validation", "validation_path"), ("test", "test_path")) if cfg[key]}
    rng.shuffle(pool)
    splits: dict[str, list[tuple[str, str]]] = {}
    for split, fraction in (("test", cfg["labeled_test_fraction"]), ("validation", cfg["labeled_val_fraction"])):
        if split in given:
            splits[split] = given[split]
        else:
            n = max(1, int(round(len(pool) * fraction)))
            splits[split], pool = pool[:n], pool[n:]
    splits["train"] = pool

    names = _label_order({y for rows in splits.values() for _, y in rows})
    if len(names) < 2:
        raise DataError(f"data.label_column: {cfg['label_column']!r} has a single class ({names[0]!r}); "
                        "classification needs at least 2")
    ids = {name: i for i, name in enumerate(names)}
    labeled = {split: [(t, ids[y]) for t, y in rows] for split, rows in splits.items()}
    return RawData(corpus, labeled, names)


def file_digests(cfg: dict[str, Any]) -> dict[str, str]:
    """Content hashes of the input files: the data part of the prep fingerprint."""
    import hashlib

    out = {}
    for key in ("corpus_path", "labeled_path", "validation_path", "test_path"):
        if cfg.get(key):
            h = hashlib.sha256()
            with open(cfg[key], "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            out[key] = h.hexdigest()
    return out
