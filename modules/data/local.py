"""The user's own files: ``data=local_text`` (a corpus) and ``data=local_labeled``.

local_text: ``data.path`` is a file, a glob or a list of them; ``.txt`` files hold one
document per non-empty line, ``.jsonl``/``.csv``/``.parquet`` files hold documents in
``data.text_column``. An optional ``data.labeled_path`` adds a task to fine-tune on.

local_labeled: ``data.path`` is the labeled train file(s) (csv/tsv/jsonl/parquet) with text
and label columns by name or 0-based position, with or without a header. Its train texts
are also the pretraining corpus. ``data.validation_path``/``data.test_path`` give those
splits; the ones not given are cut deterministically from the train rows with ``data.seed``.
"""

from __future__ import annotations

from typing import Any

from modules.config import DataConfig
from modules.data.files import expand, read_labeled, read_texts
from modules.data.raw import RawData
from modules.data.splits import cut_corpus, encode_labels, read_splits


def labeled_splits(cfg: DataConfig, path_key: str) -> tuple[dict[str, list[tuple[str, int]]], list[str], list[str]]:
    """Train/validation/test (text, label id) rows, the label names, and the files read."""
    splits, paths = read_splits(cfg, path_key, read_labeled)
    encoded, names = encode_labels(splits, "data.label_column")
    return encoded, names, paths


def _corpus(docs: list[str], cfg: DataConfig, key: str) -> dict[str, list[str]]:
    if cfg.max_documents:
        docs = docs[: cfg.max_documents]
    return cut_corpus(docs, cfg.val_fraction, cfg.seed, key)


def task_splits(cfg: DataConfig, path_key: str, task: str) -> tuple[dict[str, list[Any]], list[str], list[str]]:
    """The labeled file(s) read as rows of ``task``: (text, label) for classification, CoNLL
    (tokens, tags) for token_classification, (source, target) pairs for seq2seq."""
    if task == "token_classification":
        from modules.data.conll import tagging_splits

        return tagging_splits(cfg, path_key)
    if task == "seq2seq":
        from modules.data.pairs import pair_splits

        splits, sources = pair_splits(cfg, path_key)
        return splits, [], sources
    return labeled_splits(cfg, path_key)


def load_local_text(cfg: DataConfig, task: str = "classification") -> RawData:
    paths = expand(cfg.path, "data.path")
    corpus = _corpus(read_texts(paths, "data.path", cfg), cfg, "data.path")
    sources = [str(p) for p in paths]
    if not cfg.labeled_path:
        return RawData(corpus, {}, [], sources, task=task)
    labeled, names, labeled_sources = task_splits(cfg, "labeled_path", task)
    return RawData(corpus, labeled, names, sources + labeled_sources, task=task)


def load_local_labeled(cfg: DataConfig, task: str = "classification") -> RawData:
    from modules.tasks import get_task

    labeled, names, sources = task_splits(cfg, "path", task)
    corpus = _corpus(get_task(task).corpus_texts(labeled["train"]), cfg, "data.path")
    return RawData(corpus, labeled, names, sources, task=task)


def input_files(cfg: DataConfig) -> dict[str, list[str]]:
    """Every file a local source reads, per config key (globs expanded)."""
    keys = ["path", "labeled_path", "validation_path", "test_path"]
    if cfg.source == "local_labeled":
        keys.remove("labeled_path")
    return {key: [str(p) for p in expand(getattr(cfg, key), f"data.{key}")] for key in keys if getattr(cfg, key)}
