"""Benchmark: pretrained-vs-scratch margin of the built-in default over several seeds,
plus wall time of a first (cold) and second (cached) run.

    .venv/bin/python bench/transfer_margin.py --seeds 0 1 2
    .venv/bin/python bench/transfer_margin.py experiment=quickstart_bert --seeds 0 1 2

Each seed runs `transferlab run seed=S` as a user would (fresh state dir per benchmark,
shared across seeds so prep is reused, as it would be for a user). Prints a Markdown table
for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from store import parent_and_children, transferlab


def run(home: Path, *overrides: str) -> float:
    return transferlab(home, "run", *overrides)[0]


def stage_name(tags: dict[str, str]) -> str:
    """A child run's stage as the report names it: finetune[pretrained], pretrain, ..."""
    init = f"[{tags['transferlab.init']}]" if "transferlab.init" in tags else ""
    return f"{tags['transferlab.stage']}{init}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--home", type=Path, default=None)
    ap.add_argument("overrides", nargs="*", help="extra overrides for every run, e.g. experiment=quickstart_bert")
    args = ap.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="transferlab-bench-"))
    rows, gains = [], []
    for i, seed in enumerate(args.seeds):
        wall = run(home, f"seed={seed}", *args.overrides)
        parent, children = parent_and_children(home)
        m = parent.data.metrics
        co2 = {stage_name(c.data.tags): c.data.metrics.get("carbon/emissions_kg") for c in children}
        gain = m["test/accuracy/pretrained"] - m["test/accuracy/scratch"]
        gains.append(gain)
        rows.append((seed, m["test/accuracy/pretrained"], m["test/accuracy/scratch"], gain, wall,
                     co2.get("pretrain"), co2.get("finetune[pretrained]")))
        if i == 0:
            cached_wall = run(home, f"seed={seed}", *args.overrides)
    print("| seed | pretrained acc | scratch acc | margin (points) | wall s (cold pretrain) | pretrain g CO2e "
          "| fine-tune g CO2e |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for seed, p, s, g, w, cp, cf in rows:
        print(f"| {seed} | {p:.4f} | {s:.4f} | {g * 100:+.1f} | {w:.0f} | {cp * 1000:.3f} | {cf * 1000:.4f} |")
    print(f"\nmargin: mean {statistics.mean(gains) * 100:+.1f} points, min {min(gains) * 100:+.1f}")
    print(f"second run of seed {args.seeds[0]} (prep + pretrain cached): {cached_wall:.0f} s "
          f"vs {rows[0][4]:.0f} s cold ({cached_wall / rows[0][4]:.0%})")
    print(f"state dir: {home}")


if __name__ == "__main__":
    main()
