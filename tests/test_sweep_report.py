"""The data_efficiency sweep report: numbers from hand-made points, no training."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest

from modules.evaluation.learning_curve import learning_curve_png
from modules.evaluation.sweep_report import (
    NEVER_MATCHED,
    NEVER_REACHED,
    SAME_BUDGET_NOT_CHEAPER,
    StageCost,
    SweepPoint,
    break_even,
    carbon_rows,
    classical_break_even,
    emissions_avoided,
    init_order,
    render_sweep_report,
    summarize,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def pt(init: str, budget: int, seed: int, metric: float | None, kg: float | None = 0.001, **kw) -> SweepPoint:
    """An ok point whose run spent and produced ``kg`` (kWh = 3 x kg), unless told otherwise."""
    defaults = dict(status="ok" if metric is not None else "failed", emissions_kg=kg,
                    energy_kwh=None if kg is None else 3 * kg, duration_s=10.0,
                    produced_kg=kg, produced_kwh=None if kg is None else 3 * kg)
    defaults.update(kw)
    return SweepPoint(init=init, budget=budget, seed=seed, metric=metric, **defaults)


# Hand case. P = 10 g.
# same budget: n=16: scratch 4 g - pretrained 1 g = 3 g saved -> ceil(10/3) = 4 tasks;
#              n=64: scratch 1.5 g - pretrained 2 g < 0 -> None.
# same quality: pretrained@16 mean 0.62 -> scratch@16 (0.42) no, scratch@64 (0.64) yes:
#              1.5 g - 1 g = 0.5 g -> 20 tasks, 48 labels saved; pretrained@64 (0.82) never.
POINTS = [
    pt("pretrained", 16, 1, 0.60), pt("pretrained", 16, 2, 0.64), pt("pretrained", 16, 3, 0.62),
    pt("pretrained", 64, 1, 0.80, 0.002), pt("pretrained", 64, 2, 0.84, 0.002),
    pt("scratch", 16, 1, 0.40, 0.004), pt("scratch", 16, 2, 0.44, 0.004),
    pt("scratch", 64, 1, 0.62, 0.0015), pt("scratch", 64, 2, 0.66, 0.0015),
    pt("scratch", 64, 3, None, None, error="RuntimeError: CUDA out of memory"),
    pt("zero_shot", 0, 1, 0.30, 0.0002),
]
PRETRAIN = StageCost("pretrain", cache_hit=True, emissions_kg=0.0, energy_kwh=0.0, duration_s=0.5,
                     produced_kg=0.010, produced_kwh=0.030)
PREP = StageCost("prep", cache_hit=False, emissions_kg=0.0005, energy_kwh=0.0015, duration_s=3.0,
                 produced_kg=0.0005, produced_kwh=0.0015)


def test_summarize_mean_and_sample_std_per_init_and_budget():
    rows = {(r["init"], r["budget"]): r for r in summarize(POINTS)}
    r = rows[("pretrained", 16)]
    assert r["mean"] == pytest.approx(statistics.mean([0.60, 0.64, 0.62]))
    assert r["std"] == pytest.approx(statistics.stdev([0.60, 0.64, 0.62]))
    assert (r["n_ok"], r["n_failed"], r["seeds"]) == (3, 0, [1, 2, 3])
    r = rows[("scratch", 64)]  # the failed seed counts as failed, not as a value
    assert (r["n_ok"], r["n_failed"], r["failed_seeds"]) == (2, 1, [3])
    assert r["mean"] == pytest.approx(0.64) and r["std"] == pytest.approx(statistics.stdev([0.62, 0.66]))
    assert rows[("zero_shot", 0)]["std"] == 0.0  # one seed
    only_failed = summarize([pt("scratch", 8, 1, None)])
    assert only_failed[0]["mean"] is None and only_failed[0]["std"] is None
    assert [(r["init"], r["budget"]) for r in summarize(POINTS)] == [
        ("pretrained", 16), ("pretrained", 64), ("scratch", 16), ("scratch", 64), ("zero_shot", 0)]


def test_break_even_same_budget():
    be = break_even(PRETRAIN, POINTS)
    assert be["pretrain_kg"] == 0.010  # the export's cost although this sweep hit the cache
    by_b = {r["budget"]: r for r in be["same_budget"]}
    assert by_b[16]["saving_kg"] == pytest.approx(0.003)
    assert by_b[16]["tasks"] == math.ceil(0.010 / 0.003) == 4
    assert by_b[64]["tasks"] is None and by_b[64]["reason"] == SAME_BUDGET_NOT_CHEAPER


def test_break_even_same_quality_picks_smallest_scratch_budget_or_never():
    rows = {r["pretrained_budget"]: r for r in break_even(PRETRAIN, POINTS)["same_quality"]}
    r = rows[16]
    assert (r["scratch_budget"], r["labels_saved"]) == (64, 48)
    assert r["saving_kg"] == pytest.approx(0.0005) and r["tasks"] == 20
    assert rows[64]["scratch_budget"] is None and rows[64]["tasks"] is None
    assert rows[64]["reason"] == NEVER_REACHED


def test_break_even_exact_division_and_missing_cost():
    pts = [pt("pretrained", 8, 1, 0.5, 0.0015), pt("scratch", 8, 1, 0.4, 0.007)]
    assert 0.0165 / (0.007 - 0.0015) > 3  # float noise: 3.0000000000000004
    exact = break_even(StageCost("pretrain", False, 0.0165, None, None, 0.0165, None), pts)
    assert exact["same_budget"][0]["tasks"] == 3
    unknown = break_even(StageCost("pretrain", False, None, None, None, None, None), pts)
    assert unknown["same_budget"][0]["tasks"] is None and "missing" in unknown["same_budget"][0]["reason"]


def test_emissions_avoided_sums_only_cache_hits():
    pts = [pt("pretrained", 8, 1, 0.5, 0.002, cache_hit=True),
           pt("pretrained", 8, 2, 0.5, 0.004),  # computed fresh: not avoided
           pt("scratch", 8, 1, 0.5, None, cache_hit=True)]  # hit with unknown cost
    av = emissions_avoided([PRETRAIN, PREP], pts)
    assert av["kg"] == pytest.approx(0.010 + 0.002)
    assert av["kwh"] == pytest.approx(0.030 + 0.006)
    assert (av["hits"], av["missing"]) == (3, 1)


def test_carbon_totals_are_sums_or_missing():
    rows = {r["name"]: r for r in carbon_rows([PREP, PRETRAIN], POINTS)}
    assert "finetune[pretrained, n=64, seed=1]" in rows and "zero_shot[seed=1]" in rows
    ft = [p for p in POINTS if p.init != "zero_shot"]
    # the failed point's run figures are None -> this-run totals missing; it built nothing, so
    # the building-the-output totals are the sums over the ok points
    assert rows["fine-tunes total"]["emissions_kg"] is None
    assert rows["fine-tunes total"]["produced_kg"] == pytest.approx(
        sum(p.produced_kg for p in ft if p.metric is not None))
    assert rows["sweep total"]["produced_kg"] == pytest.approx(
        0.0005 + 0.010 + sum(p.produced_kg for p in POINTS if p.metric is not None))
    ok_only = [p for p in POINTS if p.metric is not None]
    rows = {r["name"]: r for r in carbon_rows([PREP, PRETRAIN], ok_only)}
    assert rows["sweep total"]["emissions_kg"] == pytest.approx(0.0005 + 0.0 + sum(p.emissions_kg for p in ok_only))
    assert rows["sweep total"]["duration_s"] == pytest.approx(3.5 + 10.0 * len(ok_only))
    no_kwh = StageCost("prep", False, 0.001, None, 1.0, 0.001, None)
    rows = {r["name"]: r for r in carbon_rows([no_kwh], ok_only)}
    assert rows["sweep total"]["energy_kwh"] is None and rows["sweep total"]["emissions_kg"] is not None


# Classical hand case (P = 10 g). tfidf@16 mean 0.63 -> pretrained@16 (0.62) no, @64 (0.82) yes: 2 g per
# fine-tune, 12 g with pretraining; tfidf@64 mean 0.90 -> never; tfidf costs 0.05 g.
TFIDF_POINTS = [pt("tfidf", 16, 1, 0.62, 0.00005), pt("tfidf", 16, 2, 0.64, 0.00005),
                pt("tfidf", 64, 1, 0.90, 0.00005), pt("tfidf", 64, 2, None, None, error="boom")]


def test_classical_break_even_is_the_smallest_pretrained_budget_reaching_tfidf_or_never():
    rows = classical_break_even(PRETRAIN, POINTS + TFIDF_POINTS)
    assert [r["tfidf_budget"] for r in rows] == [16, 64]
    matched, never = rows
    assert matched["tfidf_metric"] == pytest.approx(0.63) and matched["pretrained_budget"] == 64
    assert matched["pretrained_metric"] == pytest.approx(0.82)
    assert matched["pretrained_kg"] == pytest.approx(0.002)
    assert matched["pretrained_total_kg"] == pytest.approx(0.012)  # + the one-off pretraining
    assert matched["tfidf_kg"] == pytest.approx(0.00005) and matched["reason"] is None
    assert never["tfidf_metric"] == pytest.approx(0.90)  # the failed seed is left out
    assert never["pretrained_budget"] is None and never["reason"] == NEVER_MATCHED
    # equal counts as matched; an unknown pretraining cost leaves the total unknown, not the fine-tune's
    unknown = StageCost("pretrain", False, None, None, None, None, None)
    tie = classical_break_even(unknown, [pt("pretrained", 8, 1, 0.5), pt("tfidf", 8, 1, 0.5)])
    assert tie[0]["pretrained_budget"] == 8 and tie[0]["pretrained_kg"] == pytest.approx(0.001)
    assert tie[0]["pretrained_total_kg"] is None
    assert classical_break_even(PRETRAIN, POINTS) == []  # no tfidf points: nothing to compare


def test_markdown_shows_tfidf_rows_the_classical_break_even_and_the_majority_floor():
    assert init_order(TFIDF_POINTS + POINTS) == ["pretrained", "scratch", "tfidf", "zero_shot"]
    md = render_sweep_report("t", "test accuracy", POINTS + TFIDF_POINTS, [PREP, PRETRAIN], [], majority=0.25)
    assert "| tfidf | 16 | 0.6300 ± 0.0141 | 2/0 |" in md
    assert "| *majority class* | - | 0.2500 | - |" in md
    assert "**Classical baseline**" in md
    assert "| 16 | 0.6300 | 0.05 | 64 | 0.8200 | 2 | 12 |" in md
    assert f"| 64 | 0.9000 | 0.05 | {NEVER_MATCHED} | - | - | - |" in md
    assert ("To match `tfidf` with 16 labeled examples (0.05 g CO2e), the pretrained model needs 64 "
            "(2 g per fine-tune, after 10 g of pretraining paid once).") in md
    md = render_sweep_report("t", "test accuracy", POINTS, [PREP, PRETRAIN], [])
    assert "Classical baseline" not in md and "majority class" not in md


@pytest.mark.parametrize("case", ["full", "single_budget", "all_failed_init", "nothing_ok", "zero_shot_only"])
def test_learning_curve_png_is_written(tmp_path: Path, case: str):
    points = {
        "full": POINTS + TFIDF_POINTS + [pt("checkpoint:all-MiniLM-L6-v2", 16, 1, 0.5)],
        "single_budget": [pt("pretrained", 32, 1, 0.7), pt("scratch", 32, 1, 0.5), pt("zero_shot", 0, 1, 0.3)],
        "all_failed_init": [pt("pretrained", 16, 1, 0.7), pt("pretrained", 64, 1, 0.8),
                            pt("scratch", 16, 1, None), pt("scratch", 64, 1, None)],
        "nothing_ok": [pt("scratch", 16, 1, None)],
        "zero_shot_only": [pt("zero_shot", 0, 1, 0.3)],
    }[case]
    out = learning_curve_png(points, "test accuracy", f"case {case}", tmp_path / "curve.png", chance=0.25)
    data = out.read_bytes()
    assert out == tmp_path / "curve.png" and len(data) > 1000 and data.startswith(PNG_MAGIC)


def test_markdown_shows_the_computed_numbers():
    points = POINTS + [pt("pretrained", 100, 1, 0.9, requested_budget=500)]
    md = render_sweep_report("Data efficiency", "test accuracy", points, [PREP, PRETRAIN],
                             ["learning_curve.png"], notes=["a note"])
    for section in ("## Learning curve", "## Metric per point", "## Failed points", "## Carbon",
                    "## Break-even", "## Emissions avoided by reuse"):
        assert section in md
    assert "![learning_curve.png](learning_curve.png)" in md
    r = next(r for r in summarize(POINTS) if (r["init"], r["budget"]) == ("pretrained", 16))
    assert f"| pretrained | 16 | {r['mean']:.4f} ± {r['std']:.4f} | 3/0 |" in md
    assert "| scratch | 64 | 0.6400 ± 0.0283 | 2/1 |" in md
    assert "100 (asked 500; clamped to the labeled pool)" in md
    assert "| scratch | 64 | 3 | RuntimeError: CUDA out of memory |" in md
    # carbon in grams / Wh; missing stays "missing"
    assert "| finetune[scratch, n=16, seed=1] | miss | 4 | 12 | 10.0 | 4 | 12 |" in md
    assert "| finetune[scratch, n=64, seed=3] (failed) | miss | missing | missing |" in md
    assert "| **fine-tunes total** |  | missing |" in md
    # break-even, both views, and the plain sentence
    assert "| 16 | 1 | 4 | 3 | 4 |" in md
    assert f"| 64 | 2 | 1.5 | -0.5 | {SAME_BUDGET_NOT_CHEAPER} |" in md
    assert ("Pretraining cost 10 g CO2e once; each downstream task fine-tuned from it instead of trained "
            "from scratch at 16 labeled examples saves 3 g, so it pays back after 4 tasks.") in md
    assert "| 16 | 0.6200 | 64 | 0.6400 | 48 | 0.5 | 20 |" in md
    assert ("At equal quality, pretrained with 16 labeled examples matches scratch with 64 (48 labels "
            "saved); each such task saves 0.5 g, so pretraining pays back after 20 tasks.") in md
    assert f"| 64 | 0.8200 | never | - | - | - | {NEVER_REACHED} |" in md
    assert "1 cache hit replaced work that cost 10 g CO2e / 30 Wh when it ran." in md
    assert "a note" in md


def test_markdown_tolerates_no_pretrain_and_no_hits():
    md = render_sweep_report("t", "chrF", [pt("scratch", 8, 1, None)], [], [])
    assert "no break-even" in md and "No cache hits" in md and "| scratch | 8 | - | 0/1 |" in md
    hits = [pt("pretrained", 8, s, 0.5, 0.002, cache_hit=True) for s in (1, 2)] + [
        pt("scratch", 8, 1, 0.4, None, cache_hit=True)]
    md = render_sweep_report("t", "chrF", hits, [], [])
    assert ("3 cache hits replaced work that cost 4 g CO2e / 12 Wh when it ran. 1 of them has no "
            "recorded cost, so this is a lower bound.") in md
