"""Benchmark: does distilling a fine-tuned MiniLM into the pipeline's own tiny model pay on SST-2?

    .venv/bin/python bench/distillation.py --home /work/exp/bench \\
        --student runs:/<pretrain run>/hf_model --seeds 0 1 2 --budget 512 --unlabeled 8000

Per seed, two ``transferlab run`` s on SST-2 (``--data``/sst2: the labeled pool is train.tsv,
validation the first ``--val-rows`` of dev.tsv, test is test.tsv), both with
``experiment=real_small`` and the student export as ``model.init`` (``pretrain.max_steps=0``):

1. **teacher + distillation**: ``finetune.inits=[pretrained, <MiniLM>]`` at ``--budget``
   labels, one learning rate each (the family default for the student, 5e-5 for MiniLM), and
   ``distill.teacher=<MiniLM>`` with ``distill.unlabeled=--unlabeled`` rows of SST-2 train
   whose labels are dropped. That gives teacher, student on labels alone, and distilled
   student, from one shared data preparation.
2. **student on labels alone, tuned**: ``finetune.inits=[pretrained]`` with
   ``finetune.search_trials`` learning rates chosen on validation accuracy, so the
   distilled student is measured against the best the same student does without a teacher.

Reads every child run back from MLflow and prints a Markdown table (mean ± std over seeds):
test accuracy, non-embedding parameters, wall seconds and g CO2e per stage, and, where the
runs logged them, the inference cost metrics (``inference/*``). Stage seconds and CO2 come
from the runs that built their output (a cache hit's reuse costs nothing to count).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

from store import client, head_tsv, minilm_dir, transferlab

REPO = Path(__file__).resolve().parents[1]


def children(home: Path, run_name: str) -> list[Any]:
    """The child runs (stage runs, not LR trials) of the newest pipeline run called ``run_name``."""
    c = client(home)
    exp = c.get_experiment_by_name("transferlab")
    parent = c.search_runs([exp.experiment_id], f"tags.`transferlab.kind` = 'pipeline' and "
                           f"tags.`mlflow.runName` = '{run_name}'", order_by=["attributes.start_time DESC"],
                           max_results=1)[0]
    return c.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
                         max_results=100)


def role(run: Any) -> str | None:
    """Which row of the table a child run is."""
    t = run.data.tags
    if t.get("transferlab.stage") == "distill":
        return "student, distilled from the teacher"
    if t.get("transferlab.stage") != "finetune":
        return None
    if t.get("transferlab.init") == "pretrained":
        tuned = int(run.data.params.get("finetune.search_trials", "0") or 0) > 0
        return "student on labels alone, LR searched" if tuned else "student on labels alone, default LR"
    return "teacher: MiniLM fine-tuned"


def values(metrics: list[dict[str, float]], key: str, scale: float = 1.0) -> list[float]:
    return [m[key] * scale for m in metrics if key in m]


def fmt(xs: list[float], spec: str = ".3f") -> str:
    if not xs:
        return "-"
    m = statistics.mean(xs)
    s = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{m:{spec}} ± {s:{spec}}" if len(xs) > 1 else f"{m:{spec}}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--student", required=True, help="the student's pretrained export (a model.init reference)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--budget", type=int, default=512)
    ap.add_argument("--unlabeled", type=int, default=8000)
    ap.add_argument("--search-trials", type=int, default=3)
    ap.add_argument("--max-epochs", type=int, default=10)
    ap.add_argument("--val-rows", type=int, default=500)
    ap.add_argument("--collect-only", action="store_true")
    args = ap.parse_args()
    sst2 = args.data.resolve() / "sst2"
    home = args.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    teacher = str(minilm_dir())
    base = ["experiment=real_small", "data=local_labeled", "data.name=sst2", f"data.path={sst2 / 'train.tsv'}",
            f"data.test_path={sst2 / 'test.tsv'}", "data.text_column=sentence", "data.label_column=label",
            f"data.validation_path={head_tsv(sst2 / 'dev.tsv', home / 'sst2_val.tsv', args.val_rows)}",
            f"model.init={args.student}", "pretrain.max_steps=0", "tokenizer.kind=auto",
            "finetune.register_as=null", f"finetune.train_examples={args.budget}",
            f"finetune.max_epochs={args.max_epochs}"]
    names = []
    for seed in args.seeds:
        distill = [*base, f"seed={seed}", f"finetune.inits=[pretrained,{teacher}]", "finetune.search_trials=0",
                   f"distill.teacher={teacher}", f"distill.unlabeled={args.unlabeled}",
                   f"tracking.run_name=distill-sst2-s{seed}"]
        tuned = [*base, f"seed={seed}", "finetune.inits=[pretrained]", f"finetune.search_trials={args.search_trials}",
                 f"tracking.run_name=distill-sst2-tuned-s{seed}"]
        names += [f"distill-sst2-s{seed}", f"distill-sst2-tuned-s{seed}"]
        if args.collect_only:
            continue
        for overrides in (distill, tuned):
            print(f"$ transferlab run {' '.join(overrides)}", flush=True)
            wall, _ = transferlab(home, "run", *overrides)
            print(f"  {wall:.0f} s", flush=True)

    rows: dict[str, list[dict[str, float]]] = {}
    built: dict[str, list[dict[str, float]]] = {}  # the stage's own cost: cache hits (reused outputs) left out
    for name in names:
        for run in children(home, name):
            r = role(run)
            if r is not None:
                rows.setdefault(r, []).append(run.data.metrics)
                if run.data.tags.get("transferlab.cache") != "hit":
                    built.setdefault(r, []).append(run.data.metrics)
    order = ["teacher: MiniLM fine-tuned", "student on labels alone, default LR",
             "student on labels alone, LR searched", "student, distilled from the teacher"]
    print(f"\nSST-2, {args.budget} labels, {args.unlabeled} unlabeled rows for distillation, seeds {args.seeds}\n")
    print("| model | test accuracy (per seed) | parameters | stage s | stage g CO2e | inference ms/example "
          "(batch 1) | examples/s (batched) | g CO2e per 1k predictions |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in order:
        ms, bs = rows.get(r, []), built.get(r, [])

        def get(key: str, scale: float = 1.0) -> list[float]:
            return values(ms, key, scale)  # noqa: B023 (used within this iteration)

        def cost(key: str, scale: float = 1.0) -> list[float]:
            return values(bs, key, scale)  # noqa: B023

        accuracy = get("test/accuracy")
        seeds = ", ".join(f"{a:.3f}" for a in accuracy)
        params = get("inference/parameters") or get("model/trainable_parameters")
        print(f"| {r} | {fmt(accuracy)} ({seeds}) | {fmt(params, ',.0f')} | "
              f"{fmt(cost('carbon/duration_s'), '.0f')} | {fmt(cost('carbon/emissions_kg', 1000), '.3f')} | "
              f"{fmt(get('inference/ms_per_example_batch1'), '.2f')} | "
              f"{fmt(get('inference/examples_per_sec'), ',.0f')} | "
              f"{fmt(get('inference/emissions_g_per_1k'), '.4f')} |")


if __name__ == "__main__":
    sys.exit(main())
