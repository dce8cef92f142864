"""CoNLL-style tagging files for ``finetune.task=token_classification``.

Format: one token per line, whitespace-separated columns, the token in the first column
and its tag in the last (CoNLL-2003's POS and chunk columns in between are ignored); a
blank line ends a sentence; ``-DOCSTART-`` lines are skipped. Tags are any strings
(BIO, IOB2, IO or plain type names); ids follow a stable order: ``O`` first, then sorted.

``data.<path_key>`` is the train file(s); ``data.validation_path``/``data.test_path`` give
those splits, and the ones not given are cut from the train sentences with ``data.seed``
(as for labeled csv files, modules/data/local.py).
"""

from __future__ import annotations

from pathlib import Path

from modules.config import DataConfig
from modules.data.errors import DataError
from modules.data.files import _text_lines
from modules.data.splits import read_splits

CONLL_FORMATS = ("auto", "conll")

Sentence = tuple[list[str], list[str]]  # (tokens, tag names)


def read_conll(path: Path, key: str, encoding: str = "utf-8") -> list[Sentence]:
    """The sentences of one CoNLL file, as (tokens, tags); a one-line ``DataError`` when bad."""
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []

    def close() -> None:
        nonlocal tokens, tags
        if tokens:
            sentences.append((tokens, tags))
        tokens, tags = [], []

    for lineno, line in enumerate(_text_lines(path, key, encoding), 1):
        columns = line.split()
        if not columns:
            close()
            continue
        if columns[0] == "-DOCSTART-":
            close()
            continue
        if len(columns) == 1:
            raise DataError(f"{key}: {path}:{lineno} has a single column ({columns[0]!r}); a CoNLL line needs "
                            f"a token and its tag (token first, tag in the last column)", repr(columns[0]))
        tokens.append(columns[0])
        tags.append(columns[-1])
    close()
    if not sentences:
        raise DataError(f"{key}: no tagged sentences in {path}")
    return sentences


def tag_order(tags: set[str]) -> list[str]:
    """``O`` first (id 0, the tag of padding-free "nothing"), then the rest sorted."""
    return (["O"] if "O" in tags else []) + sorted(tags - {"O"})


def _read(paths: list[Path], key: str, cfg: DataConfig) -> list[Sentence]:
    if cfg.format not in CONLL_FORMATS:
        raise DataError(f"data.format={cfg.format}: finetune.task=token_classification reads CoNLL-style files "
                        f"(one token and its tag per line); set data.format=conll or auto")
    return [s for path in paths for s in read_conll(path, key, cfg.encoding)]


def tagging_splits(cfg: DataConfig,
                   path_key: str) -> tuple[dict[str, list[tuple[list[str], list[int]]]], list[str], list[str]]:
    """Train/validation/test (tokens, tag ids) rows, the tag names, and the files read."""
    splits, paths = read_splits(cfg, path_key, _read)
    key = f"data.{path_key}"
    present = {t for rows in splits.values() for _, tags in rows for t in tags}
    if present <= {"O"}:
        raise DataError(f"{key}: every tag is 'O' in {', '.join(paths)}; "
                        f"token classification needs tagged entities")
    names = tag_order(present)
    ids = {name: i for i, name in enumerate(names)}
    encoded = {split: [(tokens, [ids[t] for t in tags]) for tokens, tags in splits[split]]
               for split in ("train", "validation", "test")}
    return encoded, names, paths
