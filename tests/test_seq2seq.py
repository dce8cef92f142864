"""finetune.task=seq2seq: synthetic pairs, pair files, tokenization per family, the
module's train/generate steps, scoring, and whole tiny pipelines for GPT-2 and BART."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import tiny_overrides
from datasets import Dataset

from modules.config import DataConfig, FinetuneConfig, ModelConfig
from modules.data.errors import DataError
from modules.data.synthetic import generate, make_lexicon
from modules.data.synthetic_seq2seq import generate_pairs, target_for
from modules.data.tokenization import train_tokenizer
from modules.tasks.seq2seq import TASK, tokenize_pairs
from pipelines.config.compose import compose
from pipelines.errors import ConfigError

DATA = generate(seed=5, corpus_documents=120, labeled_train=8, labeled_val=4, labeled_test=4, words_per_topic=8,
                neutral_words=40)
PAIRS = generate_pairs(DATA.lexicon, 5, {"train": 12, "validation": 4, "test": 6})
MODEL = ModelConfig(name="test", arch="bart", family="seq2seq", n_layer=1, n_embd=32, n_head=2, n_inner=64,
                    max_positions=64, dropout=0.0, n_decoder_layer=None)
FT = FinetuneConfig(task="seq2seq", strategy="full", max_target_length=8, num_beams=1, lr=1e-3, weight_decay=0.0,
                    warmup_ratio=0.0)


@pytest.fixture(scope="module", params=["causal", "seq2seq"])
def family_tok(request: pytest.FixtureRequest):
    texts = DATA.corpus["train"] + [t for _, t in PAIRS["train"]]
    return request.param, train_tokenizer(texts, "bpe", 300, family=request.param)


# --- synthetic pairs --------------------------------------------------------------------

def test_synthetic_pairs_are_deterministic_and_the_target_follows_from_the_lexicon() -> None:
    lex = make_lexicon(1234, 4, 48, 160)
    sizes = {"train": 200, "validation": 20, "test": 50}
    a, b = generate_pairs(lex, 1234, sizes), generate_pairs(lex, 1234, sizes)
    assert a == b and {k: len(v) for k, v in a.items()} == sizes
    assert generate_pairs(lex, 99, sizes)["train"] != a["train"]
    for source, target in a["train"] + a["test"]:
        assert target == target_for(source, lex)
        assert 1 <= len(target.split()) <= 2 and set(target.split()) <= {words[0] for words in lex.cues}
    # More than one topic occurs within a sentence, so the target is not one class per row.
    assert any(len(set(t.split())) == 2 for _, t in a["train"])


def test_most_test_cue_words_are_unseen_in_a_small_training_subset() -> None:
    lex = make_lexicon(1234, 4, 48, 160)
    pairs = generate_pairs(lex, 1234, {"train": 2000, "test": 1000})
    cue_words = {w for words in lex.cues for w in words}
    subset = TASK.subset(TASK.to_dataset(pairs["train"], []), 64, seed=0)
    seen = {w for i in subset for w in pairs["train"][i][0].split() if w in cue_words}
    test_cues = [w for s, _ in pairs["test"] for w in s.split() if w in cue_words]
    unseen = sum(w not in seen for w in test_cues) / len(test_cues)
    assert unseen > 0.5


# --- pair files -------------------------------------------------------------------------

def _data_cfg(tmp_path: Path, *extra: str) -> DataConfig:
    return compose(tiny_overrides(tmp_path, "data=local_labeled", "finetune=seq2seq", *extra)).data


def test_pair_files_in_each_format_and_cut_splits(tmp_path: Path) -> None:
    from modules.data.pairs import pair_splits

    rows = [{"src": f"source {i}", "tgt": f"target {i}"} for i in range(40)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _data_cfg(tmp_path, f"data.path={tmp_path / 'train.jsonl'}", "data.source_column=src",
                    "data.target_column=tgt")
    splits, files = pair_splits(cfg, "path")
    assert files == [str(tmp_path / "train.jsonl")]
    assert sum(len(v) for v in splits.values()) == 40 and all(splits[s] for s in ("train", "validation", "test"))
    assert all(s.replace("source", "target") == t for v in splits.values() for s, t in v)
    assert pair_splits(cfg, "path") == (splits, files)  # deterministic cut

    # A header-less TSV by position, with a given test file.
    (tmp_path / "a.tsv").write_text("".join(f"tgt {i}\tsrc {i}\n" for i in range(20)))
    (tmp_path / "t.tsv").write_text("tgt x\tsrc x\n")
    cfg = _data_cfg(tmp_path, f"data.path={tmp_path / 'a.tsv'}", f"data.test_path={tmp_path / 't.tsv'}",
                    "data.header=false", "data.source_column=1", "data.target_column=0")
    splits, files = pair_splits(cfg, "path")
    assert splits["test"] == [("src x", "tgt x")] and len(files) == 2
    assert ("src 3", "tgt 3") in splits["train"] + splits["validation"]


def test_bad_pair_files_fail_in_one_line_naming_the_problem(tmp_path: Path) -> None:
    from modules.data.pairs import pair_splits

    good = tmp_path / "good.csv"
    good.write_text("source,target\n" + "".join(f"s{i},t{i}\n" for i in range(20)))
    cfg = _data_cfg(tmp_path, f"data.path={good}", "data.target_column=summary")
    with pytest.raises(DataError, match=r"data.target_column: column 'summary' not in .*good.csv "
                                        r"\(columns: source, target\)") as err:
        pair_splits(cfg, "path")
    assert "\n" not in str(err.value)

    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match=r"data.path: file is empty: .*empty.csv"):
        pair_splits(_data_cfg(tmp_path, f"data.path={empty}"), "path")
    header_only = tmp_path / "header.csv"
    header_only.write_text("source,target\n")
    with pytest.raises(DataError, match=r"no rows in .*header.csv"):
        pair_splits(_data_cfg(tmp_path, f"data.path={header_only}"), "path")

    hole = tmp_path / "hole.csv"
    hole.write_text("source,target\na,b\nc,\n")
    with pytest.raises(DataError, match=r"hole.csv data row 2 has an empty data.target_column \('target'\)"):
        pair_splits(_data_cfg(tmp_path, f"data.path={hole}"), "path")
    hole.write_text('{"source": " ", "target": "b"}\n')
    with pytest.raises(DataError, match=r"data row 1 has an empty data.source_column"):
        pair_splits(_data_cfg(tmp_path, f"data.path={hole}", "data.format=jsonl"), "path")


def test_config_rejects_strategies_that_need_a_separate_head(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'finetune.strategy': 'linear_probe' is not defined for "
                                          r"finetune.task=seq2seq"):
        compose(tiny_overrides(tmp_path, "finetune=seq2seq", "finetune.strategy=linear_probe"))
    with pytest.raises(ConfigError, match="finetune.task"):
        compose(tiny_overrides(tmp_path, "finetune=seq2seq", "model=bert_tiny"))


# --- tokenization -----------------------------------------------------------------------

def test_tokenization_masks_exactly_the_prompt_and_keeps_the_target(family_tok) -> None:
    family, tok = family_tok
    ds = TASK.to_dataset(PAIRS["train"], [])
    out = tokenize_pairs(ds, tok, family, max_length=40, max_target_length=8)
    eos = tok.eos_token_id
    for row, (source, target) in zip(out, PAIRS["train"], strict=True):
        tgt = tok(target, add_special_tokens=False)["input_ids"]
        if family == "causal":
            p = row["prompt_length"]
            # The source keeps what the target leaves of max_length: 40 - 8 - 1 (separator) tokens.
            assert row["input_ids"][:p] == tok(source, add_special_tokens=False)["input_ids"][:31] + [eos]
            assert row["labels"][:p] == [-100] * p
            assert row["labels"][p:] == row["input_ids"][p:] == tgt[:7] + [eos]
            assert len(row["input_ids"]) <= 40
        else:
            assert row["labels"] == tok(target, truncation=True, max_length=8)["input_ids"]
            assert row["labels"][-1] == eos and target.startswith(
                tok.decode(row["labels"], skip_special_tokens=True).strip())
            assert row["input_ids"] == tok(source, truncation=True, max_length=40)["input_ids"]

    # Batches: padding is -100 in the labels; causal prompts are left-padded for generate.
    from modules.training.seq2seq import PairCollator

    rows = [out[i] for i in range(4)]
    batch = PairCollator(tok.pad_token_id, family)(rows)
    for i, r in enumerate(rows):
        n = len(r["labels"])
        assert batch["labels"][i, :n].tolist() == r["labels"] and (batch["labels"][i, n:] == -100).all()
        assert batch["attention_mask"][i].sum() == len(r["input_ids"])
        if family == "causal":
            p = r["prompt_length"]
            assert batch["gen_input_ids"][i, -p:].tolist() == r["input_ids"][:p]
            assert batch["gen_attention_mask"][i].sum() == p


def test_causal_sources_are_truncated_so_the_target_fits() -> None:
    tok = train_tokenizer(DATA.corpus["train"], "bpe", 300, family="causal")
    ds = Dataset.from_dict({"source": ["ba " * 100], "target": ["lo ma"]})
    row = tokenize_pairs(ds, tok, "causal", max_length=20, max_target_length=8)[0]
    assert len(row["input_ids"]) <= 20 and row["prompt_length"] == 20 - 8
    with pytest.raises(DataError, match="finetune.max_length=8 leaves no room"):
        tokenize_pairs(ds, tok, "causal", max_length=8, max_target_length=8)


# --- the module: a training step and generation, per family -------------------------------

def test_module_trains_a_step_and_generates_strings_in_order(family_tok) -> None:
    import lightning as L

    from modules.models.factory import build_lm, lm_config

    family, tok = family_tok
    torch.manual_seed(0)
    model = build_lm(lm_config(replace(MODEL, arch="gpt2" if family == "causal" else "bart"), tok), family)
    ds = {s: tokenize_pairs(TASK.to_dataset(PAIRS[s], []), tok, family, 40, 8) for s in PAIRS}
    data = TASK.datamodule(ds, tok, family, batch_size=4, eval_batch_size=4)
    module = TASK.lightning_module(model, tok, family, [], FT)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=data)
    assert math.isfinite(float(trainer.callback_metrics["val/loss"]))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    trainer.test(module, datamodule=data, verbose=False)
    outputs = module.test_outputs
    assert len(outputs) == len(PAIRS["test"]) and all(isinstance(o, str) for o in outputs)
    # Batched (left-padded) generation gives each row what it gets alone.
    batch = data.collator([data.splits["test"][i] for i in range(2)])
    single = data.collator([data.splits["test"][1]])
    model.eval()
    assert module.generate(batch)[1] == module.generate(single)[0]


# --- scoring ----------------------------------------------------------------------------

def test_score_is_sacrebleu_over_100_and_exact_match() -> None:
    import sacrebleu

    rows = [{"reference": "a b c d f", "prediction": "a b c d e"}, {"reference": "x y", "prediction": "x y"}]
    bleu_one = TASK.score(rows[:1], [])["bleu"]
    # By hand: precisions 4/5, 3/4, 2/3, 1/2, brevity penalty 1 -> (0.2) ** (1/4).
    assert bleu_one == pytest.approx(0.2 ** 0.25, abs=1e-4)
    scores = TASK.score(rows, [])
    assert scores["exact_match"] == 0.5
    refs, preds = [r["reference"] for r in rows], [r["prediction"] for r in rows]
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(preds, [refs]).score / 100)
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score / 100)
    assert TASK.score([{"reference": "lo ma ka bi", "prediction": "lo ma ka bi"}], []) == \
        {"chrf": pytest.approx(1.0), "bleu": pytest.approx(1.0), "exact_match": 1.0}
    # A one-word target has no 4-grams: BLEU is 0 even when exact, which is why chrF is the headline.
    assert TASK.score([{"reference": "lomaka", "prediction": "lomaka"}], [])["bleu"] == 0.0
    assert TASK.score([{"reference": "abc", "prediction": "xyz"}], [])["chrf"] == 0.0


def test_predictions_round_trip(tmp_path: Path) -> None:
    test = TASK.to_dataset([("s ü 1", "t 1"), ("s 2", "t 2")], [])
    rows = TASK.prediction_rows(test, ["p 1", ""], [])
    TASK.save_predictions(tmp_path / TASK.predictions_file, rows)
    back = TASK.load_predictions(tmp_path / TASK.predictions_file)
    assert back == rows and back[0] == {"index": 0, "source": "s ü 1", "reference": "t 1", "prediction": "p 1"}
    assert TASK.score(back, []) == TASK.score(rows, [])


# --- whole pipeline -----------------------------------------------------------------------

@pytest.mark.parametrize("model", ["gpt2_tiny", "bart_tiny"])
def test_stages_write_predictions_and_log_chrf(tmp_path: Path, model: str) -> None:
    from pipelines import stages
    from pipelines.stages.common import StageContext

    cfg = compose(tiny_overrides(tmp_path, f"model={model}", "finetune=seq2seq", "finetune.max_target_length=8",
                                 "finetune.inits=[pretrained,scratch]"))
    ctx = StageContext.create(cfg)
    prep = stages.prep(ctx)
    pretrain = stages.pretrain(ctx, prep)
    recs = [stages.finetune(ctx, prep, pretrain, init) for init in ("pretrained", "scratch")]
    for rec in recs:
        path = Path(rec.predictions)
        assert path.name == "predictions.jsonl" and rec.task == "seq2seq"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert len(rows) == cfg.data.labeled_test
        assert set(rows[0]) == {"index", "source", "reference", "prediction"}
        metrics = ctx.tracker.client.get_run(rec.run_id).data.metrics
        assert 0.0 <= metrics["test/chrf"] <= 1.0 and "val/loss" in metrics
        assert metrics["test/chrf"] == pytest.approx(TASK.score(rows, [])["chrf"])
    # The classical baseline: copy or nearest-neighbour lookup, in the same rows, scored the same way.
    base = stages.finetune(ctx, prep, pretrain, "tfidf")
    rows = [json.loads(line) for line in Path(base.predictions).read_text().splitlines()]
    assert len(rows) == cfg.data.labeled_test and set(rows[0]) == {"index", "source", "reference", "prediction"}
    run = ctx.tracker.client.get_run(base.run_id).data
    assert run.tags["transferlab.baseline_choice"] in ("rule=copy", "rule=nearest_neighbour")
    assert run.metrics["test/chrf"] == pytest.approx(TASK.score(rows, [])["chrf"])
    ev = stages.evaluate(ctx, prep, pretrain, [*recs, base])
    assert "test/chrf_gain" in ev.metrics and "test/chrf_majority" in ev.metrics
    report = Path(ev.report).read_text()
    assert "chrF" in report and "| tfidf | " in report and "| *majority class* | " in report
