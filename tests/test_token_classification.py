"""finetune.task=token_classification: synthetic rows, CoNLL files, sub-token alignment,
the per-token head, seqeval scores, the entity-covering subset, and a stage-level run."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import tiny_overrides

from modules.config import DataConfig, FinetuneConfig, ModelConfig
from modules.data.conll import tagging_splits
from modules.data.errors import DataError
from modules.data.synthetic import generate
from modules.data.synthetic_tagging import generate_tagging
from modules.data.tokenization import train_tokenizer
from modules.models.factory import build_lm, build_token_classifier, lm_config
from modules.models.freeze import apply_strategy
from modules.tasks import get_task
from modules.tasks.token_classification import IGNORE, align_labels, entity_type, tagging_subset

TASK = get_task("token_classification")
DATA = generate(seed=5, corpus_documents=150, labeled_train=8, labeled_val=4, labeled_test=4, words_per_topic=8,
                neutral_words=40)
SIZES = {"train": 200, "validation": 20, "test": 40}
MODEL = ModelConfig(name="test", arch="gpt2", family="causal", n_layer=1, n_embd=32, n_head=2, n_inner=64,
                    max_positions=64, dropout=0.1, n_decoder_layer=None)


def _valid_bio(tags: list[str]) -> bool:
    prev = "O"
    for tag in tags:
        if tag.startswith("I-") and prev not in (f"B-{tag[2:]}", tag):
            return False
        prev = tag
    return True


# --- synthetic rows -------------------------------------------------------------------------------

def test_synthetic_tagging_is_deterministic_valid_bio_and_balanced() -> None:
    rows, names = generate_tagging(DATA.lexicon, 7, SIZES)
    again, names_again = generate_tagging(DATA.lexicon, 7, SIZES)
    assert rows == again and names == names_again
    assert generate_tagging(DATA.lexicon, 8, SIZES)[0] != rows
    assert names[0] == "O" and len(names) == 1 + 2 * len(DATA.lexicon.label_names)
    assert {f"B-{n.upper()}" for n in DATA.lexicon.label_names} <= set(names)
    assert {s: len(r) for s, r in rows.items()} == SIZES
    cue_topic = {w: t for t, words in enumerate(DATA.lexicon.cues) for w in words}
    for split in SIZES:
        begins: Counter[str] = Counter()
        for words, tags in rows[split]:
            assert len(words) == len(tags) and words[-1] == "."
            named = [names[t] for t in tags]
            assert _valid_bio(named), named
            assert any(t != "O" for t in named)  # every sentence holds an entity
            for word, tag in zip(words, named, strict=True):
                # the tag is exactly the cue word's topic; every other word is O
                expected = DATA.lexicon.label_names[cue_topic[word]].upper() if word in cue_topic else None
                assert entity_type(tag) == expected, (word, tag)
            begins.update(t[2:] for t in named if t.startswith("B-"))
        assert len(begins) == len(DATA.lexicon.label_names)  # every type present
        assert max(begins.values()) - min(begins.values()) <= 1  # balanced rounds


def test_synthetic_sentences_mix_topics() -> None:
    rows, names = generate_tagging(DATA.lexicon, 7, SIZES)
    mixed = sum(len({entity_type(names[t]) for t in tags} - {None}) > 1 for _, tags in rows["train"])
    assert mixed > len(rows["train"]) / 5


# --- CoNLL files ----------------------------------------------------------------------------------
TAGGING = FinetuneConfig(task="token_classification")


def _cfg(path: Any, **kw: Any) -> DataConfig:
    return replace(DataConfig(path=path, validation_path=None, test_path=None, format="auto", encoding="utf-8",
                              labeled_val_fraction=0.2, labeled_test_fraction=0.2, seed=3), **kw)


CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

"""


def _sentences(n: int) -> str:
    return "".join(f"w{i} B-PER\nx{i} O\ny{i} B-LOC\n\n" for i in range(n))


