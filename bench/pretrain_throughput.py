"""Benchmark: pretraining throughput of transferlab's pretrain stage vs a plain
``transformers.Trainer``, same model, data, batch and precision, in one process.

    .venv/bin/python bench/pretrain_throughput.py [--steps 100] [--repeats 3] [--compile] [--trainer-compile]

Model: GPT-2 with n_layer 4, n_embd 256, n_head 4, context 128; batch 16; byte-level
BPE vocab 4096 trained on ../shared/data/tinyshakespeare.txt by transferlab's own prep
stage (data=local_text). The transferlab side is the real pretrain stage, as
``transferlab pretrain`` runs it: MLflow child run and logger, codecarbon, checkpoints,
export. The Trainer side trains the same architecture on the same packed blocks with the
same optimizer settings (its default fused AdamW, cosine schedule, clipping at 1.0).
Throughput is the median tokens/s over 10-step windows leaving out the first window (so
compile time is not counted); each configuration's figure is the median over repeats,
and the repeats interleave the sides so drifting machine load hits all of them alike.
Prints a Markdown table for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import (
    DataCollatorForLanguageModeling,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

if TYPE_CHECKING:
    from pipelines.stages.records import PrepRecord

BLOCK, BATCH, WINDOW = 128, 16, 10
CORPUS = Path(__file__).resolve().parents[2] / "shared/data/tinyshakespeare.txt"


def overrides(home: Path, corpus: Path, steps: int) -> list[str]:
    return [
        f"paths.home={home}", "data=local_text", f"data.path={corpus}", "tokenizer=bpe", "tokenizer.vocab_size=4096",
        "model=gpt2_tiny", "model.n_layer=4", "model.n_embd=256", "model.n_head=4", "model.n_inner=1024",
        f"model.max_positions={BLOCK}", "model.dropout=0.0", f"pretrain.block_size={BLOCK}",
        f"pretrain.batch_size={BATCH}", f"pretrain.max_steps={steps}", "pretrain.lr=1e-3", "pretrain.warmup_steps=10",
        f"pretrain.val_every_n_steps={steps}", "pretrain.val_batches=1", f"pretrain.checkpoint_every_n_steps={steps}",
        "pretrain.register_as=null", f"trainer.log_every_n_steps={WINDOW}", "trainer.progress_every_n_steps=100000",
    ]


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


def hf_trainer(cfg: dict, prep_dir: Path, steps: int, bf16: bool, compile: bool, workdir: Path) -> float:
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    from modules.models.factory import build_lm, lm_config

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(prep_dir / "tokenizer"))
    model = build_lm(lm_config(cfg.model, tok), "causal")
    args = TrainingArguments(
        output_dir=str(workdir), per_device_train_batch_size=BATCH, max_steps=steps, learning_rate=1e-3,
        lr_scheduler_type="cosine", warmup_steps=10, weight_decay=0.01, max_grad_norm=1.0, logging_steps=WINDOW,
        save_strategy="no", report_to=[], use_cpu=True, bf16=bf16, dataloader_num_workers=0,
        disable_tqdm=True, seed=0, torch_compile=compile,
    )
    windows = _Windows()
    trainer = Trainer(model=model, args=args, train_dataset=load_from_disk(str(prep_dir / "lm"))["train"],
                      data_collator=DataCollatorForLanguageModeling(tok, mlm=False), callbacks=[windows])
    trainer.train()
    return statistics.median(windows.rates[1:] or windows.rates)


def transferlab(base: list[str], prep_record: PrepRecord, bf16: bool, compile: bool, seed: int) -> float:
    from pipelines import stages
    from pipelines.config.compose import compose
    from pipelines.stages.common import StageContext

    # A new seed per measurement: a new pretrain fingerprint, so the stage trains instead of hitting its cache.
    cfg = compose([*base, f"trainer.precision={'bf16-mixed' if bf16 else '32-true'}",
                   f"trainer.compile={str(compile).lower()}", f"seed={seed}"])
    record = stages.pretrain(StageContext.create(cfg), prep_record)
    return record.metrics["train/tokens_per_sec"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also measure transferlab with trainer.compile=true")
    ap.add_argument("--trainer-compile", action="store_true", help="also measure the Trainer with torch_compile=True")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from pipelines import stages
    from pipelines.config.compose import compose
    from pipelines.runtime.env import quiet_libraries
    from pipelines.stages.common import StageContext

    quiet_libraries()
    home = Path(tempfile.mkdtemp(prefix="transferlab-throughput-"))
    base = overrides(home, args.corpus.resolve(), args.steps)
    cfg = compose(base)
    prep_record = stages.prep(StageContext.create(cfg))
    prep_dir = Path(prep_record.path)

    sides: list[tuple[str, bool]] = [("Trainer", False), ("transferlab", False)]
    if args.trainer_compile:
        sides.append(("Trainer + torch_compile", True))
    if args.compile:
        sides.append(("transferlab + trainer.compile", True))
    results: dict[tuple[str, str], list[float]] = {}
    seed = 100
    for rep in range(args.repeats):
        for precision, bf16 in (("fp32", False), ("bf16", True)):
            for name, compile in sides:
                seed += 1
                if name.startswith("Trainer"):
                    tps = hf_trainer(cfg, prep_dir, args.steps, bf16, compile, home / f"hf-{seed}")
                else:
                    tps = transferlab(base, prep_record, bf16, compile, seed)
                results.setdefault((precision, name), []).append(tps)
                print(f"repeat {rep} {precision} {name}: {tps:,.0f} tokens/s", flush=True)
    print(f"\n{torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{args.steps} steps x {args.repeats} repeats\n")
    print("| precision | side | tokens/s (median) | runs | vs Trainer |")
    print("|---|---|---:|---|---:|")
    for (precision, name), values in results.items():
        hf = statistics.median(results[(precision, "Trainer")])
        tps = statistics.median(values)
        runs = ", ".join(f"{v:,.0f}" for v in values)
        print(f"| {precision} | {name} | {tps:,.0f} | {runs} | {tps / hf:.2f}x |")


if __name__ == "__main__":
    main()
