"""Benchmark: does pretraining pay on real data, against what a practitioner would otherwise do?

    .venv/bin/python bench/real_transfer.py --write-docs              # the full run (about an hour on 2 cores)
    .venv/bin/python bench/real_transfer.py --datasets trec --budgets 256 --seeds 0 --minilm-seeds
    .venv/bin/python bench/real_transfer.py --collect-only --home /tmp/real --write-docs   # re-render only
    .venv/bin/python bench/real_transfer.py --budgets 1024 --docs-block real_transfer_1024 --write-docs  # own block

For SST-2, TREC and SUBJ (``--data``: the shared data dir, see its README.md):

1. **One pretraining** (``experiment=real_small``) on every dataset's *training* texts plus
   tinyshakespeare, unlabeled: pretrain once, fine-tune many. No test text is ever seen.
2. Per dataset, **one sweep** (``transferlab sweep``) over ``--budgets`` x ``--seeds`` with the
   inits ``pretrained`` (that export, via ``model.init=runs:/<pretrain run>/hf_model`` and
   ``pretrain.max_steps=0``), ``scratch`` (the same architecture, fresh weights) and ``tfidf``
   (TF-IDF + logistic regression, C chosen on validation). pretrained and scratch both get
   the same learning-rate selection on the validation split (``finetune.search_trials``).
3. Per dataset, all-MiniLM-L6-v2 fine-tuned directly (``--minilm-seeds``, its own sweep,
   fewer seeds because each point costs ~10x a small model's) and, with ``--dapt-steps`` > 0,
   MiniLM continued-pretrained on the task's training texts first (``model.init=<MiniLM>
   pretrain.max_steps=N``) at ``--dapt-budgets``.

Then reads every fine-tune back from MLflow and writes, per dataset, a table (mean ± std
over seeds, the majority-class line) and a learning-curve PNG (``docs/real_transfer_<ds>.png``);
``--write-docs`` puts the tables into docs/BENCHMARKS.md between the ``real_transfer``
markers. Validation: SST-2 uses the first ``--val-rows`` of dev.tsv; TREC and SUBJ cut
``--val-fraction`` (6%) of their train split (``data.labeled_val_fraction``); test is each
set's test.tsv.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from store import client, head_tsv, minilm_dir, transferlab

REPO = Path(__file__).resolve().parents[1]
DATASETS = ("sst2", "trec", "subj")


def markers(block: str) -> tuple[str, str]:
    """The comment lines around a block this script owns in docs/BENCHMARKS.md."""
    return f"<!-- {block}:begin -->", f"<!-- {block}:end -->"


def read_tsv(path: Path) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [(r[0], r[1]) for r in rows[1:]]


def labeled_overrides(data: Path, ds: str, work: Path, val_rows: int, val_fraction: float) -> list[str]:
    """data=local_labeled on one dataset: its train split is both the labeled pool and
    (unused here: pretraining is shared) the corpus."""
    out = ["data=local_labeled", f"data.name={ds}", f"data.path={data / ds / 'train.tsv'}",
           f"data.test_path={data / ds / 'test.tsv'}", "data.text_column=sentence", "data.label_column=label",
           f"data.labeled_val_fraction={val_fraction}"]
    if (data / ds / "dev.tsv").is_file():  # SST-2: validation from GLUE dev (train and dev overlap by 76 rows)
        out.append(f"data.validation_path={head_tsv(data / ds / 'dev.tsv', work / f'{ds}_val.tsv', val_rows)}")
    return out


def corpus_overrides(data: Path, datasets: list[str]) -> list[str]:
    files = [data / "tinyshakespeare.txt", *(data / ds / "train.tsv" for ds in datasets)]
    return ["data=local_text", "data.name=real_corpus", f"data.path=[{','.join(str(f) for f in files)}]",
            "data.text_column=sentence"]


def run(home: Path, command: str, overrides: list[str], log: list[str]) -> float:
    line = f"transferlab {command} {' '.join(overrides)}"
    print(f"$ {line}", flush=True)
    wall, _ = transferlab(home, command, *overrides)
    print(f"  {wall:.0f} s", flush=True)
    log.append(f"{line}  # {wall:.0f} s")
    return wall


def newest(home: Path, kind: str, stage: str | None = None, name: str | None = None) -> Any:
    """The newest run of a kind (or stage), by run name when given: two benches may share a state dir."""
    c = client(home)
    exp = c.get_experiment_by_name("transferlab")
    query = f"tags.`transferlab.kind` = '{kind}'" if stage is None else f"tags.`transferlab.stage` = '{stage}'"
    if name:
        query += f" and tags.`mlflow.runName` = '{name}'"
    return c.search_runs([exp.experiment_id], query, order_by=["attributes.start_time DESC"], max_results=1)[0]


@dataclass
class Row:
    dataset: str
    init: str
    budget: int
    seed: int
    accuracy: float
    kg: float | None
    seconds: float | None
    lr: float | None


# In the MiniLM sweeps the checkpoint is model.init, so their "pretrained" init is MiniLM.
RENAME = {"own": {}, "minilm": {"pretrained": "MiniLM"}, "dapt": {"pretrained": "MiniLM + task pretraining"}}


def finetune_rows(home: Path, dataset: str, parents: list[tuple[str, str]]) -> list[Row]:
    """Every fine-tune child run (not the LR-search trials, which are nested one level
    deeper) of the given (sweep parent run id, kind) pairs."""
    c = client(home)
    exp = c.get_experiment_by_name("transferlab")
    rows = []
    for parent, kind in parents:
        for r in c.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'", max_results=1000):
            t, m = r.data.tags, r.data.metrics
            if t.get("transferlab.stage") != "finetune" or "test/accuracy" not in m:
                continue
            init = t.get("transferlab.init", "?")
            if init == "checkpoint":
                init = r.info.run_name.removeprefix("finetune-")
            init = RENAME[kind].get(init, init)
            rows.append(Row(dataset, init, int(m["data/train_examples"]), int(r.data.params.get("seed", -1)),
                            m["test/accuracy"], m.get("carbon/produced_kg", m.get("carbon/emissions_kg")),
                            m.get("carbon/duration_s"), m.get("finetune/selected_lr")))
    return rows


def majority(data: Path, ds: str) -> float:
    test = [label for _, label in read_tsv(data / ds / "test.tsv")]
    train = Counter(label for _, label in read_tsv(data / ds / "train.tsv"))
    top = train.most_common(1)[0][0]
    return sum(1 for y in test if y == top) / len(test)


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def table(rows: list[Row], chance: float) -> str:
    order = ["pretrained", "scratch", "tfidf"]
    inits = sorted(dict.fromkeys(r.init for r in rows), key=lambda i: (order.index(i) if i in order else len(order), i))
    budgets = sorted({r.budget for r in rows})
    head = ("| init | " + " | ".join(f"{b} labels" for b in budgets)
            + " | per fine-tune (mean; LR trials included): g CO2e | s |")
    lines = [head, "|---|" + "---:|" * (len(budgets) + 2)]
    for init in inits:
        cells = []
        for b in budgets:
            vals = [r.accuracy for r in rows if r.init == init and r.budget == b]
            if not vals:
                cells.append("-")
                continue
            m, s = mean_std(vals)
            cells.append(f"{m:.3f} ± {s:.3f} (n={len(vals)})")
        kgs = [r.kg for r in rows if r.init == init and r.kg is not None]
        secs = [r.seconds for r in rows if r.init == init and r.seconds is not None]
        cost = f"{statistics.mean(kgs) * 1000:.3g}" if kgs else "-"
        wall = f"{statistics.mean(secs):.0f}" if secs else "-"
        lines.append(f"| {init} | " + " | ".join(cells) + f" | {cost} | {wall} |")
    lines.append("| majority class | " + " | ".join(f"{chance:.3f}" for _ in budgets) + " | 0 | 0 |")
    return "\n".join(lines)


def verdict(rows: list[Row], budget: int) -> str:
    """Does own pretraining beat both tuned scratch and tfidf at ``budget``, beyond one std?"""
    def stats(init: str) -> tuple[float, float] | None:
        vals = [r.accuracy for r in rows if r.init == init and r.budget == budget]
        return mean_std(vals) if vals else None

    pre = stats("pretrained")
    if pre is None:
        return f"no pretrained points at {budget} labels"
    parts, wins = [], True
    for other in ("scratch", "tfidf"):
        st = stats(other)
        if st is None:
            parts.append(f"no {other} points")
            wins = False
            continue
        margin = pre[0] - st[0]
        beyond = abs(margin) > max(pre[1], st[1])
        wins = wins and margin > 0 and beyond
        parts.append(f"{'ahead of' if margin > 0 else 'behind'} {other} by {abs(margin):.3f}"
                     f" ({'beyond' if beyond else 'within'} one std)")
    return (f"Own pretraining {'**beats both**' if wins else 'does not beat both'} at {budget} labels (mean over "
            f"seeds): {', '.join(parts)}.")


def plot(rows: list[Row], chance: float, title: str, out: Path) -> None:
    from modules.evaluation.learning_curve import learning_curve_png
    from modules.evaluation.sweep_report import SweepPoint

    points = [SweepPoint(r.init, r.budget, r.seed, "ok", r.accuracy, r.kg, None, r.seconds) for r in rows]
    learning_curve_png(points, "test accuracy", title, out, chance=chance)


def pretrain_line(home: Path) -> str:
    """The one shared pretraining's cost and final LM quality, from its MLflow run."""
    c = client(home)
    exp = c.get_experiment_by_name("transferlab")
    # The sweeps' own pretrain stages pass the export through (max_steps=0): no val/loss. MiniLM's
    # continued pretraining (--dapt-steps) trains, but from a checkpoint (model.init set).
    trained = [r for r in c.search_runs([exp.experiment_id], "tags.`transferlab.stage` = 'pretrain'", max_results=100)
               if "val/loss" in r.data.metrics and r.data.tags.get("transferlab.cache") != "hit"
               and r.data.params.get("model.init") in (None, "None", "scratch")]
    if not trained:
        return "No pretraining run in this state dir (an export was reused)."
    m = trained[0].data.metrics
    return (f"Pretraining, once for all three sets: {m.get('carbon/duration_s', float('nan')):.0f} s, "
            f"{m.get('carbon/emissions_kg', float('nan')) * 1000:.3g} g CO2e, "
            f"{m.get('train/tokens_per_sec', float('nan')):,.0f} tokens/s, final val/loss "
            f"{m.get('val/loss', float('nan')):.3f} (perplexity {m.get('val/perplexity', float('nan')):.0f}).")


