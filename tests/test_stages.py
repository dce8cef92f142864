"""Each stage function on a tiny config, without Prefect, with assertions on MLflow."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_overrides

from modules.training.compile_policy import DEFAULT_MIN_STEPS
from pipelines import stages
from pipelines.config.compose import compose
from pipelines.stages.common import StageContext
from pipelines.stages.records import FinetuneRecord, PrepRecord, PretrainRecord


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> StageContext:
    cfg = compose(tiny_overrides(tmp_path_factory.mktemp("stages")))
    return StageContext.create(cfg)


@pytest.fixture(scope="module")
def prep_rec(ctx: StageContext) -> PrepRecord:
    return stages.prep(ctx)


@pytest.fixture(scope="module")
def pretrain_rec(ctx: StageContext, prep_rec: PrepRecord) -> PretrainRecord:
    return stages.pretrain(ctx, prep_rec)


@pytest.fixture(scope="module")
def finetune_recs(ctx: StageContext, prep_rec: PrepRecord, pretrain_rec: PretrainRecord) -> list[FinetuneRecord]:
    return [stages.finetune(ctx, prep_rec, pretrain_rec, init) for init in ("pretrained", "scratch")]


def _run(ctx: StageContext, run_id: str):
    return ctx.tracker.client.get_run(run_id)


def _artifacts(ctx: StageContext, run_id: str, path: str | None = None) -> set[str]:
    return {a.path for a in ctx.tracker.client.list_artifacts(run_id, path)}


def test_prep_writes_tokenizer_and_datasets(ctx: StageContext, prep_rec: PrepRecord) -> None:
    out = Path(prep_rec.path)
    assert (out / "tokenizer" / "tokenizer.json").exists()
    assert (out / "lm" / "train").exists() and (out / "labeled" / "test").exists()
    assert prep_rec.cache_hit is False and len(prep_rec.label_names) == 4
    run = _run(ctx, prep_rec.run_id)
    assert run.data.tags["transferlab.stage"] == "prep"
    assert run.data.tags["transferlab.cache"] == "miss"
    assert run.data.metrics["data/lm_blocks_train"] > 0
    assert run.data.metrics["carbon/emissions_kg"] > 0
    assert {"config.yaml", "emissions.csv", "stats.json", "tokenizer"} <= _artifacts(ctx, prep_rec.run_id)


def test_second_prep_is_a_cache_hit_without_retokenizing(ctx: StageContext, prep_rec: PrepRecord,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import modules.data.prepare

    def must_not_run(*args, **kwargs):
        raise AssertionError("prep recomputed despite identical inputs")

    monkeypatch.setattr(modules.data.prepare, "prepare_data", must_not_run)
    again = stages.prep(ctx)
    assert again.cache_hit is True
    assert again.fingerprint == prep_rec.fingerprint and again.path == prep_rec.path
    tags = _run(ctx, again.run_id).data.tags
    assert tags["transferlab.cache"] == "hit"
    assert tags["transferlab.cache_source_run"] == prep_rec.run_id


def test_changed_input_is_a_cache_miss(ctx: StageContext, prep_rec: PrepRecord) -> None:
    other = StageContext.create(replace(ctx.cfg, data=replace(ctx.cfg.data, seed=99)))
    rec = stages.prep(other)
    assert rec.cache_hit is False and rec.fingerprint != prep_rec.fingerprint


def test_pretrain_exports_a_loadable_model_and_logs_lm_metrics(ctx: StageContext, pretrain_rec: PretrainRecord) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = Path(pretrain_rec.hf_model)
    assert (hf / "model.safetensors").exists() and (hf / "config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(str(hf))
    tok = AutoTokenizer.from_pretrained(str(hf))
    assert model.config.n_layer == 1 and len(tok) == model.config.vocab_size
    run = _run(ctx, pretrain_rec.run_id)
    for key in ("train/loss", "val/loss", "val/perplexity", "train/tokens_per_sec", "train/mfu", "carbon/emissions_kg"):
        assert key in run.data.metrics, key
    assert run.data.metrics["train/tokens_per_sec"] > 0 and 0 < run.data.metrics["train/mfu"] < 1
    # trainer.compile=auto (the default) on a run far below the threshold: eager, and both recorded.
    assert run.data.params["trainer.compiled"] == "false"
    assert run.data.params["trainer.compile_min_steps_used"] == str(DEFAULT_MIN_STEPS["cpu"])
    history = ctx.tracker.client.get_metric_history(pretrain_rec.run_id, "train/loss")
    assert 1 <= len(history) < ctx.cfg.pretrain.max_steps  # every N steps, not every step
    assert {"hf_model", "checkpoints", "config.yaml", "emissions.csv"} <= _artifacts(ctx, pretrain_rec.run_id)
    assert "hf_model/model.safetensors" in _artifacts(ctx, pretrain_rec.run_id, "hf_model")


def test_second_pretrain_is_a_cache_hit(ctx: StageContext, prep_rec: PrepRecord, pretrain_rec: PretrainRecord,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import modules.training.recipes

    monkeypatch.setattr(modules.training.recipes, "pretrain_language_model",
                        lambda *a, **k: pytest.fail("pretrain retrained despite identical inputs"))
    again = stages.pretrain(ctx, prep_rec)
    assert again.cache_hit is True and again.hf_model == pretrain_rec.hf_model
    run = _run(ctx, again.run_id)
    assert run.data.tags["transferlab.cache"] == "hit"
    assert run.data.metrics["carbon/avoided_kg"] == pytest.approx(
        _run(ctx, pretrain_rec.run_id).data.metrics["carbon/emissions_kg"])


def test_failed_pretrain_publishes_nothing_and_marks_the_run_failed(
        ctx: StageContext, prep_rec: PrepRecord, monkeypatch: pytest.MonkeyPatch) -> None:
    import modules.training.recipes

    def crash(prep_dir, out_dir, *args, **kwargs):
        (out_dir / "hf_model").mkdir()
        (out_dir / "hf_model" / "partial.bin").write_bytes(b"x")
        raise RuntimeError("simulated crash mid-training")

    monkeypatch.setattr(modules.training.recipes, "pretrain_language_model", crash)
    other = StageContext.create(replace(ctx.cfg, seed=12345))
    with pytest.raises(RuntimeError, match="simulated crash"):
        stages.pretrain(other, prep_rec)
    cache_root = ctx.home / "cache" / "pretrain"
    # Nothing published a later run could reuse; only the .partial-<fp> work dir is kept,
    # without a record, so running the same command again resumes (tests/test_resume.py).
    leftovers = [p.name for p in cache_root.iterdir() if not (p / "record.json").exists()]
    assert [name for name in leftovers if not name.startswith(".partial-")] == []
    assert all(not (cache_root / name / "record.json").exists() for name in leftovers)
    failed = ctx.tracker.client.search_runs([ctx.tracker.experiment_id], "attributes.status = 'FAILED'")
    assert any(r.data.tags.get("transferlab.stage") == "pretrain" for r in failed)


def test_a_worker_rank_reuses_prep_and_trains_in_rank_zeros_work_dir_logging_nothing(
        ctx: StageContext, prep_rec: PrepRecord, monkeypatch: pytest.MonkeyPatch) -> None:
    import modules.training.recipes
    from pipelines.flows import run_worker
    from pipelines.stages.pretrain import pretrain_fingerprint

    calls: list[tuple[Path, Path, dict[str, Any]]] = []
    monkeypatch.setattr(modules.training.recipes, "pretrain_language_model",
                        lambda prep_dir, out_dir, *args, **kwargs: calls.append((prep_dir, out_dir, kwargs)))
    cfg = replace(ctx.cfg, seed=777)  # a model not trained yet; the same prepared data
    runs_before = len(ctx.tracker.client.search_runs([ctx.tracker.experiment_id]))
    monkeypatch.setenv("RANK", "1")
    assert run_worker(cfg, "pretrain") == {"rank": 1, "until": "pretrain"}
    work_dir = ctx.home / "cache" / "pretrain" / f".partial-{pretrain_fingerprint(cfg, prep_rec.lm_fingerprint)}"
    assert calls == [(Path(prep_rec.path), work_dir, {"logger": False})]
    assert len(ctx.tracker.client.search_runs([ctx.tracker.experiment_id])) == runs_before  # rank 0 logs


def test_finetune_runs_both_inits_on_the_same_labeled_subset(ctx: StageContext,
                                                              finetune_recs: list[FinetuneRecord]) -> None:
    for rec in finetune_recs:
        run = _run(ctx, rec.run_id)
        assert run.data.tags["transferlab.stage"] == "finetune"
        assert run.data.tags["transferlab.init"] == rec.init
        assert run.data.tags["transferlab.task"] == "classification"
        for key in ("train/loss", "val/loss", "val/accuracy", "test/accuracy", "test/f1_macro", "carbon/emissions_kg"):
            assert key in run.data.metrics, (rec.init, key)
        assert run.data.metrics["throughput/train_examples_per_sec"] > 0  # training and test-pass speed
        assert run.data.metrics["throughput/test_examples_per_sec"] > 0
        assert run.data.metrics["data/train_examples"] == ctx.cfg.finetune.train_examples
        assert {"predictions.csv", "hf_model", "config.yaml", "emissions.csv"} <= _artifacts(ctx, rec.run_id)
    # Same architecture, different weights.
    from transformers import AutoModelForSequenceClassification

    a, b = (AutoModelForSequenceClassification.from_pretrained(f"{r.path}/hf_model") for r in finetune_recs)
    assert a.config.to_dict()["n_embd"] == b.config.to_dict()["n_embd"]
    assert a.num_parameters() == b.num_parameters()


def test_evaluate_report_matches_the_predictions(ctx: StageContext, prep_rec: PrepRecord,
                                                 pretrain_rec: PretrainRecord,
                                                 finetune_recs: list[FinetuneRecord]) -> None:
    rec = stages.evaluate(ctx, prep_rec, pretrain_rec, finetune_recs)
    metrics = _run(ctx, rec.run_id).data.metrics
    for ft in finetune_recs:
        with open(ft.predictions) as f:
            rows = list(csv.DictReader(f))
        accuracy = sum(r["label"] == r["prediction"] for r in rows) / len(rows)
        assert metrics[f"test/accuracy/{ft.init}"] == pytest.approx(accuracy)
        # The stage's own Lightning test loop agrees with the saved predictions.
        assert ft.metrics["test/accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert metrics["test/accuracy_gain"] == pytest.approx(
        metrics["test/accuracy/pretrained"] - metrics["test/accuracy/scratch"])
    assert metrics["val/perplexity"] > 1
    report = Path(rec.report).read_text()
    assert f"{metrics['test/accuracy/pretrained']:.4f}" in report
    assert {"report.md", "comparison.png", "confusion_matrix_pretrained.png", "confusion_matrix_scratch.png",
            "emissions.csv", "config.yaml"} <= _artifacts(ctx, rec.run_id)


def test_a_second_evaluate_reuses_the_perplexity_and_plots(ctx: StageContext, prep_rec: PrepRecord,
                                                           pretrain_rec: PretrainRecord,
                                                           finetune_recs: list[FinetuneRecord]) -> None:
    first = stages.evaluate(ctx, prep_rec, pretrain_rec, finetune_recs)
    second = stages.evaluate(ctx, prep_rec, pretrain_rec, finetune_recs)
    assert second.cache_hit and second.run_id != first.run_id
    tags = _run(ctx, second.run_id).data.tags
    assert tags["transferlab.cache"] == "hit"
    source = _run(ctx, tags["transferlab.cache_source_run"]).data.tags  # the evaluate that measured it
    assert source["transferlab.stage"] == "evaluate" and source["transferlab.cache"] == "miss"
    assert second.metrics == first.metrics and second.artifacts == first.artifacts
    for name in second.artifacts:  # the report and every plot it links to, in the new run's work dir and MLflow
        assert (Path(second.path) / name).is_file(), name
    assert set(second.artifacts) <= _artifacts(ctx, second.run_id)
    assert "comparison.png" in second.artifacts and Path(second.report).read_text().count("![") == len(
        second.artifacts) - 1
    # Another perplexity budget is another measurement.
    other = StageContext(replace(ctx.cfg, evaluate=replace(ctx.cfg.evaluate, perplexity_batches=1)), ctx.tracker,
                         ctx.parent_run_id)
    third = stages.evaluate(other, prep_rec, pretrain_rec, finetune_recs)
    assert not third.cache_hit and _run(ctx, third.run_id).data.tags["transferlab.cache"] == "miss"
    assert (Path(ctx.home) / "cache" / "evaluate").is_dir()


def test_evaluate_waits_for_another_measurement_before_its_run_opens(
        ctx: StageContext, prep_rec: PrepRecord, pretrain_rec: PretrainRecord,
        finetune_recs: list[FinetuneRecord]) -> None:
    """Another process measuring the same thing holds the claim: the stage waits outside its
    MLflow run (the wait is neither timed nor charged as carbon), then takes over the build
    when that process dies without publishing, and tags how long it waited."""
    import threading
    import time

    from pipelines.cache.store import StageCache
    from pipelines.stages.evaluate import STAGE, measurement_fingerprint, report_title

    batches = ctx.cfg.evaluate.perplexity_batches + 2  # a measurement no other test makes
    cfg = replace(ctx.cfg, evaluate=replace(ctx.cfg.evaluate, perplexity_batches=batches))
    other = StageContext(cfg, ctx.tracker, ctx.parent_run_id)
    fp = measurement_fingerprint(cfg, report_title(cfg), [prep_rec, pretrain_rec, *finetune_recs])
    runs_before = {r.info.run_id for r in ctx.tracker.client.search_runs([ctx.tracker.experiment_id])}
    done: list[Any] = []
    with StageCache(ctx.home, STAGE).claim(fp, 0) as claim:  # a builder that will fail
        assert not claim.done
        waiter = threading.Thread(target=lambda: done.append(stages.evaluate(other, prep_rec, pretrain_rec,
                                                                                 finetune_recs)))
        waiter.start()
        time.sleep(1.5)
        started = {r.info.run_id for r in ctx.tracker.client.search_runs([ctx.tracker.experiment_id])} - runs_before
        assert not done and not started  # waiting, with no run open
        released_ms = time.time() * 1000
    waiter.join(120)
    assert len(done) == 1 and not done[0].cache_hit
    run = _run(ctx, done[0].run_id)
    assert run.data.tags["transferlab.cache"] == "miss" and float(run.data.tags["transferlab.cache_waited_s"]) >= 1
    assert run.info.start_time >= released_ms - 50  # the run began when the wait ended


def test_each_prediction_is_its_own_rows(ctx: StageContext, finetune_recs: list[FinetuneRecord]) -> None:
    """The test pass runs longest-first; the saved prediction of every row is still what the
    saved model predicts for that row alone."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    checked: dict[str, int] = {}
    for rec in finetune_recs:
        model = AutoModelForSequenceClassification.from_pretrained(f"{rec.path}/hf_model").eval()
        tokenizer = AutoTokenizer.from_pretrained(f"{rec.path}/hf_model")
        with open(rec.predictions) as f:
            rows = list(csv.DictReader(f))
        lengths = [len(tokenizer(r["text"])["input_ids"]) for r in rows]
        assert lengths != sorted(lengths, reverse=True)  # row order is not the loader's order
        checked[rec.init] = 0
        for r in rows:
            enc = tokenizer(r["text"], truncation=True, max_length=ctx.cfg.finetune.max_length, return_tensors="pt")
            with torch.no_grad():
                logits = model(**enc).logits[0]  # (num_labels,)
            top = logits.topk(2).values
            if top[0] - top[1] > 1e-3:  # a near-tie may flip between a batch and a single row
                assert int(r["prediction"]) == int(logits.argmax()), (rec.init, r["index"])
                checked[rec.init] += 1
        assert checked[rec.init] >= 0.9 * len(rows), rec.init
    assert any(len({r["prediction"] for r in csv.DictReader(open(rec.predictions))}) > 1 for rec in finetune_recs)


