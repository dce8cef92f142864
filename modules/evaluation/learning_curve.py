"""Learning-curve PNG for the data_efficiency sweep: metric vs labeled examples, per init."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from modules.evaluation.sweep_report import ZERO_SHOT, SweepPoint, init_order  # noqa: E402

_COLORS = {"pretrained": "tab:blue", "scratch": "tab:gray", "zero_shot": "tab:orange", "tfidf": "tab:red"}
_EXTRA = ["tab:purple", "tab:green", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]


def _metric(point: SweepPoint) -> float:
    """The metric of a point drawn on the curve: only ok points are, and an ok point has one."""
    assert point.metric is not None, point
    return float(point.metric)


def learning_curve_png(points: Sequence[SweepPoint], metric_name: str, title: str, path: str | Path,
                       chance: float | None = None, chance_label: str = "chance") -> Path:
    """One line per init: the mean over ok seeds, a mean±std band, each seed as a small dot;
    ``chance`` (the chance or, measured, the majority-class level) a dotted line named ``chance_label``.

    x is log2 (budgets are usually doublings), ticked at the budgets themselves. Zero-shot uses
    no labels, so it cannot sit on a log axis: it is a dashed horizontal line instead. Failed
    points are left out; an init with no ok point simply draws nothing. The legend goes below
    the axes so it never hides a curve."""
    ok = [p for p in points if p.ok]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    extra = iter(_EXTRA * 4)
    budgets: set[int] = set()
    for init in init_order(points):
        color = _COLORS.get(init) or next(extra)
        mine = [p for p in ok if p.init == init]
        if not mine:
            continue
        if init == ZERO_SHOT:
            level = statistics.mean(_metric(p) for p in mine)
            ax.axhline(level, color=color, linestyle="--", linewidth=1.5, label="zero-shot (no labels)")
            continue
        mine = [p for p in mine if p.budget > 0]  # a log axis has no 0
        xs = sorted({p.budget for p in mine})
        if not xs:
            continue
        budgets.update(xs)
        vals = [[_metric(p) for p in mine if p.budget == b] for b in xs]
        means = [statistics.mean(v) for v in vals]
        stds = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in vals]
        ax.plot(xs, means, marker="o", color=color, linewidth=2, label=f"{init} (mean over seeds)")
        ax.fill_between(xs, [m - s for m, s in zip(means, stds, strict=True)],
                        [m + s for m, s in zip(means, stds, strict=True)], color=color, alpha=0.18, linewidth=0)
        ax.scatter([p.budget for p in mine], [_metric(p) for p in mine], s=12, color=color, alpha=0.6,
                   zorder=3)
    if chance is not None:
        ax.axhline(chance, color="black", linestyle=":", linewidth=1, label=chance_label)
    ax.set_xscale("log", base=2)
    if budgets:
        ticks = sorted(budgets)
        ax.set_xticks(ticks, [str(b) for b in ticks])
        ax.minorticks_off()
        ax.set_xlim(ticks[0] / 1.4, ticks[-1] * 1.4)
    else:
        ax.set_xlim(1, 2)
        ax.set_xticks([])
        ax.text(0.5, 0.5, "no successful fine-tunes", transform=ax.transAxes, ha="center", va="center",
                color="gray")
    ax.set_xlabel("labeled training examples (log scale)")
    ax.set_ylabel(metric_name)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=min(3, len(handles)), frameon=False)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)
