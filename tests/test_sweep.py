"""The data_efficiency sweep: planning, side-by-side points, reuse, retries, and the report's
numbers checked against the MLflow runs it summarises."""

from __future__ import annotations

import re
import statistics
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_overrides

from pipelines.config.schema import SweepConfig
from pipelines.sweep import Point, plan


def test_plan_clamps_budgets_to_the_pool_and_runs_equal_ones_once(caplog: pytest.LogCaptureFixture) -> None:
    sweep = SweepConfig(budgets=[16, 64, 256, "all"], seeds=[0, 1])
    points = plan(sweep, ["pretrained", "scratch", "tfidf", "zero_shot"], pool=100)
    budgets = sorted({p.budget for p in points if p.init != "zero_shot"})
    assert budgets == [16, 64, 100]
    assert "budget 256 exceeds the 100 labeled training examples" in caplog.text
    assert "same as an earlier one" in caplog.text  # "all" == 100 after clamping
    assert len([p for p in points if p.init != "zero_shot"]) == 3 * 3 * 2
    # the classical baseline is a point per budget x seed, like a fine-tune
    assert sorted((p.budget, p.seed) for p in points if p.init == "tfidf") == [(b, s) for b in (16, 64, 100)
                                                                              for s in (0, 1)]
    assert [p for p in points if p.init == "zero_shot"] == [Point("zero_shot", 0, 0, 0)]
    assert next(p for p in points if p.budget == 100).requested == 256


def test_a_subset_smaller_than_the_class_count_is_refused_not_guessed() -> None:
    from datasets import ClassLabel, Dataset, Features, Value

    from modules.data.errors import DataError
    from modules.tasks import get_task

    pool = Dataset.from_dict({"text": [f"t{i}" for i in range(12)], "label": [i % 4 for i in range(12)]},
                             features=Features({"text": Value("string"), "label": ClassLabel(names=list("abcd"))}))
    task = get_task("classification")
    picked = task.subset(pool, 4, seed=0)
    assert sorted(pool.select(picked)["label"]) == [0, 1, 2, 3]  # stratified: one of each
    with pytest.raises(DataError, match=r"'finetune.train_examples': 3 .* all 4 classes"):
        task.subset(pool, 3, seed=0)


def _children(home: Path, parent: str) -> list[Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("transferlab")
    return client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent}'", max_results=200)


SWEEP = ["sweep.budgets=[8,500]", "sweep.seeds=[0,1]", "sweep.parallel=2"]