def test_conll_reads_first_and_last_columns_skips_docstart_and_orders_tags(tmp_path: Path) -> None:
    train, val, test = tmp_path / "train.conll", tmp_path / "val.txt", tmp_path / "test.txt"
    train.write_text(CONLL)
    val.write_text("Peter B-PER\n")
    test.write_text("Bonn B-LOC\nis O\n")
    splits, names, files = tagging_splits(_cfg(str(train), validation_path=str(val), test_path=str(test)), "path")
    assert names == ["O", "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-PER"]
    assert [w for w, _ in splits["train"]] == [["EU", "rejects", "German", "call", "."], ["Peter", "Blackburn"]]
    assert [names[t] for t in splits["train"][1][1]] == ["B-PER", "I-PER"]
    assert [names[t] for t in splits["test"][0][1]] == ["B-LOC", "O"]
    assert files == [str(train), str(val), str(test)]


def test_conll_missing_splits_are_cut_from_train(tmp_path: Path) -> None:
    (tmp_path / "a.conll").write_text(_sentences(20))
    cfg = _cfg(str(tmp_path / "a.conll"))
    splits, names, _ = tagging_splits(cfg, "path")
    assert {s: len(r) for s, r in splits.items()} == {"train": 12, "validation": 4, "test": 4}
    all_words = [w[0] for rows in splits.values() for w, _ in rows]
    assert sorted(all_words) == sorted(f"w{i}" for i in range(20))  # a partition
    assert tagging_splits(cfg, "path")[0] == splits  # deterministic for data.seed
    assert names == ["O", "B-LOC", "B-PER"]


@pytest.mark.parametrize("content, message", [
    (b"EU B-ORG\nrejects\n", r"a\.conll:2 has a single column \('rejects'\)"),
    (b"\n\n-DOCSTART- O\n\n", "no tagged sentences"),
    (b"caf\xe9 B-LOC\n", "is not valid utf-8"),
    (b"a O\nb O\n\n" * 10, "every tag is 'O'"),
])
def test_conll_bad_input_is_one_line_data_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "a.conll"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as err:
        tagging_splits(_cfg(str(path)), "path")
    assert "\n" not in str(err.value) and "data.path" in str(err.value)


def test_conll_empty_file_and_wrong_format_are_data_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.conll"
    empty.write_text("")
    with pytest.raises(DataError, match="data.path: file is empty"):
        tagging_splits(_cfg(str(empty)), "path")
    good = tmp_path / "a.conll"
    good.write_text(_sentences(10))
    with pytest.raises(DataError, match="data.format=csv"):
        tagging_splits(_cfg(str(good), format="csv"), "path")


# --- tokenization / label alignment ---------------------------------------------------------------

@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from transformers import AutoTokenizer

    out = {}
    for kind, family in (("bpe", "causal"), ("wordpiece", "masked")):
        path = tmp_path_factory.mktemp(family)
        train_tokenizer(DATA.corpus["train"], kind, 200, family=family).save_pretrained(str(path))
        out[family] = AutoTokenizer.from_pretrained(str(path))  # as fine-tuning loads it
    return out


def test_align_labels_by_character_offsets() -> None:
    # "ab cd": a special token, "a" "b" (word 0), a space-only token, " cd" (word 1, with its space)
    offsets = [(0, 0), (0, 1), (1, 2), (2, 3), (2, 5)]
    spans = [(0, 2), (3, 5)]
    labels, words = align_labels(offsets, spans, [7, 8], "first")
    assert labels == [IGNORE, 7, IGNORE, IGNORE, 8] and words == [-1, 0, -1, -1, 1]
    labels, words = align_labels(offsets, spans, [7, 8], "last")
    assert labels == [IGNORE, IGNORE, 7, IGNORE, 8] and words == [-1, -1, 0, -1, 1]


