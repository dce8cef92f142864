"""Local data files: expand paths and globs, tell formats apart, read columns.

Every failure is a ``DataError`` with one line that names the config key and the file,
so the CLI can print it as is. Files are read with the standard library (csv, json) and
pyarrow (parquet, already a dependency of ``datasets``): a whole ``datasets`` builder
with its on-disk cache would be heavier than the files themselves.
"""

from __future__ import annotations

import codecs
import csv
import glob
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from modules.config import DataConfig
from modules.data.errors import DataError

FORMATS = ("text", "jsonl", "csv", "tsv", "parquet")
SUFFIX_FORMATS = {".txt": "text", ".text": "text", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv",
                  ".tsv": "tsv", ".parquet": "parquet"}
_GLOB_CHARS = set("*?[")
_HASH_CHUNK = 1 << 20  # 1 MiB: hashing streams, whatever the file size
_digest_memo: dict[tuple[str, int, int], str] = {}


def as_list(value: Any) -> list[str]:
    """``data.path`` is one string or a list of strings (Hydra list syntax)."""
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def expand(value: Any, key: str) -> list[Path]:
    """Files named by a path, a glob, or a list of either; each must exist and be non-empty."""
    out: list[Path] = []
    for pattern in as_list(value):
        if _GLOB_CHARS & set(pattern):
            matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True)
                             if Path(p).is_file())
            if not matches:
                raise DataError(f"{key}: no file matches {pattern!r}")
        else:
            p = Path(pattern).expanduser()
            if not p.is_file():
                raise DataError(f"{key}: file not found: {p}")
            matches = [p]
        for p in matches:
            if p.stat().st_size == 0:
                raise DataError(f"{key}: file is empty: {p}")
            if p not in out:
                out.append(p)
    if not out:
        raise DataError(f"{key} is not set (give a file, a glob or a list, e.g. {key}=train.csv)")
    return out


def file_format(path: Path, fmt: str, key: str) -> str:
    """``data.format``, or the format the suffix implies when it is ``auto``."""
    if fmt != "auto":
        if fmt not in FORMATS:
            raise DataError(f"data.format: unknown format {fmt!r} (choices: auto, {', '.join(FORMATS)})")
        return fmt
    found = SUFFIX_FORMATS.get(path.suffix.lower())
    if found is None:
        raise DataError(f"{key}: cannot tell the format of {path} from its suffix; "
                        f"set data.format to one of {', '.join(FORMATS)}")
    return found


def digest(path: Path) -> str:
    """sha256 of the file's bytes, read in 1 MiB chunks; memoised on (path, size, mtime)."""
    st = path.stat()
    memo_key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo_key not in _digest_memo:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
                h.update(chunk)
        _digest_memo[memo_key] = h.hexdigest()
    return _digest_memo[memo_key]


def _codec(encoding: str) -> str:
    """utf-8 files that start with a byte-order mark read the same as those without."""
    try:
        name = codecs.lookup(encoding).name
    except LookupError as exc:
        raise DataError(f"data.encoding: unknown encoding {encoding!r}") from exc
    return "utf-8-sig" if name == "utf-8" else encoding


def _decode_error(path: Path, key: str, encoding: str, exc: UnicodeDecodeError) -> DataError:
    hint = "set data.encoding to the file's encoding, e.g. data.encoding=latin-1"
    return DataError(f"{key}: {path} is not valid {encoding} text ({exc.reason}); {hint}")


@dataclass
class Table:
    """A file's rows as a list of columns; names are "0", "1", ... when there is no header."""

    path: Path | str  # a file, or a hub dataset id: only named in messages
    columns: list[str]
    rows: list[list[Any]]  # row-major, each row as long as ``columns`` (missing cells are None)
    has_names: bool  # False: csv/tsv without a header, where only positions mean anything

    def column(self, spec: Any, key: str) -> list[Any]:
        i = self.index(spec, key)
        return [row[i] if i < len(row) else None for row in self.rows]

    def index(self, spec: Any, key: str) -> int:
        """A column by name, or by 0-based position (an int, or a string of digits)."""
        listing = ", ".join(self.columns) if self.has_names else f"{len(self.columns)} columns, no header"
        if isinstance(spec, bool) or spec is None:
            raise DataError(f"{key}: {spec!r} is not a column name or position")
        position = spec if isinstance(spec, int) else (int(spec) if str(spec).isdigit() and not
                                                        (self.has_names and str(spec) in self.columns) else None)
        if position is not None:
            if not 0 <= position < len(self.columns):
                raise DataError(f"{key}: column position {position} is out of range for {self.path} "
                                f"({listing}; positions count from 0)", listing)
            return position
        if not self.has_names:
            raise DataError(f"{key}: {spec!r} is a column name but {self.path} has no header (data.header=false); "
                            f"give a 0-based position ({listing})", listing)
        if spec not in self.columns:
            raise DataError(f"{key}: column {spec!r} not in {self.path} (columns: {listing or 'none'})", listing)
        return self.columns.index(spec)


