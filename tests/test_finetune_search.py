"""finetune.search_trials: learning-rate selection on the validation split, per trained init,
with each trial an MLflow run nested under its fine-tune's run."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import tiny_overrides

from pipelines import stages
from pipelines.config.compose import compose
from pipelines.stages.common import StageContext
from pipelines.stages.records import FinetuneRecord

SEARCH = ["finetune.search_trials=2", "finetune.max_epochs=1"]


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> StageContext:
    return StageContext.create(compose(tiny_overrides(tmp_path_factory.mktemp("search"), *SEARCH)))


@pytest.fixture(scope="module")
def upstream(ctx: StageContext) -> tuple[Any, Any]:
    prep_rec = stages.prep(ctx)
    return prep_rec, stages.pretrain(ctx, prep_rec)


@pytest.fixture(scope="module")
def recs(ctx: StageContext, upstream: tuple[Any, Any]) -> list[FinetuneRecord]:
    return [stages.finetune(ctx, *upstream, init) for init in ("pretrained", "scratch")]


def _trials(ctx: StageContext, run_id: str) -> list[Any]:
    client = ctx.tracker.client
    runs = client.search_runs([ctx.tracker.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'")
    return sorted(runs, key=lambda r: r.data.tags["mlflow.runName"])


@pytest.mark.parametrize("i, init", [(0, "pretrained"), (1, "scratch")])
def test_each_init_keeps_the_trial_of_lowest_validation_loss(ctx: StageContext, recs: list[FinetuneRecord],
                                                             i: int, init: str) -> None:
    rec = recs[i]
    trials = _trials(ctx, rec.run_id)
    assert [t.data.tags["mlflow.runName"] for t in trials] == [f"finetune-{init}-trial-0", f"finetune-{init}-trial-1"]
    assert all(t.data.tags["transferlab.stage"] == "finetune_trial" and t.info.status == "FINISHED" for t in trials)
    assert all(t.data.tags["transferlab.init"] == init for t in trials)
    lrs = sorted(float(t.data.params["finetune.lr"]) for t in trials)
    assert lrs == pytest.approx([10 ** -4.25, 10 ** -2.75])  # the log grid over the default 1e-5..1e-2
    chosen = min(trials, key=lambda t: t.data.metrics["val/best_loss"])
    run = ctx.tracker.client.get_run(rec.run_id)
    assert run.data.metrics["finetune/selected_lr"] == pytest.approx(float(chosen.data.params["finetune.lr"]))
    assert run.data.metrics["finetune/search_trials"] == 2
    # The stage's result is the chosen trial's: its test metrics, its predictions, its weights.
    assert rec.metrics["test/accuracy"] == pytest.approx(chosen.data.metrics["test/accuracy"])
    assert run.data.metrics["test/accuracy"] == pytest.approx(chosen.data.metrics["test/accuracy"])
    assert "train/loss" in chosen.data.metrics  # Lightning logged the trial's curves into the trial's run
    entry = Path(rec.path)
    assert (entry / "hf_model" / "config.json").is_file() and Path(rec.predictions).is_file()
    assert not (entry / "trials").exists() and not (entry / "checkpoints").exists()
    search = json.loads((entry / "record.json").read_text())["lr_search"]
    assert search["selected_lr"] == pytest.approx(float(chosen.data.params["finetune.lr"]))
    assert {t["run_id"] for t in search["trials"]} == {t.info.run_id for t in trials}


def test_a_second_run_reuses_the_search_without_new_trials(ctx: StageContext, upstream: tuple[Any, Any],
                                                           recs: list[FinetuneRecord]) -> None:
    again = stages.finetune(ctx, *upstream, "scratch")
    assert again.cache_hit and again.fingerprint == recs[1].fingerprint
    assert _trials(ctx, again.run_id) == []
    run = ctx.tracker.client.get_run(again.run_id)
    first = ctx.tracker.client.get_run(recs[1].run_id)
    assert run.data.metrics["finetune/selected_lr"] == first.data.metrics["finetune/selected_lr"]


def _finetune_fp(overrides: list[str], home: Path) -> str:
    from pipelines.stages.finetune import finetune_fingerprint

    cfg = compose([f"paths.home={home}", *overrides])
    return finetune_fingerprint(cfg, SimpleNamespace(fingerprint="p"), {"pretrain": "x"}, "scratch")  # type: ignore[arg-type]


def test_search_off_leaves_the_fingerprint_as_before_and_on_changes_it(tmp_path: Path) -> None:
    base = _finetune_fp([], tmp_path)
    # Off: the range keys are not part of it (old cache entries stay valid; golden values in test_fingerprints).
    assert _finetune_fp(["finetune.search_trials=0", "finetune.search_lr_max=0.5"], tmp_path) == base
    on = _finetune_fp(["finetune.search_trials=3"], tmp_path)
    assert on != base and _finetune_fp(["finetune.search_trials=4"], tmp_path) != on
    assert _finetune_fp(["finetune.search_trials=3", "finetune.search_lr_max=0.5"], tmp_path) != on
    # On: the searched range replaces finetune.lr, so changing that rate reuses the search.
    assert _finetune_fp(["finetune.search_trials=3", "finetune.lr=0.02"], tmp_path) == on


def test_monitor_on_validation_accuracy_selects_the_trial_of_highest_accuracy(
        tmp_path: Path, ctx: StageContext, upstream: tuple[Any, Any]) -> None:
    """finetune.monitor=val/accuracy: the best epoch, early stopping and the trial are chosen by
    validation accuracy (higher wins), recorded under that name; a fresh cache entry."""
    cfg = compose(tiny_overrides(Path(ctx.cfg.paths.home), *SEARCH, "finetune.monitor=val/accuracy"))
    acc_ctx = StageContext.create(cfg)
    rec = stages.finetune(acc_ctx, *upstream, "scratch")
    assert not rec.cache_hit
    trials = _trials(acc_ctx, rec.run_id)
    assert len(trials) == 2 and all("val/best_accuracy" in t.data.metrics for t in trials)
    chosen = max(trials, key=lambda t: (t.data.metrics["val/best_accuracy"], -int(t.data.tags["transferlab.trial"])))
    run = acc_ctx.tracker.client.get_run(rec.run_id)
    assert run.data.metrics["finetune/selected_lr"] == pytest.approx(float(chosen.data.params["finetune.lr"]))
    search = json.loads((Path(rec.path) / "record.json").read_text())["lr_search"]
    assert search["monitor"] == "val/accuracy"
    assert sorted(t["accuracy"] for t in search["trials"]) == sorted(
        t.data.metrics["val/best_accuracy"] for t in trials)


def test_monitor_default_leaves_the_fingerprint_as_before(tmp_path: Path) -> None:
    base = _finetune_fp([], tmp_path)
    assert _finetune_fp(["finetune.monitor=val/loss"], tmp_path) == base
    assert _finetune_fp(["finetune.monitor=val/accuracy"], tmp_path) != base


@pytest.mark.parametrize("overrides, key", [
    (["finetune.monitor=val/acc"], "finetune.monitor"),
    (["finetune.task=seq2seq", "finetune.monitor=val/accuracy", "model=bart_tiny"], "finetune.monitor"),
    (["finetune.search_trials=-1"], "finetune.search_trials"),
    (["finetune.search_trials=two"], "finetune.search_trials"),
    (["finetune.search_lr_min=0"], "finetune.search_lr_min"),
    (["finetune.search_lr_max=-1"], "finetune.search_lr_max"),
    (["finetune.search_lr_min=1e-2", "finetune.search_lr_max=1e-3"], "finetune.search_lr_min"),
])
def test_bad_search_values_fail_in_one_line_naming_the_key(overrides: list[str], key: str,
                                                           capsys: pytest.CaptureFixture) -> None:
    from pipelines.cli import main

    assert main(["config", *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"'{key}'" in err, err


def test_a_sweep_searches_per_point_in_its_worker_processes(tmp_path: Path, prefect_harness: None) -> None:
    from mlflow.tracking import MlflowClient

    from pipelines.sweep import data_efficiency

    summary = data_efficiency(overrides=tiny_overrides(tmp_path, *SEARCH, "sweep.budgets=[8]", "sweep.seeds=[0]",
                                                       "sweep.parallel=2"))
    assert summary["failed"] == [] and len(summary["points"]) == 3  # pretrained, scratch, tfidf
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("transferlab")
    assert exp is not None

    def children(run_id: str) -> list[Any]:
        return client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'")

    points = [r for r in children(summary["parent_run_id"]) if r.data.tags["transferlab.stage"] == "finetune"]
    assert len(points) == 3
    tfidf = next(p for p in points if p.data.tags["transferlab.init"] == "tfidf")
    assert children(tfidf.info.run_id) == []  # no network, no learning rate to search
    for point in (p for p in points if p is not tfidf):
        trials = children(point.info.run_id)
        assert len(trials) == 2 and {t.data.tags["transferlab.stage"] for t in trials} == {"finetune_trial"}
        chosen = min(trials, key=lambda t: t.data.metrics["val/best_loss"])
        assert point.data.metrics["finetune/selected_lr"] == pytest.approx(float(chosen.data.params["finetune.lr"]))