def section(results: dict[str, list[Row]], chances: dict[str, float], commands: list[str], pngs: dict[str, str],
            budget: int, pretrain: str, block: str = "real_transfer") -> str:
    # A record of what ran, not a block to paste: commented, so the docs check (which runs the
    # commands of bash/console blocks) leaves it alone.
    shown = [c if c.startswith("#") else f"# {c}" for c in commands]
    begin, end = markers(block)
    out = [begin, "", "Produced by:", "", "```text", *shown, "```", "", pretrain, ""]
    for ds, rows in results.items():
        out += [f"#### {ds}", "", table(rows, chances[ds]), "", verdict(rows, budget), ""]
        if ds in pngs:
            out += [f"![learning curve, {ds}]({pngs[ds]})", ""]
    out.append(end)
    return "\n".join(out)


def write_docs(text: str, block: str = "real_transfer") -> None:
    """Replace the block's text in docs/BENCHMARKS.md (append it when the page has none)."""
    begin, end = markers(block)
    path = REPO / "docs" / "BENCHMARKS.md"
    doc = path.read_text()
    if begin in doc and end in doc:
        doc = doc[: doc.index(begin)] + text + doc[doc.index(end) + len(end):]
    else:
        doc = doc.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(doc)
    print(f"wrote the tables into {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=["sst2", "trec", "subj"])
    ap.add_argument("--budgets", nargs="+", type=int, default=[64, 256, 1024])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--minilm-seeds", nargs="*", type=int, default=[0, 1])
    ap.add_argument("--minilm-epochs", type=int, default=10, help="MiniLM's finetune.max_epochs")
    ap.add_argument("--dapt-steps", type=int, default=0, help="MiniLM continued pretraining steps (0: skip)")
    ap.add_argument("--dapt-budgets", nargs="+", type=int, default=[256])
    ap.add_argument("--search-trials", type=int, default=3, help="finetune.search_trials for pretrained and scratch")
    ap.add_argument("--val-fraction", type=float, default=0.06, help="TREC/SUBJ: share of train cut for validation")
    ap.add_argument("--val-rows", type=int, default=500, help="SST-2: first N rows of dev.tsv as validation")
    ap.add_argument("--parts", nargs="+", default=["own", "minilm", "dapt"], choices=["own", "minilm", "dapt"],
                    help="which sweeps to run per dataset (e.g. only dapt, adding to an earlier run's --home)")
    ap.add_argument("--floor-budget", type=int, default=256)
    ap.add_argument("--home", type=Path, default=None)
    ap.add_argument("--pretrained", default=None, help="reuse this export (a model.init reference) instead of "
                                                       "pretraining again")
    ap.add_argument("--collect-only", action="store_true", help="no runs: re-read --home and render")
    ap.add_argument("--docs-block", default="real_transfer",
                    help="the marked block of docs/BENCHMARKS.md to write (another name, e.g. real_transfer_1024, "
                         "adds a block and its own PNGs instead of replacing the main grid's)")
    ap.add_argument("--write-docs", action="store_true", help="update docs/BENCHMARKS.md and docs/real_transfer_*.png")
    ap.add_argument("overrides", nargs="*", help="extra overrides for every command")
    args = ap.parse_args()
    data = args.data.resolve()
    home = args.home or Path(tempfile.mkdtemp(prefix="transferlab-real-"))
    home.mkdir(parents=True, exist_ok=True)
    commands: list[str] = []
    parents: dict[str, list[tuple[str, str]]] = {ds: [] for ds in args.datasets}
    ledger = home / "real_transfer_parents.tsv"  # dataset -> sweep parent run ids, for --collect-only
    started = time.perf_counter()
    if not args.collect_only:
        base = ["experiment=real_small", *args.overrides]
        if args.pretrained or "own" not in args.parts:
            export = args.pretrained or ""  # unused without the own sweep
            if args.pretrained:
                commands.append(f"# pretrained export reused: {export}")
        else:
            run(home, "pretrain", [*base, *corpus_overrides(data, list(DATASETS))], commands)
            pretrain = newest(home, "pipeline", "pretrain")
            # A cache hit logs no hf_model of its own: the export lives in the run that built it.
            built_by = pretrain.data.tags.get("transferlab.cache_source_run", pretrain.info.run_id)
            export = f"runs:/{built_by}/hf_model"
        for ds in args.datasets:
            data_ov = labeled_overrides(data, ds, home, args.val_rows, args.val_fraction)
            budgets = f"sweep.budgets=[{','.join(map(str, args.budgets))}]"
            own = [*base, *data_ov, f"model.init={export}", "pretrain.max_steps=0", "tokenizer.kind=auto", budgets,
                   f"sweep.seeds=[{','.join(map(str, args.seeds))}]", "finetune.inits=[pretrained,scratch,tfidf]",
                   f"finetune.search_trials={args.search_trials}", f"tracking.run_name=real-{ds}-own"]
            if "own" in args.parts:
                run(home, "sweep", own, commands)
                parents[ds].append((newest(home, "sweep", name=f"real-{ds}-own").info.run_id, "own"))
            if args.minilm_seeds and "minilm" in args.parts:
                # MiniLM tunes at its checkpoint rate (5e-5), not over the small models' search range.
                mini = [*base, *data_ov, f"model.init={minilm_dir()}", "pretrain.max_steps=0", "tokenizer.kind=auto",
                        budgets, f"sweep.seeds=[{','.join(map(str, args.minilm_seeds))}]",
                        "finetune.inits=[pretrained]", "finetune.search_trials=0",
                        f"finetune.max_epochs={args.minilm_epochs}", f"tracking.run_name=real-{ds}-minilm"]
                run(home, "sweep", mini, commands)
                parents[ds].append((newest(home, "sweep", name=f"real-{ds}-minilm").info.run_id, "minilm"))
            if args.dapt_steps > 0 and args.minilm_seeds and "dapt" in args.parts:
                dapt = [*base, *data_ov, f"model.init={minilm_dir()}", f"pretrain.max_steps={args.dapt_steps}",
                        "tokenizer.kind=auto", "finetune.search_trials=0", "pretrain.lr=1e-4",
                        f"sweep.budgets=[{','.join(map(str, args.dapt_budgets))}]",
                        f"sweep.seeds=[{','.join(map(str, args.minilm_seeds))}]", "finetune.inits=[pretrained]",
                        f"finetune.max_epochs={args.minilm_epochs}", f"tracking.run_name=real-{ds}-minilm-dapt"]
                run(home, "sweep", dapt, commands)
                parents[ds].append((newest(home, "sweep", name=f"real-{ds}-minilm-dapt").info.run_id, "dapt"))
            with open(ledger, "a") as f:
                f.writelines(f"{ds}\t{p}\t{kind}\n" for p, kind in parents[ds])
        print(f"all runs: {time.perf_counter() - started:.0f} s", flush=True)
    else:
        for line in ledger.read_text().splitlines():
            ds, parent, kind = line.split("\t")
            if ds in parents:
                parents[ds].append((parent, kind))
        commands = [f"# re-rendered from {home}"]

    results, chances, pngs = {}, {}, {}
    for ds in args.datasets:
        rows = finetune_rows(home, ds, parents[ds])
        results[ds], chances[ds] = rows, majority(data, ds)
        suffix = "" if args.docs_block == "real_transfer" else args.docs_block.removeprefix("real_transfer")
        png = (REPO / "docs" if args.write_docs else home) / f"real_transfer_{ds}{suffix}.png"
        plot(rows, chances[ds], f"{ds}: test accuracy vs labeled examples", png)
        pngs[ds] = png.name
        print(f"\n{ds}\n{table(rows, chances[ds])}\n{verdict(rows, args.floor_budget)}")
    text = section(results, chances, commands, pngs, args.floor_budget, pretrain_line(home), args.docs_block)
    if args.write_docs:
        write_docs(text, args.docs_block)
    else:
        print(text)


if __name__ == "__main__":
    sys.exit(main())