@pytest.mark.parametrize("family", ["causal", "masked"])
def test_one_labelled_sub_token_per_word(tokenizers: dict[str, Any], family: str) -> None:
    tok = tokenizers[family]
    # two cue words glued into one unseen word: several sub-tokens with either tokenizer
    rows = [([DATA.lexicon.cues[0][0] + DATA.lexicon.cues[1][0], *DATA.lexicon.nouns[:2], "."], [1, 0, 2, 0])]
    ds = TASK.tokenize(TASK.to_dataset(rows, ["O", "B-A", "I-A"]), tok, family, 64, TAGGING)
    row = ds[0]
    assert len(row["input_ids"]) == len(row["labels"]) == len(row["word_index"]) == len(row["attention_mask"])
    labelled = [i for i, y in enumerate(row["labels"]) if y != IGNORE]
    assert [row["labels"][i] for i in labelled] == [1, 0, 2, 0]
    assert [row["word_index"][i] for i in labelled] == [0, 1, 2, 3]
    enc = tok(" ".join(rows[0][0]))
    assert row["input_ids"] == enc["input_ids"]  # exactly the text as pretraining saw it
    first_word = [i for i, w in enumerate(enc.word_ids()) if w == 0]
    assert len(first_word) > 1
    # masked: the first sub-token; causal: the last (the only one that has seen the whole word)
    assert labelled[0] == (first_word[-1] if family == "causal" else first_word[0])
    if family == "masked":
        assert row["labels"][0] == row["labels"][-1] == IGNORE  # [CLS], [SEP]


@pytest.mark.parametrize("family", ["causal", "masked"])
def test_truncation_keeps_lengths_consistent(tokenizers: dict[str, Any], family: str) -> None:
    rows, names = generate_tagging(DATA.lexicon, 1, {"test": 6})
    ds = TASK.tokenize(TASK.to_dataset(rows["test"], names), tokenizers[family], family, 6, TAGGING)
    for row, (words, tags) in zip(ds, rows["test"], strict=True):
        assert len(row["input_ids"]) == len(row["labels"]) == len(row["word_index"]) <= 6
        kept = [w for w in row["word_index"] if w >= 0]
        assert kept == list(range(len(kept))) and len(kept) < len(words)
        assert [y for y in row["labels"] if y != IGNORE] == tags[:len(kept)]
        assert row["num_words"] == len(words)


# --- the model head -------------------------------------------------------------------------------

@pytest.mark.parametrize("family, arch", [("causal", "gpt2"), ("masked", "bert")])
def test_head_gives_one_score_per_token_and_tag(tokenizers: dict[str, Any], tmp_path: Path, family: str,
                                                arch: str) -> None:
    tok = tokenizers[family]
    build_lm(lm_config(replace(MODEL, arch=arch), tok), family).save_pretrained(str(tmp_path))
    rows, names = generate_tagging(DATA.lexicon, 2, {"train": 5})
    ds = TASK.tokenize(TASK.to_dataset(rows["train"], names), tok, family, 64, TAGGING)
    data = TASK.datamodule({"train": ds, "validation": ds, "test": ds}, tok, family, 5, 5)
    batch = next(iter(data.test_dataloader()))
    for init in ("pretrained", "scratch"):
        model = build_token_classifier(tmp_path, init, names, 0.2)
        assert model.training and model.config.id2label[1] == names[1]
        out = model(**{k: v for k, v in batch.items() if k not in ("word_index", "num_words")})
        assert out.logits.shape == (5, batch["input_ids"].shape[1], len(names))
        assert torch.isfinite(out.loss)
    report = apply_strategy(model, "linear_probe")
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"classifier.weight", "classifier.bias"}
    assert report.trainable_parameters == len(names) * (MODEL.n_embd + 1)


# --- scoring --------------------------------------------------------------------------------------

def test_score_matches_a_hand_computed_seqeval_case(tmp_path: Path) -> None:
    names = ["O", "B-LOC", "B-ORG", "B-PER", "I-PER"]
    rows = [
        {"tokens": list("abcd"), "tags": ["B-PER", "I-PER", "O", "B-LOC"],
         "predictions": ["B-PER", "I-PER", "O", "B-ORG"]},
        {"tokens": list("ef"), "tags": ["B-ORG", "O"], "predictions": ["B-ORG", "O"]},
    ]
    path = tmp_path / TASK.predictions_file
    TASK.save_predictions(path, rows)
    scores = TASK.score(TASK.load_predictions(path), names)
    # gold PER(a-b) LOC(d) ORG(e); predicted PER(a-b) ORG(d) ORG(e): 2 of 3 right each way
    assert scores["entity_precision"] == pytest.approx(2 / 3)
    assert scores["entity_recall"] == pytest.approx(2 / 3)
    assert scores["entity_f1"] == pytest.approx(2 / 3)
    assert scores["token_accuracy"] == pytest.approx(5 / 6)
    assert scores["entity_f1/PER"] == 1.0 and scores["entity_f1/LOC"] == 0.0
    assert scores["entity_f1/ORG"] == pytest.approx(2 / 3)  # P 1/2, R 1
    assert all(0 <= v <= 1 for v in scores.values())


