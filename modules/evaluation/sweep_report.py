"""Report building blocks for the ``data_efficiency`` sweep (pretrain once, fine-tune over label
budgets x inits x seeds).

Pure functions over hand-made records: no MLflow, no Prefect, so the numbers can be tested
without training anything. The sweep flow collects one :class:`SweepPoint` per fine-tune (or
zero-shot evaluation) and one :class:`StageCost` per shared stage, then calls these.

Carbon conventions (same as ``report.py``): a figure codecarbon did not produce is ``None`` and
reads "missing", never 0; a total with any missing part is missing too. "This run" is what the
sweep itself spent; "building the output" (``produced_*``) is what producing the artefact cost,
which on a cache hit is the source run's figure.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from modules.models.choices import TFIDF

ZERO_SHOT = "zero_shot"
PRETRAINED = "pretrained"
SCRATCH = "scratch"

SAME_BUDGET_NOT_CHEAPER = ("fine-tuning from the pretrained model does not cost less than training from "
                           "scratch at this budget; pretraining pays in quality, not CO2")
SAME_QUALITY_NOT_CHEAPER = ("scratch at the matching budget does not cost more than fine-tuning from the "
                            "pretrained model; pretraining pays in labels, not CO2")
NEVER_REACHED = "scratch never reached this quality within the sweep's budgets"
PRETRAIN_COST_MISSING = "pretraining's cost is missing"
FINETUNE_COST_MISSING = "fine-tune carbon figures are missing"
NEVER_MATCHED = "never in this sweep"


@dataclass
class SweepPoint:
    """One fine-tune (or zero-shot evaluation) of the sweep."""

    init: str            # "pretrained" | "scratch" | "tfidf" | "zero_shot" | "checkpoint:<label>"
    budget: int          # labeled examples actually used (after clamping); 0 for zero_shot
    seed: int
    status: str          # "ok" | "failed"
    metric: float | None  # the task's headline test metric; None if failed
    emissions_kg: float | None  # what THIS run spent; None = missing
    energy_kwh: float | None
    duration_s: float | None
    cache_hit: bool = False
    produced_kg: float | None = None   # what building the output cost (source run's on a hit)
    produced_kwh: float | None = None
    run_id: str | None = None
    error: str | None = None     # one line, for failed points
    requested_budget: int | None = None  # what the user asked for, when it was clamped

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.metric is not None


@dataclass
class StageCost:
    """A shared stage of the sweep (prep, pretrain)."""

    name: str
    cache_hit: bool
    emissions_kg: float | None
    energy_kwh: float | None
    duration_s: float | None
    produced_kg: float | None
    produced_kwh: float | None


# ---------------------------------------------------------------------------------------------
# numbers


def init_order(points: Iterable[SweepPoint]) -> list[str]:
    """Inits in a stable reading order: pretrained, scratch, tfidf, checkpoints (as first seen), zero_shot."""
    seen: list[str] = []
    for p in points:
        if p.init not in seen:
            seen.append(p.init)
    rank = {PRETRAINED: 0, SCRATCH: 1, TFIDF: 2, ZERO_SHOT: 4}
    return sorted(seen, key=lambda i: (rank.get(i, 3), seen.index(i)))


def _mean_or_none(values: Sequence[float]) -> float | None:
    return statistics.mean(values) if values else None


def summarize(points: Sequence[SweepPoint]) -> list[dict[str, Any]]:
    """One row per (init, budget), ordered by init then budget.

    Keys: init, budget, n_ok, n_failed, mean, std (sample std, ddof=1; 0.0 for one ok seed;
    None for none), seeds (sorted ok seeds), failed_seeds, requested (sorted requested budgets
    that were clamped to this budget; empty when none was)."""
    order = init_order(points)
    groups: dict[tuple[str, int], list[SweepPoint]] = {}
    for p in points:
        groups.setdefault((p.init, p.budget), []).append(p)
    rows = []
    for init, budget in sorted(groups, key=lambda k: (order.index(k[0]), k[1])):
        group = groups[(init, budget)]
        ok = [p for p in group if p.ok]
        values = [float(p.metric) for p in ok]  # type: ignore[arg-type]
        if not values:
            mean, std = None, None
        elif len(values) == 1:
            mean, std = values[0], 0.0
        else:
            mean, std = statistics.mean(values), statistics.stdev(values)
        rows.append({
            "init": init, "budget": budget, "n_ok": len(ok), "n_failed": len(group) - len(ok),
            "mean": mean, "std": std, "seeds": sorted(p.seed for p in ok),
            "failed_seeds": sorted(p.seed for p in group if not p.ok),
            "requested": sorted({p.requested_budget for p in group
                                 if p.requested_budget is not None and p.requested_budget != budget}),
        })
    return rows


def _tasks(pretrain_kg: float | None, saving_kg: float | None, not_cheaper: str) -> tuple[int | None, str | None]:
    """ceil(P / d), or None with the reason. P/d is rounded to 9 places first so that float
    noise (3.0000000000000004) does not add a whole task."""
    if saving_kg is None:
        return None, FINETUNE_COST_MISSING
    if saving_kg <= 0:
        return None, not_cheaper
    if pretrain_kg is None:
        return None, PRETRAIN_COST_MISSING
    return math.ceil(round(pretrain_kg / saving_kg, 9)), None


def _per_budget(points: Sequence[SweepPoint], init: str) -> dict[int, dict[str, float | None]]:
    """budget -> {metric, cost} means over the init's ok points; cost averages the known
    produced_kg figures (each seed is one estimate of a task's cost), None if none is known."""
    out: dict[int, dict[str, float | None]] = {}
    for b in sorted({p.budget for p in points if p.init == init and p.ok}):
        ok = [p for p in points if p.init == init and p.budget == b and p.ok]
        out[b] = {
            "metric": statistics.mean(float(p.metric) for p in ok),  # type: ignore[arg-type]
            "cost": _mean_or_none([p.produced_kg for p in ok if p.produced_kg is not None]),
        }
    return out


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def break_even(pretrain: StageCost, points: Sequence[SweepPoint]) -> dict[str, Any]:
    """After how many downstream tasks does pretraining's one-off CO2 pay for itself?

    P = ``pretrain.produced_kg``: what building the export cost, even when this sweep reused it
    (the question is about the model, not about this sweep's bill). Two views:

    - ``same_budget``: per budget with ok points of both inits, d = mean scratch cost - mean
      pretrained cost (produced_kg per task); tasks = ceil(P/d) when d > 0.
    - ``same_quality``: per pretrained budget b_p, the smallest scratch budget b_s whose mean
      metric >= the pretrained mean at b_p (all headline metrics are higher-is-better);
      d = scratch cost at b_s - pretrained cost at b_p; ``labels_saved`` = b_s - b_p.

    Rows whose answer is None carry a one-line ``reason``.
    """
    pre, scr = _per_budget(points, PRETRAINED), _per_budget(points, SCRATCH)
    P = pretrain.produced_kg
    same_budget = []
    for b in sorted(set(pre) & set(scr)):
        d = _diff(scr[b]["cost"], pre[b]["cost"])
        tasks, reason = _tasks(P, d, SAME_BUDGET_NOT_CHEAPER)
        same_budget.append({"budget": b, "pretrained_kg": pre[b]["cost"], "scratch_kg": scr[b]["cost"],
                            "saving_kg": d, "tasks": tasks, "reason": reason})
    same_quality = []
    for bp in sorted(pre):
        target = pre[bp]["metric"]
        bs = next((b for b in sorted(scr) if scr[b]["metric"] >= target), None)  # type: ignore[operator]
        row: dict[str, Any] = {"pretrained_budget": bp, "pretrained_metric": target,
                               "pretrained_kg": pre[bp]["cost"], "scratch_budget": bs,
                               "scratch_metric": None, "scratch_kg": None, "labels_saved": None,
                               "saving_kg": None, "tasks": None, "reason": NEVER_REACHED}
        if bs is not None:
            d = _diff(scr[bs]["cost"], pre[bp]["cost"])
            tasks, reason = _tasks(P, d, SAME_QUALITY_NOT_CHEAPER)
            row.update(scratch_metric=scr[bs]["metric"], scratch_kg=scr[bs]["cost"],
                       labels_saved=bs - bp, saving_kg=d, tasks=tasks, reason=reason)
        same_quality.append(row)
    return {"pretrain_kg": P, "pretrain_kwh": pretrain.produced_kwh,
            "same_budget": same_budget, "same_quality": same_quality}


def classical_break_even(pretrain: StageCost, points: Sequence[SweepPoint]) -> list[dict[str, Any]]:
    """How many labels the pretrained model needs to match the classical baseline, and the CO2 of each.

    Per ``tfidf`` budget b_t (mean over its ok seeds): the smallest pretrained budget b_p whose
    mean metric >= the tfidf mean (``pretrained_budget`` None: never in this sweep), with the
    pretrained fine-tune's cost at b_p (produced_kg, mean over seeds), that cost plus the one-off
    pretraining (``pretrained_total_kg``: what a user without the export would pay for that
    quality; None when either part is missing) and the tfidf cost at b_t."""
    pre, tfidf = _per_budget(points, PRETRAINED), _per_budget(points, TFIDF)
    rows = []
    for bt in sorted(tfidf):
        target = tfidf[bt]["metric"]
        bp = next((b for b in sorted(pre) if pre[b]["metric"] >= target), None)  # type: ignore[operator]
        row: dict[str, Any] = {"tfidf_budget": bt, "tfidf_metric": target, "tfidf_kg": tfidf[bt]["cost"],
                               "pretrained_budget": bp, "pretrained_metric": None, "pretrained_kg": None,
                               "pretrained_total_kg": None, "reason": NEVER_MATCHED}
        if bp is not None:
            cost = pre[bp]["cost"]
            total = None if cost is None or pretrain.produced_kg is None else cost + pretrain.produced_kg
            row.update(pretrained_metric=pre[bp]["metric"], pretrained_kg=cost, pretrained_total_kg=total,
                       reason=None)
        rows.append(row)
    return rows


def emissions_avoided(stages: Sequence[StageCost], points: Sequence[SweepPoint]) -> dict[str, Any]:
    """What the cache hits (stages and points) would have cost to recompute: the sum of their
    known produced_* figures. ``missing`` counts hits with an unknown kg or kWh figure, i.e. the
    sums are then a lower bound."""
    runs: list[StageCost | SweepPoint] = [*stages, *points]
    hits = [x for x in runs if x.cache_hit]
    return {
        "kg": sum(x.produced_kg for x in hits if x.produced_kg is not None),
        "kwh": sum(x.produced_kwh for x in hits if x.produced_kwh is not None),
        "hits": len(hits),
        "missing": sum(1 for x in hits if x.produced_kg is None or x.produced_kwh is None),
    }


def point_name(p: SweepPoint) -> str:
    """``finetune[pretrained, n=64, seed=1]``; zero-shot trains nothing: ``zero_shot[seed=1]``."""
    if p.init == ZERO_SHOT:
        return f"zero_shot[seed={p.seed}]"
    return f"finetune[{p.init}, n={p.budget}, seed={p.seed}]"


def _total(values: Iterable[float | None]) -> float | None:
    """Sum, or None when any part is missing (a partial sum would read as the whole)."""
    vals = list(values)
    return None if any(v is None for v in vals) else float(sum(vals))  # type: ignore[arg-type]


_COST_KEYS = ("emissions_kg", "energy_kwh", "duration_s", "produced_kg", "produced_kwh")


def carbon_rows(stages: Sequence[StageCost], points: Sequence[SweepPoint]) -> list[dict[str, Any]]:
    """Rows with name, kind ("stage" | "point" | "total"), cache_hit, status and the five cost
    keys of :class:`StageCost`; then "fine-tunes total" (all points except zero-shot) and
    "sweep total" (stages + every point).

    This-run totals include failed points (they spent energy). Building-the-output totals skip
    failed points (they built nothing), so a crashed run does not make that total missing."""
    rows: list[dict[str, Any]] = []
    for s in stages:
        rows.append({"name": s.name, "kind": "stage", "cache_hit": s.cache_hit, "status": "ok",
                     **{k: getattr(s, k) for k in _COST_KEYS}})
    order = init_order(points)
    ordered = sorted(points, key=lambda p: (order.index(p.init), p.budget, p.seed))
    for p in ordered:
        rows.append({"name": point_name(p), "kind": "point", "cache_hit": p.cache_hit,
                     "status": p.status, **{k: getattr(p, k) for k in _COST_KEYS}})

    def total(name: str, items: list[Any]) -> dict[str, Any]:
        built = [x for x in items if not isinstance(x, SweepPoint) or x.ok]
        return {"name": name, "kind": "total", "cache_hit": None, "status": None,
                "emissions_kg": _total(x.emissions_kg for x in items),
                "energy_kwh": _total(x.energy_kwh for x in items),
                "duration_s": _total(x.duration_s for x in items),
                "produced_kg": _total(x.produced_kg for x in built),
                "produced_kwh": _total(x.produced_kwh for x in built)}

    rows.append(total("fine-tunes total", [p for p in ordered if p.init != ZERO_SHOT]))
    rows.append(total("sweep total", [*stages, *ordered]))
    return rows


# ---------------------------------------------------------------------------------------------
# markdown


def _milli(value: float | None) -> str:
    """kg -> g, kWh -> Wh; a figure codecarbon did not produce reads "missing", never 0."""
    return "missing" if value is None else f"{value * 1000:.4g}"


def _s(sec: float | None) -> str:
    return "missing" if sec is None else f"{sec:.1f}"


def fmt_metric(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _budget_cell(row: dict[str, Any]) -> str:
    if row["init"] == ZERO_SHOT:
        return "0 (zero-shot)"
    if row["requested"]:
        asked = ", ".join(str(r) for r in row["requested"])
        return f"{row['budget']} (asked {asked}; clamped to the labeled pool)"
    return str(row["budget"])


def _payback_sentence(pretrain_kg: float, saving_kg: float, tasks: int, where: str) -> str:
    return (f"Pretraining cost {_milli(pretrain_kg)} g CO2e once; each downstream task fine-tuned "
            f"from it instead of trained from scratch {where} saves {_milli(saving_kg)} g, "
            f"so it pays back after {tasks} tasks.")


def _break_even_lines(be: dict[str, Any]) -> list[str]:
    lines = ["## Break-even", ""]
    if not be["same_budget"] and not be["same_quality"]:
        return lines + ["No budget has successful points of both `pretrained` and `scratch`, so there "
                        "is nothing to compare.", ""]
    P = be["pretrain_kg"]
    lines.append(f"Pretraining's cost, paid once however often its export is reused: "
                 f"**{_milli(P)} g CO2e** ({_milli(be['pretrain_kwh'])} Wh).")
    lines.append("")

    lines += ["**Same labeled budget** (cost of one fine-tune, building the output):", "",
              "| labeled examples | pretrained g CO2e | scratch g CO2e | saved per task g | tasks to break even |",
              "|---:|---:|---:|---:|---|"]
    for r in be["same_budget"]:
        lines.append(f"| {r['budget']} | {_milli(r['pretrained_kg'])} | {_milli(r['scratch_kg'])} | "
                     f"{_milli(r['saving_kg'])} | {r['tasks'] if r['tasks'] is not None else r['reason']} |")
    paying = [r for r in be["same_budget"] if r["tasks"] is not None]
    if paying:
        r = paying[-1]
        lines += ["", _payback_sentence(P, r["saving_kg"], r["tasks"], f"at {r['budget']} labeled examples")]
    elif be["same_budget"]:
        lines += ["", f"At no shared budget does it pay back in CO2: {be['same_budget'][-1]['reason']}."]

    lines += ["", "**Same quality** (smallest scratch budget whose mean metric reaches the pretrained mean):", "",
              "| pretrained: labeled examples | metric | scratch: labeled examples | metric | labels saved | "
              "saved per task g | tasks to break even |",
              "|---:|---:|---:|---:|---:|---:|---|"]
    for r in be["same_quality"]:
        bs = "never" if r["scratch_budget"] is None else str(r["scratch_budget"])
        saved = "-" if r["labels_saved"] is None else str(r["labels_saved"])
        lines.append(f"| {r['pretrained_budget']} | {fmt_metric(r['pretrained_metric'])} | {bs} | "
                     f"{fmt_metric(r['scratch_metric'])} | {saved} | "
                     f"{'-' if r['scratch_budget'] is None else _milli(r['saving_kg'])} | "
                     f"{r['tasks'] if r['tasks'] is not None else r['reason']} |")
    paying = [r for r in be["same_quality"] if r["tasks"] is not None]
    if paying:
        r = paying[0]
        lines += ["", f"At equal quality, pretrained with {r['pretrained_budget']} labeled examples "
                      f"matches scratch with {r['scratch_budget']} ({r['labels_saved']} labels saved); "
                      f"each such task saves {_milli(r['saving_kg'])} g, so pretraining pays back "
                      f"after {r['tasks']} tasks."]
    return lines + [""]


def _classical_lines(rows: list[dict[str, Any]], pretrain_kg: float | None) -> list[str]:
    lines = ["**Classical baseline** (smallest pretrained budget whose mean metric reaches the `tfidf` mean; "
             "CO2 to get there: the pretrained fine-tune plus the one-off pretraining, against `tfidf`'s own):", "",
             "| tfidf: labeled examples | metric | g CO2e | pretrained: labeled examples | metric | "
             "fine-tune g | + pretraining g |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        never = r["pretrained_budget"] is None
        lines.append(f"| {r['tfidf_budget']} | {fmt_metric(r['tfidf_metric'])} | {_milli(r['tfidf_kg'])} | "
                     f"{r['reason'] if never else r['pretrained_budget']} | {fmt_metric(r['pretrained_metric'])} | "
                     f"{'-' if never else _milli(r['pretrained_kg'])} | "
                     f"{'-' if never else _milli(r['pretrained_total_kg'])} |")
    matched = [r for r in rows if r["pretrained_budget"] is not None]
    if not matched:
        lines += ["", "The pretrained model never reached the classical baseline's quality in this sweep."]
    else:
        r = matched[-1]
        lines += ["", f"To match `tfidf` with {r['tfidf_budget']} labeled examples "
                      f"({_milli(r['tfidf_kg'])} g CO2e), the pretrained model needs {r['pretrained_budget']} "
                      f"({_milli(r['pretrained_kg'])} g per fine-tune, after {_milli(pretrain_kg)} g of pretraining "
                      "paid once)."]
    return lines + [""]


def render_sweep_report(
    title: str,
    metric_name: str,
    points: Sequence[SweepPoint],
    stages: Sequence[StageCost],
    images: Sequence[str],
    notes: Sequence[str] = (),
    majority: float | None = None,
) -> str:
    """Markdown for the sweep: learning curve, metric per point (with the majority-class floor,
    ``majority``, when measured), failures, carbon, break-even against scratch and against the
    classical baseline (needs a stage named "pretrain"), emissions avoided by reuse."""
    lines = [f"# {title}", ""]
    lines += ["## Learning curve", ""]
    lines += [f"![{name}]({name})" for name in images] or ["(no plot)"]
    lines += ["", "## Metric per point", "",
              f"| init | labeled examples | {metric_name} (mean ± std over seeds) | seeds ok/failed |",
              "|---|---:|---:|---:|"]
    for r in summarize(points):
        cell = "-" if r["mean"] is None else f"{fmt_metric(r['mean'])} ± {fmt_metric(r['std'])}"
        lines.append(f"| {r['init']} | {_budget_cell(r)} | {cell} | {r['n_ok']}/{r['n_failed']} |")
    if majority is not None:
        lines.append(f"| *majority class* | - | {fmt_metric(majority)} | - |")
        lines += ["", "*majority class*: every test example gets the training subset's most frequent label "
                      "(tagging: its most frequent tag; text-to-text: the source copied), mean over the sweep's "
                      "budgets and seeds: the floor below which a model learned nothing."]
    lines.append("")

    failed = [p for p in points if not p.ok]
    if failed:
        lines += ["## Failed points", "", "| init | labeled examples | seed | error |", "|---|---:|---:|---|"]
        for p in failed:
            err = (p.error or "unknown error").replace("|", "\\|").splitlines()
            lines.append(f"| {p.init} | {p.budget} | {p.seed} | {err[0] if err else 'unknown error'} |")
        lines.append("")

    lines += ["## Carbon", "",
              "| run | cache | this run: g CO2e | Wh | s | building the output: g CO2e | Wh |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for r in carbon_rows(stages, points):
        if r["kind"] == "total":
            name, cache = f"**{r['name']}**", ""
        else:
            name = r["name"] + (" (failed)" if r["status"] != "ok" else "")
            cache = "hit" if r["cache_hit"] else "miss"
        lines.append(f"| {name} | {cache} | {_milli(r['emissions_kg'])} | {_milli(r['energy_kwh'])} | "
                     f"{_s(r['duration_s'])} | {_milli(r['produced_kg'])} | {_milli(r['produced_kwh'])} |")
    lines.append("")

    pretrain = next((s for s in stages if s.name == "pretrain"), None)
    if pretrain is None:
        lines += ["## Break-even", "", "No pretrain stage in this sweep, so no break-even.", ""]
    else:
        lines += _break_even_lines(break_even(pretrain, points))
        classical = classical_break_even(pretrain, points)
        if classical:
            lines += _classical_lines(classical, pretrain.produced_kg)

    av = emissions_avoided(stages, points)
    lines += ["## Emissions avoided by reuse", ""]
    if av["hits"] == 0:
        lines.append("No cache hits: everything in this sweep was computed fresh.")
    else:
        text = (f"{av['hits']} cache {'hit' if av['hits'] == 1 else 'hits'} replaced work that cost "
                f"{_milli(av['kg'])} g CO2e / {_milli(av['kwh'])} Wh when it ran.")
        if av["missing"]:
            text += (f" {av['missing']} of them {'has' if av['missing'] == 1 else 'have'} no recorded "
                     "cost, so this is a lower bound.")
        lines.append(text)
    lines += ["", *notes] if notes else []
    lines.append("")
    return "\n".join(lines)
