"""Data sources: one-line bad-input errors with nothing left behind, the hub loader's split
and column logic (on in-memory datasets: no network here), presets, and pre-flight."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import tiny_overrides
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

import modules.data.hub as hub
from modules.config import DataConfig
from modules.data import sources
from modules.data.errors import DataError
from modules.data.sources import check_data, load_raw
from pipelines import stages
from pipelines.cli import main
from pipelines.config.compose import compose, group_options
from pipelines.errors import ConfigError, UserError
from pipelines.stages.common import StageContext


def _tsv(path: Path, rows: list[tuple[str, str]], header: str = "sentence\tlabel") -> Path:
    path.write_text(header + "\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    return path


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _good_rows(n: int = 40) -> list[tuple[str, str]]:
    return [(f"sentence number {i} is {'fine' if i % 2 else 'poor'}", str(i % 2)) for i in range(n)]


# Each case: how to make the bad input under tmp_path -> (overrides, expected fragment of the one line).
BAD_INPUTS: dict[str, Callable[[Path], tuple[list[str], str]]] = {
    "missing file": lambda d: (["data=local_text", f"data.path={d}/nope.txt"],
                               f"data.path: file not found: {d}/nope.txt"),
    "glob matching nothing": lambda d: (["data=local_text", f"data.path={d}/*.txt"], "data.path: no file matches"),
    "empty file": lambda d: (["data=local_text", f"data.path={_write(d / 'e.txt', b'')}"], "data.path: file is empty"),
    "missing text column": lambda d: (["data=sst2_local", f"data.path={_tsv(d / 't.tsv', _good_rows())}",
                                       "data.text_column=text"],
                                      "data.text_column: column 'text' not in {p} (columns: sentence, label)"),
    "column position out of range": lambda d: (
        ["data=ag_news_local", f"data.path={_tsv(d / 'a.csv', [], header='1,title,body')}", "data.text_column=5"],
        "data.text_column: column position 5 is out of range"),
    "non-utf8 file": lambda d: (["data=local_text",
                                 "data.path=" + str(_write(d / "l.txt", b"caf\xe9 au lait\nline 2"))],
                                "is not valid utf-8 text (invalid continuation byte); set data.encoding"),
    "one class": lambda d: (["data=sst2_local",
                             f"data.path={_tsv(d / 'o.tsv', [(f's {i}', 'pos') for i in range(9)])}"],
                            "data.label_column: the labels have a single class ('pos')"),
    "labeled file with no rows": lambda d: (["data=sst2_local", f"data.path={_tsv(d / 'h.tsv', [])}"],
                                            "data.path: no labeled rows in"),
    "labeled test file with no rows": lambda d: (
        ["data=sst2_local", f"data.path={_tsv(d / 'tr.tsv', _good_rows())}",
         f"data.test_path={_tsv(d / 'te.tsv', [])}"],
        "data.test_path: no labeled rows in"),
    "hub offline": lambda d: (["data=sst2"], "the Hugging Face hub is unreachable (HF_HUB_OFFLINE=1)"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                         case: str) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    overrides, fragment = BAD_INPUTS[case](data_dir)
    home = tmp_path / "home"
    assert main(["prep", f"paths.home={home}", *overrides]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("transferlab: error: ")
    assert fragment.format(p=data_dir / "t.tsv") in err[0]
    assert not home.exists()  # no MLflow store, no cache entry, no run dir


def test_missing_column_names_the_columns_that_exist(tmp_path: Path) -> None:
    cfg = compose(tiny_overrides(tmp_path / "home", "data=sst2_local",
                                 f"data.path={_tsv(tmp_path / 't.tsv', _good_rows())}", "data.label_column=stars"))
    with pytest.raises(DataError, match=r"column 'stars' not in .* \(columns: sentence, label\)"):
        check_data(cfg.data)


def test_hub_offline_names_the_local_twin_of_each_preset(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    for preset, twin in (("wikitext2", "data=wikitext2_local"), ("imdb", "data=imdb_local"),
                         ("ag_news", "data=ag_news_local"), ("sst2", "data=sst2_local data.path=train.tsv")):
        assert main(["pretrain", f"paths.home={tmp_path / 'home'}", f"data={preset}"]) == 2
        err = capsys.readouterr().err
        assert "unreachable" in err and twin in err, err
    assert main(["prep", f"paths.home={tmp_path / 'home'}", "data=hub", "data.hub_path=someone/reviews",
                 "data.text_column=review"]) == 2
    assert "data=local_labeled data.path=train.tsv data.text_column=review" in capsys.readouterr().err
    assert not (tmp_path / "home").exists()


def test_hub_connection_error_fails_the_same_way(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    for var in hub.OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)

    def no_network(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'stanfordnlp/sst2' on the Hub (ConnectError)")

    monkeypatch.setattr(datasets, "load_dataset", no_network)
    cfg = compose(["data=sst2"])
    with pytest.raises(DataError, match=r"hub is unreachable \(ConnectionError\).*data=sst2_local"):
        check_data(cfg.data)


def test_hub_fetch_never_passes_trust_remote_code(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    for var in hub.OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    seen: dict = {}
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **kw: seen.update(args=a, kwargs=kw) or DatasetDict())
    cfg = compose(["data=wikitext2", "data.revision=abc123"])
    hub.fetch(cfg.data)
    assert seen["args"] == ("wikitext", "wikitext-2-raw-v1")
    assert seen["kwargs"] == {"revision": "abc123", "streaming": False}


# --- the hub's split/column/label logic, on in-memory datasets ------------------------------------

def _sst2_like() -> DatasetDict:
    features = Features({"idx": Value("int32"), "sentence": Value("string"),
                         "label": ClassLabel(names=["negative", "positive"])})

    def split(n: int, offset: int, unlabeled: bool = False) -> Dataset:
        return Dataset.from_dict({"idx": list(range(n)), "sentence": [f"s{offset + i} words" for i in range(n)],
                                  "label": [-1 if unlabeled else i % 2 for i in range(n)]}, features=features)

    return DatasetDict({"train": split(100, 0), "validation": split(20, 1000), "test": split(30, 2000, True)})


def _hub_cfg(tmp_path: Path, *overrides: str) -> DataConfig:
    return compose(tiny_overrides(tmp_path / "home", *overrides)).data


def test_sst2_preset_tests_on_validation_and_cuts_validation_from_train(tmp_path: Path) -> None:
    data = hub.from_splits(_sst2_like(), _hub_cfg(tmp_path, "data=sst2"))
    assert data.label_names == ["negative", "positive"]  # the source's ClassLabel order
    assert [t for t, _ in data.labeled["test"]] == [f"s{1000 + i} words" for i in range(20)]
    assert {k: len(v) for k, v in data.labeled.items()} == {"train": 90, "validation": 10, "test": 20}
    assert data.sources == ["stanfordnlp/sst2"]
    assert hub.from_splits(_sst2_like(), _hub_cfg(tmp_path, "data=sst2")).labeled == data.labeled


def test_a_split_without_labels_is_cut_from_train_instead(tmp_path: Path) -> None:
    """Generic hub config on the GLUE shape: its test split is all -1, so test is cut from train."""
    cfg = _hub_cfg(tmp_path, "data=hub", "data.hub_path=glue-like", "data.text_column=sentence")
    data = hub.from_splits(_sst2_like(), cfg)
    assert {k: len(v) for k, v in data.labeled.items()} == {"train": 80, "validation": 20, "test": 20}
    assert all(int(t.split()[0][1:]) < 100 for t, _ in data.labeled["test"])  # all from train (s0..s99)


def test_text_only_hub_dataset_uses_its_validation_split(tmp_path: Path) -> None:
    wiki = DatasetDict({s: Dataset.from_dict({"text": ["", f" = {s} = ", *[f"{s} line {i}" for i in range(n)]]})
                        for s, n in (("train", 50), ("validation", 8), ("test", 8))})
    data = hub.from_splits(wiki, _hub_cfg(tmp_path, "data=wikitext2"))
    assert not data.has_labels and data.label_names == []
    assert len(data.corpus["train"]) == 51 and data.corpus["validation"][0] == "= validation ="
    capped = hub.from_splits(wiki, _hub_cfg(tmp_path, "data=wikitext2", "data.max_documents=10"))
    assert len(capped.corpus["train"]) == 10


def test_streaming_reads_at_most_max_documents_per_split(tmp_path: Path) -> None:
    streamed = {name: ds.to_iterable_dataset() for name, ds in _sst2_like().items()}
    data = hub.from_splits(streamed, _hub_cfg(tmp_path, "data=sst2", "data.streaming=true", "data.max_documents=40"))
    assert {k: len(v) for k, v in data.labeled.items()} == {"train": 36, "validation": 4, "test": 20}
    assert data.label_names == ["negative", "positive"]


def test_hub_string_labels_and_columns_by_position(tmp_path: Path) -> None:
    ds = DatasetDict({"train": Dataset.from_dict({"stars": ["good", "bad", "ok"] * 10,
                                                  "review": [f"review {i}" for i in range(30)]})})
    cfg = _hub_cfg(tmp_path, "data=hub", "data.hub_path=x/y", "data.text_column=1", "data.label_column=0")
    data = hub.from_splits(ds, cfg)
    assert data.label_names == ["bad", "good", "ok"]
    assert all(t.startswith("review") for t, _ in data.labeled["train"])


@pytest.mark.parametrize(("overrides", "message"), [
    (["data.text_column=body"],
     r"column 'body' not in stanfordnlp/sst2 split 'train' \(columns: idx, sentence, label\)"),
    (["data.label_column=7"], "column position 7 is out of range"),
    (["data.train_split=training"], r"has no split 'training' \(splits: train, validation, test\)"),
])
def test_hub_column_and_split_errors_name_what_exists(tmp_path: Path, overrides: list[str], message: str) -> None:
    with pytest.raises(DataError, match=message):
        hub.from_splits(_sst2_like(), _hub_cfg(tmp_path, "data=sst2", *overrides))


def test_prep_on_a_hub_corpus_through_the_real_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wiki = DatasetDict({s: Dataset.from_dict({"text": [" ".join(f"w{(i * j) % 37}" for j in range(12))
                                                       for i in range(n)]})
                        for s, n in (("train", 200), ("validation", 20), ("test", 20))})
    monkeypatch.setattr(hub, "fetch", lambda cfg: wiki)
    ctx = StageContext.create(compose(tiny_overrides(tmp_path / "home", "data=wikitext2")))
    rec = stages.prep(ctx)
    assert rec.has_labels is False and not (Path(rec.path) / "labeled").exists()
    run = ctx.tracker.client.get_run(rec.run_id)
    (inp,) = run.inputs.dataset_inputs
    assert inp.dataset.name == "wikitext2-lm" and inp.dataset.source_type == "hugging_face"
    assert json.loads(inp.dataset.source) == {"uris": ["wikitext:wikitext-2-raw-v1"]}
    assert json.loads(inp.dataset.profile)["documents"] == {"train": 200, "validation": 20}


# --- config checks, presets, pre-flight ---------------------------------------------------------

@pytest.mark.parametrize(("overrides", "fragment"), [
    (["data=hub"], "data.hub_path"),
    (["data=wikitext2", "data.streaming=true"], "data.max_documents"),
    (["data=local_text", "data.path=a.txt", "data.test_path=t.tsv"], "data.labeled_path"),
    (["data=local_text", "data.path=a.txt", "data.format=xlsx"], "data.format"),
    (["data.labeled_val_fraction=0.5", "data.labeled_test_fraction=0.5"], "labeled_test_fraction"),
])
def test_inconsistent_data_config_is_a_config_error(overrides: list[str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        compose(overrides)


def test_every_preset_composes_and_local_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    presets = set(group_options("data"))
    assert {"synthetic", "local_text", "local_labeled", "hub", "wikitext2", "sst2", "imdb", "ag_news",
            "wikitext2_local", "sst2_local", "imdb_local", "ag_news_local"} <= presets
    for preset in presets:
        extra = ["data.path=[x/*.txt,y.txt]"] if preset.endswith("_local") or preset.startswith("local_") else []
        extra += ["data.hub_path=a/b"] if preset == "hub" else []
        cfg = compose([f"data={preset}", *extra]).data
        assert cfg.name == preset
        if extra and cfg.path:
            assert cfg.path == [f"{tmp_path}/x/*.txt", f"{tmp_path}/y.txt"]


def test_preflight_load_is_reused_by_prep_and_a_cached_prep_skips_it(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.preflight import check_inputs

    path = _tsv(tmp_path / "t.tsv", _good_rows())
    cfg = compose(tiny_overrides(tmp_path / "home", "data=sst2_local", f"data.path={path}"))
    loads = []
    real = sources._load
    monkeypatch.setattr(sources, "_load", lambda c, task: loads.append(1) or real(c, task))
    check_inputs(cfg, "prep")
    check_inputs(cfg, "prep")  # the CLI and the flow both check: still one read
    rec = stages.prep(StageContext.create(cfg))
    assert len(loads) == 1 and rec.label_names == ["0", "1"]
    check_inputs(cfg, "evaluate")  # prep output exists for these contents: validated already, no read
    assert len(loads) == 1
    path.write_bytes(b"")  # new contents: the cached prep does not vouch for them
    with pytest.raises(UserError, match="data.path: file is empty"):
        check_inputs(cfg, "prep")
    other_file = dataclasses.replace(cfg.data, path=str(_tsv(tmp_path / "u.tsv", _good_rows(12))))
    assert load_raw(other_file).label_names == ["0", "1"]