# Cache entries' record.json as the code before typed stage records wrote them (tiny config).
RECORD_JSON = Path(__file__).parent / "data" / "record_json"


def _shape(value: Any) -> Any:
    """Keys and JSON types, not values: what a reader of record.json depends on."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    return type(value).__name__ if not isinstance(value, int | float) or isinstance(value, bool) else "number"


def test_record_json_keeps_its_format(prep_rec: PrepRecord, pretrain_rec: PretrainRecord,
                                      finetune_recs: list[FinetuneRecord]) -> None:
    for rec, name in ((prep_rec, "prep"), (pretrain_rec, "pretrain"), (finetune_recs[0], "finetune-pretrained")):
        written = json.loads((Path(rec.path) / "record.json").read_text())
        earlier = json.loads((RECORD_JSON / f"{name}.json").read_text())
        assert _shape(written) == _shape(earlier), name


def test_entries_written_by_the_earlier_code_are_reused(ctx: StageContext, prep_rec: PrepRecord,
                                                        pretrain_rec: PretrainRecord,
                                                        finetune_recs: list[FinetuneRecord]) -> None:
    def reuse_earlier(rec: Any, name: str, stage: Any) -> tuple[Any, dict[str, Any]]:
        path = Path(rec.path) / "record.json"
        ours = path.read_text()
        earlier = {**json.loads((RECORD_JSON / f"{name}.json").read_text()), "fingerprint": rec.fingerprint,
                   "run_id": rec.run_id}
        try:
            path.write_text(json.dumps(earlier, indent=2, sort_keys=True))
            reused = stage()
        finally:
            path.write_text(ours)
        assert reused.cache_hit is True and reused.source_run_id == rec.run_id and reused.path == rec.path, name
        return reused, earlier

    prep, earlier = reuse_earlier(prep_rec, "prep", lambda: stages.prep(ctx))
    stats = earlier["stats"]
    assert (prep.label_names, prep.has_labels, prep.labeled_rows) == (stats["label_names"], stats["has_labels"],
                                                                      stats["labeled_rows"])
    pre, earlier = reuse_earlier(pretrain_rec, "pretrain", lambda: stages.pretrain(ctx, prep_rec))
    assert pre.metrics == earlier["metrics"] and pre.hf_model == pretrain_rec.hf_model
    assert _run(ctx, pre.run_id).data.metrics["val/loss"] == earlier["metrics"]["val/loss"]
    ft, earlier = reuse_earlier(finetune_recs[0], "finetune-pretrained",
                                lambda: stages.finetune(ctx, prep_rec, pretrain_rec, "pretrained"))
    assert (ft.metrics, ft.train_examples, ft.requested_examples, ft.strategy, ft.label_names) == (
        earlier["metrics"], earlier["train_examples"], earlier["requested_examples"], earlier["strategy"],
        earlier["label_names"])
    assert ft.predictions == str(Path(finetune_recs[0].path) / earlier["predictions_file"])
    assert _run(ctx, ft.run_id).data.metrics["test/accuracy"] == earlier["metrics"]["test/accuracy"]
