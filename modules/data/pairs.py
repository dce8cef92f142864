"""(source, target) pairs from the user's files, for ``finetune.task=seq2seq``.

The files are csv/tsv/jsonl/parquet tables (read with :func:`modules.data.files.read_table`,
so formats, headers and encodings work as for classification), with the source text in
``data.source_column`` and the target text in ``data.target_column`` (a name, or a
0-based position for files without a header). ``data.<path_key>`` holds the training
pairs; ``data.validation_path``/``data.test_path`` the other splits, and a split not given
is cut from the training pairs with ``data.seed`` (as :func:`modules.data.local.labeled_splits`).

Unlike classification, a row with an empty source or target is an error (naming the file
and row), not skipped: silently dropping half-filled pairs would hide a broken export.
"""

from __future__ import annotations

from pathlib import Path

from modules.config import DataConfig
from modules.data.errors import DataError
from modules.data.files import file_format, read_table
from modules.data.splits import read_splits


def read_pairs(paths: list[Path], key: str, cfg: DataConfig) -> list[tuple[str, str]]:
    """(source, target) rows of the files, in file order; stripped of surrounding space."""
    out: list[tuple[str, str]] = []
    for path in paths:
        if file_format(path, cfg.format, key) == "text":
            raise DataError(f"{key}: {path} is plain text; seq2seq pairs need a csv, tsv, jsonl or parquet file "
                            "with data.source_column and data.target_column")
        table = read_table(path, key, cfg.format, cfg.header, cfg.encoding)
        if not table.rows:
            raise DataError(f"{key}: no rows in {path}")
        sources = table.column(cfg.source_column, "data.source_column")
        targets = table.column(cfg.target_column, "data.target_column")
        # Row numbers as a user finds them: 1-based, counting data rows (after any header).
        for row, (src, tgt) in enumerate(zip(sources, targets, strict=True), 1):
            for value, column in ((src, "data.source_column"), (tgt, "data.target_column")):
                if value is None or not str(value).strip():
                    name = getattr(cfg, column.split(".")[1])
                    raise DataError(f"{key}: {path} data row {row} has an empty {column} "
                                    f"({name!r}) cell; every pair needs a source and a target")
            out.append((str(src).strip(), str(tgt).strip()))
    return out


def pair_splits(cfg: DataConfig, path_key: str) -> tuple[dict[str, list[tuple[str, str]]], list[str]]:
    """Train/validation/test (source, target) rows, and the files read."""
    return read_splits(cfg, path_key, read_pairs)
