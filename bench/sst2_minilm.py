"""Benchmark: fine-tune the real pretrained all-MiniLM-L6-v2 on SST-2 through the pipeline.

    .venv/bin/python bench/sst2_minilm.py                      # data in ../shared/data/sst2
    .venv/bin/python bench/sst2_minilm.py --data-dir /data/sst2 --train-examples 60614
    .venv/bin/python bench/sst2_minilm.py -- trainer=gpu       # extra overrides after --

Runs `python -m pipelines.cli run` (this checkout's code) with the checkpoint as
`model.init` and `pretrain.max_steps=0`, so the checkpoint itself is the "pretrained"
model; only `finetune.inits=[pretrained]` (a scratch 6-layer BERT on SST-2 is not the
question here). The data dir holds GLUE TSVs `sentence<TAB>label`: train.tsv, dev.tsv
(validation; only its first --val-rows rows are used, because validation runs every
epoch) and test.tsv (scored once, on the best epoch by val/loss).

all-MiniLM-L6-v2 is a bare encoder (no MLM head): the evaluate stage's perplexity is
that of a freshly initialised LM head, meaningless, so it is kept to 5 batches.
Defaults (16000 stratified train examples, 1 epoch, lr 5e-5, batch 32, max_length 64) reach
test accuracy 0.869 (published ~0.90 with all 67k examples and several epochs); one epoch
is about 500 steps, ~3 minutes on 2 free CPU cores (~95 examples/s).
Prints a Markdown table for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from store import head_tsv, minilm_dir, parent_and_children, run_checkout

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "sst2")
    ap.add_argument("--train-examples", type=int, default=16000, help="stratified subset of train.tsv")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--val-rows", type=int, default=1000, help="first N rows of dev.tsv as the validation split")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--home", type=Path, default=None, help="state dir (default: a fresh temp dir)")
    ap.add_argument("overrides", nargs="*", help="extra overrides, e.g. trainer=gpu")
    args = ap.parse_args()

    data = args.data_dir.resolve()
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        if not (data / name).is_file():
            sys.exit(f"{data / name} not found (--data-dir must hold GLUE SST-2 train.tsv, dev.tsv, test.tsv)")
    model = minilm_dir()
    home = (args.home or Path(tempfile.mkdtemp(prefix="transferlab-sst2-minilm-"))).resolve()
    home.mkdir(parents=True, exist_ok=True)
    val = home / f"sst2_dev_first{args.val_rows}.tsv"
    head_tsv(data / "dev.tsv", val, args.val_rows)

    overrides = [
        "model=bert_small", f"model.init={model}", "pretrain.max_steps=0", "pretrain.register_as=null",
        "data=sst2_local", f"data.path={data / 'train.tsv'}", f"data.validation_path={val}",
        f"data.test_path={data / 'test.tsv'}",
        "finetune.inits=[pretrained]", "finetune.strategy=full", f"finetune.lr={args.lr}",
        f"finetune.train_examples={args.train_examples}", f"finetune.max_epochs={args.epochs}",
        f"finetune.batch_size={args.batch_size}", "finetune.max_length=64",
        "evaluate.perplexity_batches=5", f"seed={args.seed}", *args.overrides,
    ]
    wall = run_checkout(home, "run", overrides)

    parent, children = parent_and_children(home)
    m = parent.data.metrics
    ft = next(c for c in children if c.data.tags.get("transferlab.stage") == "finetune")
    fm = ft.data.metrics
    print("\n| model | train examples | epochs run | test acc | test macro-F1 | val acc (last epoch) | "
          "pipeline wall s | fine-tune s | fine-tune g CO2e | fine-tune kWh |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| all-MiniLM-L6-v2 (full) | {fm['data/train_examples']:.0f} | {fm['train/epochs']:.0f} | "
          f"{m['test/accuracy/pretrained']:.4f} | {m['test/f1_macro/pretrained']:.4f} | "
          f"{fm.get('val/accuracy', float('nan')):.4f} | {wall:.0f} | {fm['carbon/duration_s']:.0f} | "
          f"{fm['carbon/emissions_kg'] * 1000:.3f} | {fm['carbon/energy_kwh']:.5f} |")
    print(f"\nstate dir: {home}  (log: {home / 'bench.log'})")


if __name__ == "__main__":
    main()
