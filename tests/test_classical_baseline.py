"""init=tfidf: the classical baseline per task kind (modules/baselines/classical.py), the
majority-class floor, and the cached finetune stage that runs it without any network."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import tiny_overrides
from datasets import DatasetDict

from modules.baselines.classical import C_GRID, COPY, NEAREST, classical_baseline, majority_scores, train_subset
from modules.data.synthetic import generate
from modules.data.synthetic_seq2seq import generate_pairs
from modules.data.synthetic_tagging import generate_tagging
from modules.tasks import get_task

DATA = generate(seed=5, corpus_documents=50, labeled_train=200, labeled_val=60, labeled_test=120, words_per_topic=8,
                neutral_words=40)


def _labeled(task_name: str, splits: dict[str, Any], names: list[str]) -> DatasetDict:
    task = get_task(task_name)
    return DatasetDict({k: task.to_dataset(v, names) for k, v in splits.items()})


def test_tfidf_logistic_regression_beats_the_majority_class_with_c_chosen_on_validation(tmp_path: Path) -> None:
    labeled = _labeled("classification", DATA.labeled, DATA.label_names)
    result = classical_baseline(labeled, "classification", 64, seed=0)
    assert result.choice["C"] in C_GRID
    assert result.train_examples == 64 and result.label_names == DATA.label_names
    assert result.metrics["test/accuracy"] > result.majority["test/accuracy"] + 0.15
    assert result.majority == majority_scores(labeled, "classification", 64, seed=0)
    assert result.majority["test/accuracy"] == pytest.approx(0.25, abs=0.1)  # 4 balanced classes
    # The task's own metric names, scored from the rows as saved and loaded back.
    task = get_task("classification")
    assert {"test/accuracy", "test/f1_macro", "val/accuracy", "val/loss"} <= set(result.metrics)
    assert {f"test/f1/{n}" for n in DATA.label_names} <= set(result.metrics)
    task.save_predictions(tmp_path / task.predictions_file, result.predictions)
    rows = task.load_predictions(tmp_path / task.predictions_file)
    assert len(rows) == len(labeled["test"])
    assert task.score(rows, DATA.label_names)["accuracy"] == result.metrics["test/accuracy"]
    # 4 classes x (unigram + bigram vocabulary) coefficients + 4 intercepts
    assert result.trainable_parameters > 4 and (result.trainable_parameters - 4) % 4 == 0
    # The fitted model, as served (and timed): texts -> the label ids of the saved test predictions.
    assert result.predict is not None
    assert result.predict(list(labeled["test"]["text"])) == [r["prediction"] for r in result.predictions]


def test_the_baseline_sees_the_labeled_subset_a_fine_tune_sees() -> None:
    labeled = _labeled("classification", DATA.labeled, DATA.label_names)
    task = get_task("classification")
    pool = labeled["train"]
    subset = train_subset(task, labeled, 16, seed=3)
    assert subset["text"] == pool.select(task.subset(pool, 16, 3))["text"]
    assert train_subset(task, labeled, 16, seed=4)["text"] != subset["text"]  # the seed picks the examples


def test_per_word_majority_tagger_rows_are_scored_by_the_task(tmp_path: Path) -> None:
    rows, names = generate_tagging(DATA.lexicon, 7, {"train": 200, "validation": 20, "test": 40})
    labeled = _labeled("token_classification", rows, names)
    result = classical_baseline(labeled, "token_classification", 32, seed=0)
    assert result.choice == {"rule": "word_majority"} and result.trainable_parameters == 0
    task = get_task("token_classification")
    task.save_predictions(tmp_path / task.predictions_file, result.predictions)
    saved = task.load_predictions(tmp_path / task.predictions_file)
    assert [len(r["predictions"]) for r in saved] == [len(r["tokens"]) for r in saved]
    assert all(t in names for r in saved for t in r["predictions"])
    assert {f"test/{k}" for k in task.score(saved, names)} <= set(result.metrics)
    # The floor tags every word O: no entity found; the tagger finds the cue words it saw.
    assert result.majority["test/entity_f1"] == 0.0
    assert result.majority["test/token_accuracy"] > 0.5
    assert result.metrics["test/entity_f1"] > 0.3
    # Served, it tags a sentence: one tag id per whitespace word, as the saved rows have them.
    assert result.predict is not None
    sentences = [" ".join(r["tokens"]) for r in saved]
    assert [[names[t] for t in tags] for tags in result.predict(sentences)] == [r["predictions"] for r in saved]


def test_seq2seq_picks_the_rule_with_the_better_validation_chrf() -> None:
    pairs = generate_pairs(DATA.lexicon, 5, {"train": 200, "validation": 20, "test": 40})
    labeled = _labeled("seq2seq", pairs, [])
    result = classical_baseline(labeled, "seq2seq", 64, seed=0)
    # Targets name topics, not source words: looking up a similar training source beats copying.
    assert result.choice == {"rule": NEAREST}
    assert result.metrics["val/chrf/nearest_neighbour"] > result.metrics["val/chrf/copy"]
    assert result.metrics["val/chrf"] == result.metrics["val/chrf/nearest_neighbour"]
    assert {"test/chrf", "test/bleu", "test/exact_match"} <= set(result.metrics)
    assert result.metrics["test/chrf"] > result.majority["test/chrf"]  # the floor copies
    row = result.predictions[0]
    assert set(row) == {"index", "source", "reference", "prediction"}
    assert row["prediction"] in labeled["train"]["target"]
    # A task whose target is its source: copying is perfect on unseen sources, and wins.
    same = {split: [(s, s) for s, _ in rows] for split, rows in pairs.items()}
    copied = classical_baseline(_labeled("seq2seq", same, []), "seq2seq", 64, seed=0)
    assert copied.choice == {"rule": COPY} and copied.metrics["test/exact_match"] == 1.0


# --- the stage ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stage_ctx(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from pipelines import stages
    from pipelines.config.compose import compose
    from pipelines.stages.common import StageContext

    ctx = StageContext.create(compose(tiny_overrides(tmp_path_factory.mktemp("tfidf"))))
    return ctx, stages.prep(ctx)


def _pretrain(fp: str) -> Any:
    """tfidf reads nothing of the pretrain record: a stand-in shows it (no pretraining needed)."""
    return SimpleNamespace(fingerprint=fp, hf_model="/nonexistent")


def test_tfidf_stage_logs_a_child_run_and_is_reused_whatever_the_pretraining(stage_ctx: Any) -> None:
    from pipelines import stages

    ctx, prep = stage_ctx
    first = stages.finetune(ctx, prep, _pretrain("a"), "tfidf")
    assert first.init == "tfidf" and first.strategy is None and not first.cache_hit
    assert first.train_examples == ctx.cfg.finetune.train_examples
    run = ctx.tracker.client.get_run(first.run_id)
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["transferlab.init"] == "tfidf" and tags["transferlab.stage"] == "finetune"
    assert "transferlab.strategy" not in tags and tags["transferlab.baseline_choice"].startswith("C=")
    for key in ("test/accuracy", "test/f1_macro", "val/accuracy", "test/accuracy_majority", "carbon/emissions_kg",
                "carbon/duration_s", "data/train_examples", "model/trainable_parameters"):
        assert key in metrics, key
    assert metrics["test/accuracy"] == first.metrics["test/accuracy"]
    assert metrics["model/trainable_parameters"] > 0
    artifacts = {a.path for a in ctx.tracker.client.list_artifacts(first.run_id)}
    assert "predictions.csv" in artifacts and "hf_model" not in artifacts
    # Another pretraining: same labeled data, budget and seed -> the same entry, reused.
    again = stages.finetune(ctx, prep, _pretrain("b"), "tfidf")
    assert again.cache_hit and again.path == first.path and again.metrics == first.metrics
    assert ctx.tracker.client.get_run(again.run_id).data.tags["transferlab.cache"] == "hit"


def test_tfidf_fingerprint_keys_on_the_labeled_data_budget_and_seed_only(stage_ctx: Any) -> None:
    from dataclasses import replace

    from pipelines.stages.finetune import finetune_fingerprint

    ctx, prep = stage_ctx
    cfg = ctx.cfg
    base = finetune_fingerprint(cfg, prep, {"pretrain": "x"}, "tfidf")
    assert finetune_fingerprint(cfg, prep, {"pretrain": "y"}, "tfidf") == base
    other = replace(cfg, finetune=replace(cfg.finetune, lr=0.5, max_epochs=99, inits=["tfidf"]))
    assert finetune_fingerprint(other, prep, {}, "tfidf") == base  # training knobs do not matter
    assert finetune_fingerprint(replace(cfg, seed=cfg.seed + 1), prep, {}, "tfidf") != base
    budget = replace(cfg, finetune=replace(cfg.finetune, train_examples=32))
    assert finetune_fingerprint(budget, prep, {}, "tfidf") != base


def test_the_evaluate_report_has_a_majority_row_and_the_tfidf_comparison() -> None:
    from modules.evaluation.report import render_report

    md = render_report("r", {"pretrained": {"accuracy": 0.8}, "scratch": {"accuracy": 0.4},
                             "tfidf": {"accuracy": 0.7, "f1_macro": 0.69}},
                       {"loss": 1.0, "perplexity": 2.7, "tokens": 10}, [], [],
                       majority={"accuracy": 0.25, "f1_macro": 0.1})
    assert "| tfidf | 0.7000 | 0.6900 |" in md
    assert "| *majority class* | 0.2500 | 0.1000 |" in md
    assert "Against the classical baseline (`tfidf`), pretraining changes test accuracy by **+10.0 points**" in md
