"""``data=hub``: any ``datasets`` dataset, by path, config name, revision and splits.

The network is touched in one small function, :func:`fetch`; everything after it (columns,
labels, splits) works on an in-memory ``DatasetDict``/``IterableDatasetDict``, so it is
tested without the hub. ``trust_remote_code`` is never passed: a dataset that needs a
loading script runs nobody's code here. Offline (``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE``)
or unreachable, loading fails at once with one line that says how to use local files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from itertools import islice
from typing import Any

from modules.config import DataConfig
from modules.data.errors import DataError
from modules.data.files import Table
from modules.data.raw import RawData
from modules.data.splits import cut_corpus, cut_labeled, encode_labels

log = logging.getLogger("transferlab")

OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
# The local-file twin of each hub preset, for the "use local files instead" hint.
LOCAL_TWINS = {
    "wikitext2": "data=wikitext2_local data.path=wiki.train.txt",
    "sst2": "data=sst2_local data.path=train.tsv",
    "imdb": "data=imdb_local data.path=train.csv",
    "ag_news": "data=ag_news_local data.path=train.csv",
}


def hub_id(cfg: DataConfig) -> str:
    """``path[:name][@revision]``: what the data is, as a source string for records."""
    out = str(cfg.hub_path)
    if cfg.hub_name:
        out += f":{cfg.hub_name}"
    if cfg.revision:
        out += f"@{cfg.revision}"
    return out


def offline_var() -> str | None:
    """The environment variable that puts the hub offline, if one is set to a true value."""
    for var in OFFLINE_VARS:
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return var
    return None


def local_hint(cfg: DataConfig) -> str:
    if cfg.name in LOCAL_TWINS:
        return LOCAL_TWINS[cfg.name]
    if cfg.label_column is None:
        return "data=local_text data.path=corpus.txt"
    return (f"data=local_labeled data.path=train.tsv data.text_column={cfg.text_column} "
            f"data.label_column={cfg.label_column}")


def unreachable(cfg: DataConfig, why: str) -> DataError:
    return DataError(f"data.hub_path: the Hugging Face hub is unreachable ({why}), so {hub_id(cfg)!r} cannot be "
                     f"loaded; use local files instead, e.g. {local_hint(cfg)}")


def fetch(cfg: DataConfig) -> Mapping[str, Any]:
    """All splits of the dataset (``IterableDataset`` values when streaming): the network part."""
    if not cfg.hub_path:
        raise DataError("data.hub_path is not set (data=hub needs data.hub_path=<dataset id>, e.g. wikitext)")
    var = offline_var()
    if var:
        raise unreachable(cfg, f"{var}={os.environ[var]}")
    import httpx
    from datasets import load_dataset
    from datasets.exceptions import DatasetNotFoundError

    try:
        return load_dataset(cfg.hub_path, cfg.hub_name, revision=cfg.revision, streaming=cfg.streaming)
    except DatasetNotFoundError as exc:
        raise DataError(f"data.hub_path: {hub_id(cfg)!r} not found on the hub ({_first_line(exc)})") from exc
    except (ConnectionError, httpx.TransportError) as exc:
        raise unreachable(cfg, type(exc).__name__) from exc
    except ValueError as exc:  # e.g. an unknown config name: datasets lists the available ones
        raise DataError(f"data.hub_name: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def load_hub(cfg: DataConfig) -> RawData:
    return from_splits(fetch(cfg), cfg)


def _columns(ds: Any) -> list[str]:
    names = getattr(ds, "column_names", None)
    if names is None:  # a streamed dataset with unknown features: peek at one example
        first = next(iter(ds), None)
        names = list(first) if first else []
    return list(names)


def _class_names(ds: Any, column: str) -> list[str] | None:
    from datasets import ClassLabel

    features = getattr(ds, "features", None) or {}
    feature = features.get(column)
    return list(feature.names) if isinstance(feature, ClassLabel) else None


class _Reader:
    """Reads columns of one dataset's splits, applying the caps streaming needs."""

    def __init__(self, splits: Mapping[str, Any], cfg: DataConfig) -> None:
        self.splits, self.cfg, self.source = splits, cfg, hub_id(cfg)

    def column(self, split: str, spec: Any, key: str) -> str:
        """A column's name, given by name or 0-based position; a missing one lists those there are."""
        table = Table(f"{self.source} split {split!r}", _columns(self.splits[split]), [], True)
        return table.columns[table.index(spec, key)]

    def rows(self, split: str, columns: list[Any]) -> Iterator[tuple[Any, ...]]:
        """The split's values of ``columns``; lazy for a stream, so a cap stops the download early."""
        ds = self.splits[split]
        keys = ["data.text_column", "data.label_column"]
        names = [self.column(split, spec, key) for spec, key in zip(columns, keys, strict=False)]
        if hasattr(ds, "select"):  # an in-memory Dataset: whole columns at once are fastest
            return zip(*(ds[n] for n in names), strict=True)
        return (tuple(ex[n] for n in names) for ex in ds)

    def texts(self, split: str, limit: int | None) -> list[str]:
        """Up to ``limit`` non-empty documents."""
        texts = (str(t).strip() for (t,) in self.rows(split, [self.cfg.text_column]) if t is not None)
        return list(islice((t for t in texts if t), limit))

    def labeled(self, split: str, limit: int | None, names: list[str] | None) -> list[tuple[str, str]]:
        """Up to ``limit`` (text, label name) rows; unlabeled rows are skipped."""
        def keep() -> Iterator[tuple[str, str]]:
            for text, label in self.rows(split, [self.cfg.text_column, self.cfg.label_column]):
                if text is None or label is None or not str(text).strip():
                    continue
                if names is not None:  # ClassLabel ids; -1 marks an unlabeled row (e.g. GLUE test splits)
                    if not 0 <= int(label) < len(names):
                        continue
                    label = names[int(label)]
                if str(label).strip():
                    yield str(text).strip(), str(label).strip()

        return list(islice(keep(), limit))