def _text_lines(path: Path, key: str, encoding: str) -> Iterator[str]:
    try:
        with open(path, encoding=_codec(encoding), newline="") as f:
            yield from f
    except UnicodeDecodeError as exc:
        raise _decode_error(path, key, encoding, exc) from exc


def _read_delimited(path: Path, key: str, fmt: str, header: bool, encoding: str) -> Table:
    # GLUE-style TSVs carry bare quote characters inside sentences: no quoting for TSV.
    delimiter = "\t" if fmt == "tsv" else ","
    quoting: Literal[0, 3] = csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL
    try:
        rows = [r for r in csv.reader(_text_lines(path, key, encoding), delimiter=delimiter, quoting=quoting)
                if any(cell.strip() for cell in r)]
    except csv.Error as exc:
        raise DataError(f"{key}: {path} is not valid {fmt} ({exc})") from exc
    if header:
        names = rows[0] if rows else []
        return Table(path, [n.strip() for n in names], rows[1:], True)
    width = max((len(r) for r in rows), default=0)
    return Table(path, [str(i) for i in range(width)], rows, False)


def _read_jsonl(path: Path, key: str, encoding: str) -> Table:
    records: list[dict[str, Any]] = []
    for lineno, line in enumerate(_text_lines(path, key, encoding), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{key}: {path} line {lineno} is not JSON ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise DataError(f"{key}: {path} line {lineno} is not a JSON object")
        records.append(record)
    columns: list[str] = []
    for record in records:  # first-seen order: positions follow the first record's keys
        columns += [k for k in record if k not in columns]
    return Table(path, columns, [[r.get(c) for c in columns] for r in records], True)


def _read_parquet(path: Path, key: str) -> Table:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError subclasses for bad files
        raise DataError(f"{key}: {path} is not a readable parquet file ({str(exc).splitlines()[0]})") from exc
    columns = list(table.column_names)
    data = [table.column(c).to_pylist() for c in columns]
    return Table(path, columns, [list(r) for r in zip(*data, strict=True)] if data else [], True)


def read_table(path: Path, key: str, fmt: str, header: bool, encoding: str) -> Table:
    """Rows of a csv/tsv/jsonl/parquet file (text files are one column, ``text``)."""
    fmt = file_format(path, fmt, key)
    if fmt == "text":
        lines = [line.strip() for line in _text_lines(path, key, encoding)]
        return Table(path, ["text"], [[line] for line in lines if line], True)
    if fmt == "jsonl":
        return _read_jsonl(path, key, encoding)
    if fmt == "parquet":
        return _read_parquet(path, key)
    return _read_delimited(path, key, fmt, header, encoding)


def read_texts(paths: list[Path], key: str, cfg: DataConfig) -> list[str]:
    """Documents of a corpus: non-empty lines of text files, or ``data.text_column`` of tables."""
    docs: list[str] = []
    for path in paths:
        table = read_table(path, key, cfg.format, cfg.header, cfg.encoding)
        plain = file_format(path, cfg.format, key) == "text"
        texts = table.column(0 if plain else cfg.text_column, "data.text_column")
        found = [str(t).strip() for t in texts if t is not None and str(t).strip()]
        if not found:
            raise DataError(f"{key}: no text in {path}")
        docs += found
    return docs


def read_labeled(paths: list[Path], key: str, cfg: DataConfig) -> list[tuple[str, str]]:
    """(text, label) pairs of labeled files; rows without text or label are skipped."""
    out: list[tuple[str, str]] = []
    for path in paths:
        if file_format(path, cfg.format, key) == "text":
            raise DataError(f"{key}: {path} is plain text; labeled data needs a csv, tsv, jsonl or parquet file")
        table = read_table(path, key, cfg.format, cfg.header, cfg.encoding)
        texts = table.column(cfg.text_column, "data.text_column")
        labels = table.column(cfg.label_column, "data.label_column")
        rows = [(str(t).strip(), str(y).strip()) for t, y in zip(texts, labels, strict=True)
                if t is not None and y is not None and str(t).strip() and str(y).strip()]
        if not rows:
            raise DataError(f"{key}: no labeled rows in {path}")
        out += rows
    return out
