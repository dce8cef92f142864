"""Benchmark: pretraining throughput of transferlab's pretrain recipe vs a plain
``transformers.Trainer``, same model, data, batch and precision, in one process.

    .venv/bin/python bench/pretrain_throughput.py --repeats 3 [--compile]

Model: GPT-2 with n_layer 4, n_embd 256, n_head 4, context 128; batch 16; byte-level
BPE vocab 4096 trained on ../shared/data/tinyshakespeare.txt. Both sides run
``--steps`` optimizer steps; throughput is the median tokens/s over 10-step windows,
leaving out the first window. Prints a Markdown table for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from datasets import Dataset, DatasetDict
from transformers import (
    DataCollatorForLanguageModeling,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from modules.data.tokenization import pack_for_lm, train_tokenizer
from modules.models.factory import build_lm, lm_config
from modules.training.recipes import pretrain_language_model

MODEL = {"name": "gpt2_bench", "arch": "gpt2", "family": "causal", "n_layer": 4, "n_embd": 256, "n_head": 4,
         "n_inner": 1024, "max_positions": 128, "dropout": 0.0}
BLOCK, BATCH, WINDOW = 128, 16, 10


def prepare(corpus: Path, out: Path) -> None:
    lines = [ln.strip() for ln in corpus.read_text().splitlines() if ln.strip()]
    tok = train_tokenizer(lines, "bpe", 4096)
    tok.save_pretrained(str(out / "tokenizer"))
    texts = Dataset.from_dict({"text": lines})
    packed = pack_for_lm(texts, tok, BLOCK, "causal")
    DatasetDict({"train": packed, "validation": packed.select(range(64))}).save_to_disk(str(out / "lm"))


class _Windows(TrainerCallback):
    def __init__(self) -> None:
        self.t0: float | None = None
        self.rates: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % WINDOW == 0:
            now = time.perf_counter()
            if self.t0 is not None:
                self.rates.append(WINDOW * BATCH * BLOCK / (now - self.t0))
            self.t0 = now


def hf_trainer(prep: Path, steps: int, bf16: bool, workdir: Path) -> float:
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(prep / "tokenizer"))
    model = build_lm(lm_config(MODEL, tok), "causal")
    args = TrainingArguments(
        output_dir=str(workdir), per_device_train_batch_size=BATCH, max_steps=steps, learning_rate=1e-3,
        lr_scheduler_type="cosine", warmup_steps=10, weight_decay=0.01, max_grad_norm=1.0, logging_steps=WINDOW,
        save_strategy="no", report_to=[], use_cpu=True, bf16=bf16, dataloader_num_workers=0,
        disable_tqdm=True, seed=0,
    )
    windows = _Windows()
    trainer = Trainer(model=model, args=args, train_dataset=load_from_disk(str(prep / "lm"))["train"],
                      data_collator=DataCollatorForLanguageModeling(tok, mlm=False), callbacks=[windows])
    trainer.train()
    return statistics.median(windows.rates[1:] or windows.rates)


def transferlab(prep: Path, steps: int, bf16: bool, workdir: Path, compile: bool = False) -> float:
    pretrain = {"block_size": BLOCK, "batch_size": BATCH, "max_steps": steps, "lr": 1e-3, "weight_decay": 0.01,
                "warmup_steps": 10, "grad_clip": 1.0, "val_every_n_steps": steps, "val_batches": 1,
                "mlm_probability": 0.15}
    trainer = {"accelerator": "cpu", "devices": 1, "precision": "bf16-mixed" if bf16 else "32-true",
               "num_threads": None, "log_every_n_steps": WINDOW, "progress_every_n_steps": 10_000,
               "deterministic": False, "peak_flops": None, "compile": compile}
    result = pretrain_language_model(prep, workdir, MODEL, pretrain, trainer, seed=0)
    return result.metrics["train/tokens_per_sec"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/tinyshakespeare.txt")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also measure transferlab with trainer.compile=true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from pipelines.runtime import quiet_libraries

    quiet_libraries()
    root = Path(tempfile.mkdtemp(prefix="transferlab-throughput-"))
    prepare(args.corpus, root / "prep")
    results: dict[tuple[str, str], list[float]] = {}
    for rep in range(args.repeats):
        for precision, bf16 in (("fp32", False), ("bf16", True)):
            sides = [("Trainer", hf_trainer), ("transferlab", transferlab)]
            if args.compile:
                sides.append(("transferlab+compile", partial(transferlab, compile=True)))
            for name, fn in sides:
                tps = fn(root / "prep", args.steps, bf16, root / f"{name}-{precision}-{rep}")
                results.setdefault((precision, name), []).append(tps)
                print(f"repeat {rep} {precision} {name}: {tps:,.0f} tokens/s", flush=True)
    print(f"\n{torch.get_num_threads()} threads, torch {torch.__version__}, {args.steps} steps x {args.repeats} repeats\n")
    print("| precision | side | tokens/s | vs Trainer |")
    print("|---|---|---:|---:|")
    for (precision, name), values in results.items():
        hf = statistics.median(results[(precision, "Trainer")])
        tps = statistics.median(values)
        print(f"| {precision} | {name} | {tps:,.0f} | {tps / hf:.2f}x |")


if __name__ == "__main__":
    main()