def from_splits(splits: Mapping[str, Any], cfg: DataConfig) -> RawData:
    """Corpus (and labeled splits when ``data.label_column`` is set) from a loaded dataset.

    Splits the dataset lacks, or whose rows carry no labels, are cut from the train split
    with ``data.seed``; when streaming, every split is read up to ``data.max_documents`` rows.
    """
    reader, train, cap = _Reader(splits, cfg), cfg.train_split, cfg.max_documents
    split_cap = cap if cfg.streaming else None
    if train not in splits:
        raise DataError(f"data.train_split: {reader.source} has no split {train!r} (splits: {', '.join(splits)})")
    if cfg.label_column is None:  # a plain corpus
        docs = reader.texts(train, cap)
        val = cfg.validation_split
        if val and val in splits and val != train:
            corpus = {"train": docs, "validation": reader.texts(val, split_cap)}
            if not corpus["validation"]:
                raise DataError(f"data.validation_split: no text in {reader.source} split {val!r}")
        else:
            corpus = cut_corpus(docs, cfg.val_fraction, cfg.seed, "data.hub_path")
        if not corpus["train"]:
            raise DataError(f"data.train_split: no text in {reader.source} split {train!r}")
        return RawData(corpus, {}, [], [reader.source])

    names = _class_names(splits[train], reader.column(train, cfg.label_column, "data.label_column"))
    pool = reader.labeled(train, split_cap, names)
    if not pool:
        raise DataError(f"data.train_split: no labeled rows in {reader.source} split {train!r}")
    given: dict[str, list[tuple[str, str]]] = {}
    for split, key in (("validation", "validation_split"), ("test", "test_split")):
        name = getattr(cfg, key)
        if not name:
            continue
        if name not in splits or name == train:
            log.info("data: %s has no %r split; cutting %s from %r", reader.source, name, split, train)
            continue
        rows = reader.labeled(name, split_cap, names)
        if not rows:
            log.warning("data: %s split %r has no labels; cutting %s from %r instead", reader.source, name, split,
                        train)
            continue
        given[split] = rows
    missing = [s for s in ("validation", "test") if s not in given]
    fractions = {"validation": cfg.labeled_val_fraction, "test": cfg.labeled_test_fraction}
    cut = {**cut_labeled(pool, missing, fractions, cfg.seed, "data.hub_path"), **given}
    labeled, label_names = encode_labels({s: cut[s] for s in ("train", "validation", "test")},
                                         "data.label_column", names)
    docs = [text for text, _ in labeled["train"]][: cap or None]
    corpus = cut_corpus(docs, cfg.val_fraction, cfg.seed, "data.hub_path")
    return RawData(corpus, labeled, label_names, [reader.source])
