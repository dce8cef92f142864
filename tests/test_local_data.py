"""data=local: the user's own files, and the one-line errors for bad ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tiny_overrides

from modules.data.errors import DataError
from modules.data.local import check_local, load_local
from pipelines import stages
from pipelines.cli import main
from pipelines.config import compose
from pipelines.stages.common import StageContext

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def _files(tmp_path: Path) -> dict[str, Path]:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(WORDS[(i + j) % len(WORDS)] for j in range(9)) for i in range(300)) + "\n\n")
    labeled = tmp_path / "labeled.tsv"
    rows = [f"{WORDS[i % 12]} {WORDS[(i * 5) % 12]} is \"{'good' if i % 3 else 'bad'}\"\t{'pos' if i % 3 else 'neg'}"
            for i in range(120)]
    labeled.write_text("sentence\tsentiment\n" + "\n".join(rows) + "\n")
    return {"corpus": corpus, "labeled": labeled}


def _cfg(tmp_path: Path, files: dict[str, Path], *extra: str) -> dict:
    return compose(tiny_overrides(tmp_path / "home", "data=local", f"data.corpus_path={files['corpus']}",
                                  f"data.labeled_path={files['labeled']}", "data.text_column=sentence",
                                  "data.label_column=sentiment", *extra))


def test_local_files_split_deterministically_with_string_labels(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, _files(tmp_path))
    a, b = load_local(cfg["data"]), load_local(cfg["data"])
    assert a.labeled == b.labeled and a.corpus == b.corpus
    assert a.label_names == ["neg", "pos"]
    sizes = {k: len(v) for k, v in a.labeled.items()}
    assert sizes == {"test": 24, "validation": 10, "train": 86}
    assert len(a.corpus["train"]) + len(a.corpus["validation"]) == 300  # blank lines skipped
    texts = {t for rows in a.labeled.values() for t, _ in rows}
    assert any('"good"' in t for t in texts)  # TSV quotes kept verbatim


def test_prep_on_local_files_and_fingerprint_follows_content(tmp_path: Path) -> None:
    files = _files(tmp_path)
    ctx = StageContext.create(_cfg(tmp_path, files))
    first = stages.prep(ctx)
    assert first["label_names"] == ["neg", "pos"] and not first["cache_hit"]
    assert stages.prep(ctx)["cache_hit"]
    files["labeled"].write_text(files["labeled"].read_text().replace("neg", "negative"))
    changed = stages.prep(ctx)
    assert not changed["cache_hit"] and changed["label_names"] == ["negative", "pos"]


@pytest.mark.parametrize(
    ("mutate", "extra", "message"),
    [
        (lambda f: f["corpus"].unlink(), [], "data.corpus_path: file not found"),
        (lambda f: f["corpus"].write_text(""), [], "data.corpus_path: file is empty"),
        (lambda f: None, ["data.text_column=text"], "column 'text' not in"),
        (lambda f: f["corpus"].write_bytes(b"caf\xe9 au lait\n"), [], "not valid utf-8"),
        (lambda f: f["labeled"].write_text("sentence\tsentiment\na b\tpos\nc d\tpos\ne f\tpos\n"), [],
         "single class"),
    ],
)
def test_bad_local_input_is_a_clear_data_error(tmp_path: Path, mutate, extra: list[str], message: str) -> None:
    files = _files(tmp_path)
    mutate(files)
    cfg = _cfg(tmp_path, files, *extra)
    with pytest.raises(DataError, match=message):
        check_local(cfg["data"])
        load_local(cfg["data"])


def test_missing_column_error_lists_the_columns_that_exist(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, _files(tmp_path), "data.label_column=stars")
    with pytest.raises(DataError, match=r"column 'stars' not in .* \(columns: sentence, sentiment\)"):
        check_local(cfg["data"])


def test_cli_rejects_a_missing_file_before_writing_state(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    files = _files(tmp_path)
    files["corpus"].unlink()
    home = tmp_path / "home"
    code = main(["run", f"paths.home={home}", "data=local", f"data.corpus_path={files['corpus']}",
                 f"data.labeled_path={files['labeled']}"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"transferlab: error: data.corpus_path: file not found: {files['corpus']}"]
    assert not home.exists()


def test_local_source_needs_both_paths(capsys: pytest.CaptureFixture) -> None:
    assert main(["config", "data=local"]) == 2
    assert "data.corpus_path" in capsys.readouterr().err
