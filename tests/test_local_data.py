"""data=local_text and data=local_labeled: reading the user's files, splits, labels, prep."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import tiny_overrides
from datasets import load_from_disk
from mlflow.tracking import MlflowClient

from modules.data.sources import load_raw
from pipelines import stages
from pipelines.cli import main
from pipelines.config.compose import compose
from pipelines.config.schema import TransferLabConfig
from pipelines.stages.common import StageContext

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def _corpus_lines(n: int, offset: int = 0) -> list[str]:
    return [" ".join(WORDS[(i + j + offset) % len(WORDS)] for j in range(9)) for i in range(n)]


def _files(tmp_path: Path) -> dict[str, Path]:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(_corpus_lines(300)) + "\n\n")
    labeled = tmp_path / "labeled.tsv"
    rows = [f"{WORDS[i % 12]} {WORDS[(i * 5) % 12]} is \"{'good' if i % 3 else 'bad'}\"\t{'pos' if i % 3 else 'neg'}"
            for i in range(120)]
    labeled.write_text("sentence\tsentiment\n" + "\n".join(rows) + "\n")
    return {"corpus": corpus, "labeled": labeled}


def _labeled_cfg(tmp_path: Path, path: Path, *extra: str) -> TransferLabConfig:
    return compose(tiny_overrides(tmp_path / "home", "data=local_labeled", f"data.path={path}",
                                  "data.text_column=sentence", "data.label_column=sentiment", *extra))


def test_local_labeled_splits_deterministically_with_string_labels(tmp_path: Path) -> None:
    cfg = _labeled_cfg(tmp_path, _files(tmp_path)["labeled"])
    a, b = load_raw(cfg.data), load_raw(cfg.data)
    assert a.labeled == b.labeled and a.corpus == b.corpus
    assert a.label_names == ["neg", "pos"] and a.has_labels
    # Fractions of the whole file: test 20% of 120, validation 10%, the rest trains.
    assert {k: len(v) for k, v in a.labeled.items()} == {"train": 84, "validation": 12, "test": 24}
    train_texts = [t for t, _ in a.labeled["train"]]
    assert sorted(a.corpus["train"] + a.corpus["validation"]) == sorted(train_texts)  # corpus = train texts only
    assert any('"good"' in t for t in train_texts)  # TSV quotes kept verbatim
    other = load_raw(_labeled_cfg(tmp_path, _files(tmp_path)["labeled"], "data.seed=7").data)
    assert other.labeled["test"] != a.labeled["test"]


def test_integer_labels_get_numeric_ids_and_positions_work_without_a_header(tmp_path: Path) -> None:
    """The original AG News CSV shape: no header, class index 1..4 (and a 10 to test the order)."""
    path = tmp_path / "train.csv"
    classes = ["1", "2", "4", "10"]
    path.write_text("".join(f'"{classes[i % 4]}","title {i}","{WORDS[i % 12]}, {WORDS[(i * 7) % 12]} story {i}"\n'
                            for i in range(80)))
    cfg = compose(tiny_overrides(tmp_path / "home", "data=ag_news_local", f"data.path={path}"))
    data = load_raw(cfg.data)
    assert data.label_names == ["1", "2", "4", "10"]
    text, label = data.labeled["train"][0]
    assert "story" in text and "title" not in text  # position 2 is the description, with its comma
    row = next(i for i in range(80) if f"story {i}" == text.split(" ", 2)[-1])
    assert data.label_names[label] == classes[row % 4]


def test_local_text_reads_globs_lists_and_table_formats(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("\n".join(_corpus_lines(20)) + "\n")
    (tmp_path / "b.txt").write_text("\n".join(_corpus_lines(10, 3)) + "\n")
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"id": i, "body": f"jsonl doc {i}"}) + "\n" for i in range(5)))
    (tmp_path / "d.csv").write_text("id,body\n" + "".join(f'{i},"csv doc, {i}"\n' for i in range(4)))
    pq.write_table(pa.table({"id": [1, 2, 3], "body": ["pq doc 1", "pq doc 2", None]}), tmp_path / "e.parquet")

    def docs(*overrides: str) -> list[str]:
        data = load_raw(compose(tiny_overrides(tmp_path / "home", "data=local_text", *overrides)).data)
        assert not data.has_labels and data.labeled == {} and data.label_names == []
        return data.corpus["train"] + data.corpus["validation"]

    assert len(docs(f"data.path={tmp_path}/*.txt")) == 30
    mixed = docs(f"data.path=[{tmp_path}/a.txt,{tmp_path}/c.jsonl,{tmp_path}/d.csv,{tmp_path}/e.parquet]",
                 "data.text_column=body")
    assert len(mixed) == 20 + 5 + 4 + 2
    assert {"jsonl doc 0", "csv doc, 3", "pq doc 2"} <= set(mixed)
    assert "csv doc, 0" in docs(f"data.path={tmp_path}/d.csv", "data.text_column=1")  # by position


def test_latin1_file_reads_with_data_encoding(tmp_path: Path) -> None:
    path = tmp_path / "fr.txt"
    path.write_bytes("\n".join(f"café numéro {i}" for i in range(10)).encode("latin-1"))
    cfg = compose(tiny_overrides(tmp_path / "home", "data=local_text", f"data.path={path}", "data.encoding=latin-1"))
    data = load_raw(cfg.data)
    assert "café numéro 0" in data.corpus["train"] + data.corpus["validation"]


def test_local_text_with_a_labeled_file_and_given_splits(tmp_path: Path) -> None:
    files = _files(tmp_path)
    test = tmp_path / "test.tsv"
    test.write_text("sentence\tsentiment\nheld out one\tpos\nheld out two\tneg\n")
    cfg = compose(tiny_overrides(tmp_path / "home", "data=local_text", f"data.path={files['corpus']}",
                                 f"data.labeled_path={files['labeled']}", f"data.test_path={test}",
                                 "data.text_column=sentence", "data.label_column=sentiment"))
    data = load_raw(cfg.data)
    assert len(data.corpus["train"]) + len(data.corpus["validation"]) == 300  # blank lines skipped
    assert data.labeled["test"] == [("held out one", 1), ("held out two", 0)]
    assert len(data.labeled["validation"]) == 12 and len(data.labeled["train"]) == 108
    assert data.sources == [str(files["corpus"]), str(files["labeled"]), str(test)]


def test_prep_on_local_labeled_logs_inputs_and_fingerprint_follows_content(tmp_path: Path) -> None:
    files = _files(tmp_path)
    ctx = StageContext.create(_labeled_cfg(tmp_path, files["labeled"]))
    first = stages.prep(ctx)
    assert first.label_names == ["neg", "pos"] and first.has_labels and not first.cache_hit
    labeled = load_from_disk(str(Path(first.path) / "labeled"))
    assert labeled["train"].features["label"].names == ["neg", "pos"]
    run = MlflowClient(ctx.tracker.uri).get_run(first.run_id)
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"local_labeled-lm", "local_labeled-labeled"}
    lm = inputs["local_labeled-lm"].dataset
    assert json.loads(lm.source) == {"uris": [str(files["labeled"])]}
    assert json.loads(lm.profile)["tokens"]["train"] == run.data.metrics["data/lm_tokens_train"]
    assert json.loads(inputs["local_labeled-labeled"].dataset.profile)["rows"] == {"train": 84, "validation": 12,
                                                                                  "test": 24}
    again = stages.prep(ctx)
    assert again.cache_hit
    rerun = MlflowClient(ctx.tracker.uri).get_run(again.run_id)
    assert {d.dataset.digest for d in rerun.inputs.dataset_inputs} == {lm.digest}  # logged on a hit too
    files["labeled"].write_text(files["labeled"].read_text().replace("neg", "negative"))
    changed = stages.prep(ctx)
    assert not changed.cache_hit and changed.label_names == ["negative", "pos"]


def test_prep_without_labels_writes_lm_data_only(tmp_path: Path) -> None:
    files = _files(tmp_path)
    ctx = StageContext.create(compose(tiny_overrides(tmp_path / "home", "data=local_text",
                                                     f"data.path={files['corpus']}")))
    rec = stages.prep(ctx)
    out = Path(rec.path)
    assert rec.has_labels is False and rec.label_names == []
    assert (out / "lm" / "train").exists() and not (out / "labeled").exists()
    stats = json.loads((out / "stats.json").read_text())
    assert stats["has_labels"] is False and stats["labeled_rows"] == {}
    run = MlflowClient(ctx.tracker.uri).get_run(rec.run_id)
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["local_text-lm"]


@pytest.mark.parametrize("command", ["finetune", "evaluate", "run"])
def test_stages_that_need_labels_fail_in_preflight_on_a_plain_corpus(
        tmp_path: Path, capsys: pytest.CaptureFixture, command: str) -> None:
    files = _files(tmp_path)
    home = tmp_path / "home"
    assert main([command, f"paths.home={home}", "data=local_text", f"data.path={files['corpus']}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no labels" in err[0] and "data.labeled_path" in err[0]
    assert not home.exists()


def test_local_sources_need_a_path(capsys: pytest.CaptureFixture) -> None:
    for source in ("local_text", "local_labeled", "sst2_local"):
        assert main(["config", f"data={source}"]) == 2
        assert "data.path" in capsys.readouterr().err
