"""PNG plots for the report: readable without hunting for a legend."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def confusion_matrix_png(matrix: Sequence[Sequence[int]], label_names: Sequence[str], title: str,
                         path: str | Path) -> Path:
    n = len(label_names)
    fig, ax = plt.subplots(figsize=(1.2 * n + 2, 1.2 * n + 1.5))
    im = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), label_names, rotation=45, ha="right")
    ax.set_yticks(range(n), label_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    peak = max(max(row) for row in matrix) or 1
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(matrix[i][j]), ha="center", va="center",
                    color="white" if matrix[i][j] > peak / 2 else "black")
    fig.colorbar(im, ax=ax, label="test examples")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def comparison_png(accuracy: dict[str, float], co2_kg: dict[str, float], title: str, path: str | Path,
                   chance: float | None = None, metric: str = "test accuracy", chance_label: str = "chance") -> Path:
    """Left: the task's test metric per init (with the chance or majority-class level,
    named ``chance_label``). Right: CO2 per stage, in grams so that small runs stay legible."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    names = list(accuracy)
    colors = {"pretrained": "tab:blue", "scratch": "tab:gray", "zero_shot": "tab:orange", "tfidf": "tab:red"}
    bars = ax1.bar(names, [accuracy[k] for k in names], color=[colors.get(k, "tab:purple") for k in names])
    ax1.bar_label(bars, fmt="%.3f")
    if chance is not None:
        ax1.axhline(chance, color="black", linestyle="--", linewidth=1)
        ax1.text(len(names) - 0.5, chance, f" {chance_label}", va="bottom", ha="right", fontsize=9)
    ax1.set_ylim(0, 1.12)
    ax1.set_ylabel(metric)
    ax1.set_xlabel("initialisation")
    ax1.set_title(f"{metric[:1].upper()}{metric[1:]} per initialisation")
    stages = list(co2_kg)
    grams = [co2_kg[s] * 1000 for s in stages]
    bars = ax2.bar(stages, grams, color="tab:green")
    ax2.bar_label(bars, fmt="%.3g")
    ax2.set_ylabel("emissions (g CO2e)")
    ax2.set_xlabel("stage")
    ax2.set_title("Carbon per stage")
    ax2.tick_params(axis="x", rotation=20)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