@pytest.fixture(scope="module")
def sweep_home(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> tuple[Path, dict[str, Any]]:
    from pipelines.sweep import data_efficiency

    home = tmp_path_factory.mktemp("sweep")
    return home, data_efficiency(overrides=tiny_overrides(home, *SWEEP))


def test_sweep_runs_every_point_side_by_side_and_clamps_the_big_budget(sweep_home: tuple[Path, dict[str, Any]]) -> None:
    home, summary = sweep_home
    assert summary["failed"] == [] and len(summary["points"]) == 12
    assert {(p["init"], p["budget"], p["seed"]) for p in summary["points"]} == {
        (i, b, s) for i in ("pretrained", "scratch", "tfidf") for b in (8, 120) for s in (0, 1)}
    children = _children(home, summary["parent_run_id"])
    tunes = [r for r in children if r.data.tags["transferlab.stage"] == "finetune"]
    assert len(tunes) == 12 and {r.data.tags["transferlab.stage"] for r in children} == {"prep", "pretrain",
                                                                                         "finetune"}
    clamped = [r for r in tunes if r.data.params["finetune.train_examples"] == "500"]
    assert len(clamped) == 6
    assert all(r.data.tags["transferlab.train_examples_clamped"] == "500->120" for r in clamped)
    assert all(r.data.metrics["data/train_examples"] == 120 for r in clamped)
    # Each trained point logs its MLflow model; no point registers one (finetune.register_as is for runs).
    assert all(r.data.tags.get("transferlab.mlflow_model", "").startswith("models:/m-") for r in tunes
               if r.data.tags["transferlab.init"] != "tfidf")
    from mlflow.tracking import MlflowClient

    registered = [m.name for m in MlflowClient(f"sqlite:///{home / 'mlflow.db'}").search_registered_models()]
    assert not [name for name in registered if name.endswith("-classification")], registered


def test_report_numbers_are_the_runs_numbers(sweep_home: tuple[Path, dict[str, Any]]) -> None:
    home, summary = sweep_home
    report = Path(summary["report"]).read_text()
    tunes = [r for r in _children(home, summary["parent_run_id"]) if r.data.tags["transferlab.stage"] == "finetune"]
    for init in ("pretrained", "scratch", "tfidf"):
        for budget in ("8", "120"):
            accs = [r.data.metrics["test/accuracy"] for r in tunes
                    if r.data.tags["transferlab.init"] == init and r.data.metrics["data/train_examples"] == int(budget)]
            assert len(accs) == 2
            cell = f"{statistics.mean(accs):.4f} ± {statistics.stdev(accs):.4f}"
            assert re.search(rf"\| {init} \| {budget}[^|]*\| {re.escape(cell)} \| 2/0 \|", report), (init, budget, cell)
    # The fine-tunes' carbon total is the sum of the fine-tune runs' own figures.
    total_g = sum(r.data.metrics["carbon/emissions_kg"] for r in tunes) * 1000
    assert f"| **fine-tunes total** |  | {total_g:.4g} |" in report
    assert (Path(summary["report"]).parent / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    # The floor and the classical break-even: one row per tfidf budget.
    assert re.search(r"\| \*majority class\* \| - \| 0\.\d{4} \| - \|", report)
    assert "**Classical baseline**" in report
    assert re.search(r"\| 8 \| [\d.]+ \| [\d.e+-]+ \| (8|120|never in this sweep) \|", report)


def test_second_sweep_reuses_every_point_and_reports_what_that_avoided(sweep_home: tuple[Path, dict[str, Any]]) -> None:
    from pipelines.sweep import data_efficiency

    home, first = sweep_home
    second = data_efficiency(overrides=tiny_overrides(home, *SWEEP))
    assert second["cache_hits"] == 12 and second["failed"] == []
    assert [p["metric"] for p in second["points"]] == [p["metric"] for p in first["points"]]
    built = _children(home, first["parent_run_id"])  # prep + pretrain + 12 points, all reused now
    avoided_g = sum(r.data.metrics["carbon/emissions_kg"] for r in built) * 1000
    report = Path(second["report"]).read_text()
    assert f"14 cache hits replaced work that cost {avoided_g:.4g} g CO2e" in report
    hits = [r for r in _children(home, second["parent_run_id"])]
    assert {r.data.tags.get("transferlab.cache") for r in hits} == {"hit"}


def test_a_failing_point_is_retried_then_reported_without_sinking_the_sweep(
        tmp_path: Path, prefect_harness: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from modules.data.errors import DataError
    from pipelines import stages
    from pipelines.sweep import data_efficiency

    real = stages.finetune
    attempts: dict[tuple[str, int], int] = {}

    def flaky(ctx, prep_record, pretrain_record, init):  # noqa: ANN001, ANN202
        key = (init, ctx.cfg.seed)
        attempts[key] = attempts.get(key, 0) + 1
        if key == ("scratch", 0) and attempts[key] == 1:
            raise RuntimeError("transient: out of memory")  # the retry succeeds
        if key == ("scratch", 1):
            raise RuntimeError("always broken")  # fails every attempt
        if key == ("pretrained", 1):
            raise DataError("bad input: never retried")
        return real(ctx, prep_record, pretrain_record, init)

    monkeypatch.setattr(stages, "finetune", flaky)
    summary = data_efficiency(overrides=tiny_overrides(tmp_path, "sweep.budgets=[8]", "sweep.seeds=[0,1]",
                                                       "sweep.parallel=1", "sweep.retries=1"))
    assert attempts == {("pretrained", 0): 1, ("pretrained", 1): 1, ("scratch", 0): 2, ("scratch", 1): 2,
                        ("tfidf", 0): 1, ("tfidf", 1): 1}
    assert sorted(summary["failed"]) == ["finetune[pretrained, n=8, seed=1]", "finetune[scratch, n=8, seed=1]"]
    ok = {(p["init"], p["seed"]) for p in summary["points"] if p["status"] == "ok"}
    assert ok == {("pretrained", 0), ("scratch", 0), ("tfidf", 0), ("tfidf", 1)}
    report = Path(summary["report"]).read_text()
    assert "always broken" in report and "never retried" in report
    assert "| pretrained | 8 | " in report  # the surviving seed is still summarised


@pytest.mark.slow
def test_default_sweep_shows_transfer_and_reruns_from_cache(tmp_path: Path, prefect_harness: None) -> None:
    """The issue's floor on the built-in default: 3 budgets x 3 inits (pretrained, scratch, tfidf)
    x 2 seeds end to end (bench/data_efficiency.py times it), pretrained ahead of scratch, a re-run
    all reused."""
    from pipelines.sweep import data_efficiency

    overrides = [f"paths.home={tmp_path}", "experiment=data_efficiency", "sweep.seeds=[0,1]"]
    first = data_efficiency(overrides=overrides)
    assert first["failed"] == [] and len(first["points"]) == 18
    mean = {(init, n): statistics.mean(p["metric"] for p in first["points"] if p["init"] == init and p["budget"] == n)
            for init in ("pretrained", "scratch") for n in (16, 64, 256)}
    assert mean[("pretrained", 256)] > mean[("scratch", 256)] + 0.3
    second = data_efficiency(overrides=overrides)
    assert second["cache_hits"] == 18
    assert "20 cache hits replaced work" in Path(second["report"]).read_text()  # 18 points + prep + pretrain
