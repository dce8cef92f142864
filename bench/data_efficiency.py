"""Benchmark: the data_efficiency sweep, timed as a user runs it, first cold then again.

    # the built-in default (the issue's floor: 3 budgets x 2 inits x 2 seeds in < 15 min)
    .venv/bin/python bench/data_efficiency.py sweep.seeds=[0,1]
    # real data: pretrain on tinyshakespeare + SST-2 sentences, fine-tune on SST-2 budgets
    .venv/bin/python bench/data_efficiency.py --sst2 ../shared/data sweep.budgets=[32,128,512,2048] ...

Each run is `transferlab sweep <overrides>` in a fresh state dir; the second run reuses
every point from the cache. Prints the wall times, the per-point table from MLflow and the
report path; `--copy-png` copies the learning curve into docs/.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from store import client, head_tsv, parent_and_children, transferlab


def sweep(home: Path, overrides: list[str]) -> tuple[float, str]:
    return transferlab(home, "sweep", *overrides)


def sst2_overrides(shared: Path, work: Path, val_rows: int) -> list[str]:
    """Pretraining corpus: tinyshakespeare lines + SST-2 train sentences; labeled task: SST-2.
    Validation is the first ``val_rows`` of GLUE dev (each epoch scores it; all 6.7k rows
    would dominate the fine-tunes' time); test is test.tsv (the 872 GLUE dev sentences)."""
    sst2 = shared / "sst2"
    val = head_tsv(sst2 / "dev.tsv", work / "sst2_val.tsv", val_rows)
    return ["data=local_text", "data.name=tinyshakespeare+sst2",
            f"data.path=[{shared / 'tinyshakespeare.txt'},{sst2 / 'train.tsv'}]",
            f"data.labeled_path={sst2 / 'train.tsv'}", f"data.validation_path={val}",
            f"data.test_path={sst2 / 'test.tsv'}", "data.text_column=sentence", "data.label_column=label"]


def plot_parents(home: Path, parents: list[str], out: Path, title: str) -> None:
    """One learning curve over the points of several sweep runs of one store (e.g. a sweep
    of pretrained/scratch and a second one adding a checkpoint with its own epoch cap)."""
    from modules.evaluation.learning_curve import learning_curve_png
    from modules.evaluation.sweep_report import SweepPoint

    c = client(home)
    exp = c.get_experiment_by_name("transferlab")
    points = []
    for parent in parents:
        for r in c.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'", max_results=500):
            if r.data.tags.get("transferlab.stage") != "finetune":
                continue
            init = r.data.tags["transferlab.init"]
            if init == "checkpoint":
                init = r.info.run_name.removeprefix("finetune-")
            points.append(SweepPoint(init, int(r.data.metrics["data/train_examples"]), int(r.data.params["seed"]),
                                     "ok", r.data.metrics["test/accuracy"], None, None, None))
    learning_curve_png(points, "test accuracy", title, out, chance=0.5)
    print(f"wrote {out} from {len(points)} points")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--plot-parents", nargs="+", default=None,
                    help="only plot: one learning curve from these sweep parent runs in --home, to --copy-png")
    ap.add_argument("--title", default="test accuracy vs labeled examples")
    ap.add_argument("--sst2", type=Path, default=None, help="the shared data dir (tinyshakespeare.txt, sst2/)")
    ap.add_argument("--val-rows", type=int, default=1000)
    ap.add_argument("--home", type=Path, default=None)
    ap.add_argument("--copy-png", type=Path, default=None, help="copy learning_curve.png here")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    if args.plot_parents:
        plot_parents(args.home, args.plot_parents, args.copy_png, args.title)
        return
    home = args.home or Path(tempfile.mkdtemp(prefix="transferlab-sweep-bench-"))
    overrides = list(args.overrides)
    if args.sst2:
        overrides = sst2_overrides(args.sst2.resolve(), home, args.val_rows) + overrides
    cold, out = sweep(home, overrides)
    print(out)
    warm, out2 = sweep(home, overrides)
    print(out2.splitlines()[1] if len(out2.splitlines()) > 1 else out2)
    parent, children = parent_and_children(home, "sweep", newest=False)  # the cold run
    co2 = {c.data.tags["transferlab.stage"]: 0.0 for c in children}
    for c in children:
        co2[c.data.tags["transferlab.stage"]] += c.data.metrics.get("carbon/emissions_kg", 0.0)
    report = home / "runs" / parent.info.run_id / "report" / "report.md"
    print(f"cold sweep: {cold:.0f} s wall; second run (all cached): {warm:.0f} s ({warm / cold:.0%})")
    print("g CO2e of the cold run by stage: " + ", ".join(f"{k} {v * 1000:.3g}" for k, v in co2.items()))
    print(f"report: {report}")
    if args.copy_png:
        shutil.copy(report.parent / "learning_curve.png", args.copy_png)
        print(f"copied the learning curve to {args.copy_png}")


if __name__ == "__main__":
    main()