def test_score_reads_bare_type_tags_as_io() -> None:
    rows = [{"tokens": list("abc"), "tags": ["PER", "PER", "O"], "predictions": ["PER", "O", "O"]}]
    scores = TASK.score(rows, ["O", "PER"])
    assert scores["entity_f1"] == 0.0  # span PER(a-b) vs PER(a): no exact match
    assert scores["token_accuracy"] == pytest.approx(2 / 3)


# --- the labeled subset ---------------------------------------------------------------------------

def test_subset_covers_every_entity_type() -> None:
    rows, names = generate_tagging(DATA.lexicon, 3, {"train": 200})
    tags = [t for _, t in rows["train"]]
    n_types = len(DATA.lexicon.label_names)
    for n in (n_types, 16):
        for seed in range(5):
            chosen = tagging_subset(tags, names, n, seed)
            assert len(chosen) == len(set(chosen)) == n
            types = {entity_type(names[t]) for i in chosen for t in tags[i]} - {None}
            assert len(types) == n_types
    assert tagging_subset(tags, names, 16, 1) == tagging_subset(tags, names, 16, 1)


def test_subset_that_cannot_cover_every_type_names_the_budget() -> None:
    names = ["O", "B-A", "B-B", "B-C"]
    tags = [[1, 0], [2, 0], [3, 0], [0, 0]] * 3  # one type per sentence
    assert len(tagging_subset(tags, names, 3, 0)) == 3
    with pytest.raises(DataError, match=r"finetune\.train_examples=2 .*every entity type"):
        tagging_subset(tags, names, 2, 0)


# --- the stages -----------------------------------------------------------------------------------

def test_stage_run_writes_predictions_and_logs_entity_f1(tmp_path: Path) -> None:
    from pipelines import stages
    from pipelines.config.compose import compose
    from pipelines.stages.common import StageContext

    ctx = StageContext.create(compose(tiny_overrides(tmp_path, "finetune=token_classification", "finetune.max_epochs=1",
                                                     "finetune.train_examples=8")))
    prep = stages.prep(ctx)
    assert prep.label_names[0] == "O" and len(prep.label_names) == 9
    pretrain = stages.pretrain(ctx, prep)
    rec = stages.finetune(ctx, prep, pretrain, "pretrained")
    rows = [json.loads(line) for line in Path(rec.predictions).read_text().splitlines()]
    assert rec.predictions.endswith("predictions.jsonl") and len(rows) == ctx.cfg.data.labeled_test
    assert all(len(r["tokens"]) == len(r["tags"]) == len(r["predictions"]) for r in rows)
    assert set(r["predictions"][0] for r in rows) <= set(prep.label_names)
    run = ctx.tracker.client.get_run(rec.run_id)
    assert run.data.tags["transferlab.task"] == "token_classification"
    for key in ("train/loss", "val/loss", "val/token_accuracy", "test/entity_f1", "test/token_accuracy"):
        assert key in run.data.metrics, key
    assert run.data.metrics["test/entity_f1"] == pytest.approx(TASK.score(rows, prep.label_names)["entity_f1"])
    assert run.data.metrics["data/train_examples"] == 8
    # The classical baseline tags the same 8 sentences' words with their most frequent tag.
    base = stages.finetune(ctx, prep, pretrain, "tfidf")
    rows = [json.loads(line) for line in Path(base.predictions).read_text().splitlines()]
    assert all(len(r["tokens"]) == len(r["predictions"]) for r in rows) and base.train_examples == 8
    metrics = ctx.tracker.client.get_run(base.run_id).data.metrics
    assert metrics["test/entity_f1"] == pytest.approx(TASK.score(rows, prep.label_names)["entity_f1"])
    assert metrics["test/entity_f1_majority"] == 0.0  # all-O finds no entity
