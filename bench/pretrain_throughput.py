"""Benchmark: pretraining throughput of transferlab's pretrain stage vs a plain
``transformers.Trainer``, same model, data, batch and precision, in one process.

    .venv/bin/python bench/pretrain_throughput.py [--steps 100] [--repeats 3] [--compile] [--trainer-compile]
        [--precisions fp32 bf16] [--bare] [--profile ROWS]

Model: GPT-2 with n_layer 4, n_embd 256, n_head 4, context 128; batch 16; byte-level
BPE vocab 4096 trained on ../shared/data/tinyshakespeare.txt by transferlab's own prep
stage (data=local_text). The transferlab side is the real pretrain stage, as
``transferlab pretrain`` runs it: MLflow child run and logger, codecarbon, checkpoints,
export. The Trainer side trains the same architecture on the same packed blocks with the
same optimizer settings (its default fused AdamW, cosine schedule, clipping at 1.0).
Throughput is the median tokens/s over 10-step windows leaving out the first window (so
compile time is not counted); each configuration's figure is the median over repeats,
and the repeats interleave the sides so drifting machine load hits all of them alike.
``--bare`` adds a hand-written loop (the framework-free ceiling), ``--compile`` the
break-even of compiling (the measurement behind ``trainer.compile_min_steps``), and
``--profile`` torch.profiler's top ops of one step. Prints Markdown tables for
docs/BENCHMARKS.md.
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
from store import cpu_name
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


def transferlab(base: list[str], prep_record: PrepRecord, bf16: bool, compile: bool, seed: int) -> tuple[float, float]:
    """tokens/s of the real pretrain stage, and the stage's wall seconds (for compile's break-even).

    compile=True is what ``trainer.compile=auto`` (the default) does on a run of at least
    ``trainer.compile_min_steps`` steps; the bench's runs are shorter, so it sets it explicitly.
    """
    from pipelines import stages
    from pipelines.config.compose import compose
    from pipelines.stages.common import StageContext

    # A new seed per measurement: a new pretrain fingerprint, so the stage trains instead of hitting its cache.
    cfg = compose([*base, f"trainer.precision={'bf16-mixed' if bf16 else '32-true'}",
                   f"trainer.compile={str(compile).lower()}", f"seed={seed}"])
    ctx = StageContext.create(cfg)
    record = stages.pretrain(ctx, prep_record)
    info = ctx.tracker.client.get_run(record.run_id).info
    return record.metrics["train/tokens_per_sec"], (info.end_time - info.start_time) / 1000


def bare_model_and_batches(cfg, prep_dir: Path, n: int):
    """The benchmarked GPT-2, fused AdamW and ``n`` packed batches, with no framework around them."""
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    from modules.models.factory import build_lm, lm_config

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(prep_dir / "tokenizer"))
    model = build_lm(lm_config(cfg.model, tok), "causal").train()
    ids = torch.tensor(load_from_disk(str(prep_dir / "lm"))["train"][: n * BATCH]["input_ids"])  # (n*B, T)
    batches = [{"input_ids": b, "labels": b} for b in ids.split(BATCH)]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.01, fused=True)
    return model, batches, opt


def bare_step(model, batch: dict, opt, bf16: bool) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = model(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def bare_loop(cfg, prep_dir: Path, steps: int, bf16: bool, compile: bool) -> float:
    """A hand-written loop (forward, backward, clip, fused AdamW): the ceiling any framework
    around this model can reach, so the gap to it is the framework's own cost."""
    model, batches, opt = bare_model_and_batches(cfg, prep_dir, steps)
    if compile:
        model.compile()
    rates, t0 = [], time.perf_counter()
    for i, batch in enumerate(batches, 1):
        bare_step(model, batch, opt, bf16)
        if i % WINDOW == 0:
            now = time.perf_counter()
            rates.append(WINDOW * BATCH * BLOCK / (now - t0))
            t0 = now
    return statistics.median(rates[1:] or rates)


def profile_step(cfg, prep_dir: Path, bf16: bool, compile: bool, rows: int) -> str:
    """torch.profiler's top ops (by self CPU time) over 3 steps, after 5 warm-up steps, and
    what the step's matmuls cost in it and alone."""
    from torch.profiler import ProfilerActivity, profile

    model, batches, opt = bare_model_and_batches(cfg, prep_dir, 8)
    if compile:
        model.compile()
    for batch in batches[:5]:
        bare_step(model, batch, opt, bf16)
    with profile(activities=[ProfilerActivity.CPU], with_flops=True, record_shapes=True) as prof:
        for batch in batches[5:]:
            bare_step(model, batch, opt, bf16)
    events = prof.key_averages()
    table = events.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=48)
    return f"{table}\n{matmul_floor(prof, events, steps=len(batches) - 5, bf16=bf16)}"


MATMULS = ("aten::mm", "aten::addmm", "aten::bmm")


def timed(op, args: list[torch.Tensor], calls: int = 3) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        op(*args)
    return (time.perf_counter() - t0) / calls


def matmul_floor(prof, events, steps: int, bf16: bool) -> str:
    """The step's dense matmuls: their share of the step, their speed, and their time replayed alone.

    Replaying every profiled matmul shape by itself, as often as the step calls it, gives
    the floor under any loop around this model: compiling or a leaner framework can only
    shrink the rest of the step. (Replayed on contiguous inputs; the backward's transposed
    operands may run a little faster or slower.)
    """
    total = sum(e.self_cpu_time_total for e in events) * 1e-6 / steps  # events: prof.key_averages()
    in_step = flops = 0.0
    dtype = torch.bfloat16 if bf16 else torch.float32
    calls = []  # (op, inputs, calls per step)
    for e in prof.key_averages(group_by_input_shape=True):
        if e.key in MATMULS:
            shapes = [s for s in e.input_shapes if s][: 3 if e.key == "aten::addmm" else 2]  # drop out=
            calls.append((getattr(torch, e.key.removeprefix("aten::")), [torch.randn(*s, dtype=dtype) for s in shapes],
                          e.count / steps))
            in_step += e.self_cpu_time_total * 1e-6 / steps
            flops += e.flops / steps
    # Each shape's best of 7 rounds, the rounds spread over ~10 s: the floor, not a noisy neighbour's burst.
    best = [float("inf")] * len(calls)
    for _ in range(7):
        for i, (op, inputs, _) in enumerate(calls):
            best[i] = min(best[i], timed(op, inputs))
    alone = sum(b * per_step for b, (_, _, per_step) in zip(best, calls, strict=True))
    ceiling = BATCH * BLOCK / alone
    return (f"matmuls per step: {flops / 1e9:.1f} GFLOP, {in_step:.3f} s of the step's {total:.3f} s self CPU "
            f"({in_step / total:.0%}, {flops / in_step / 1e9:,.0f} GFLOP/s); replayed alone {alone:.3f} s "
            f"({flops / alone / 1e9:,.0f} GFLOP/s): no loop steps faster than {ceiling:,.0f} tokens/s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also measure transferlab with trainer.compile=true")
    ap.add_argument("--trainer-compile", action="store_true", help="also measure the Trainer with torch_compile=True")
    ap.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"],
                    help="bf16 only where the CPU runs it natively (AVX512-BF16/AMX); elsewhere it is emulated")
    ap.add_argument("--bare", action="store_true", help="also measure a hand-written loop (the framework-free ceiling)")
    ap.add_argument("--profile", type=int, default=0, metavar="ROWS",
                    help="print torch.profiler's top ROWS ops of a step in the last --precisions, eager "
                         "and compiled, with the step's matmul floor (--repeats 0: only this)")
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
    if args.bare:
        sides += [("bare loop", False), ("bare loop + compile", True)]
    results: dict[tuple[str, str], list[float]] = {}
    walls: dict[tuple[str, bool], list[float]] = {}  # transferlab's stage seconds, by precision and compile
    seed = 100
    for rep in range(args.repeats):
        for precision in args.precisions:
            bf16 = precision == "bf16"
            for name, compile in sides:
                seed += 1
                if name.startswith("Trainer"):
                    tps = hf_trainer(cfg, prep_dir, args.steps, bf16, compile, home / f"hf-{seed}")
                elif name.startswith("bare"):
                    tps = bare_loop(cfg, prep_dir, args.steps, bf16, compile)
                else:
                    tps, wall = transferlab(base, prep_record, bf16, compile, seed)
                    walls.setdefault((precision, compile), []).append(wall)
                results.setdefault((precision, name), []).append(tps)
                print(f"repeat {rep} {precision} {name}: {tps:,.0f} tokens/s", flush=True)
    print(f"\n{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{args.steps} steps x {args.repeats} repeats\n")
    if results:
        print_table(results)
    if args.compile and results:
        print_break_even(results, walls, args.steps, args.precisions)
    if args.profile:
        precision = args.precisions[-1]
        for compile in (False, True):
            print(f"\nOne {precision} step{' compiled' if compile else ''} (3 steps profiled after 5 warm-up; "
                  f"bare loop, same model and batch):\n")
            print(profile_step(cfg, prep_dir, precision == "bf16", compile, args.profile))


def print_table(results: dict[tuple[str, str], list[float]]) -> None:
    print("| precision | side | tokens/s (median) | runs | vs Trainer | vs Trainer + compile |")
    print("|---|---|---:|---|---:|---:|")
    for (precision, name), values in results.items():
        hf = statistics.median(results[(precision, "Trainer")])
        hfc = results.get((precision, "Trainer + torch_compile"))
        tps = statistics.median(values)
        runs = ", ".join(f"{v:,.0f}" for v in values)
        vs_compiled = f"{tps / statistics.median(hfc):.2f}x" if hfc else "-"
        print(f"| {precision} | {name} | {tps:,.0f} | {runs} | {tps / hf:.2f}x | {vs_compiled} |")


def print_break_even(results: dict[tuple[str, str], list[float]], walls: dict[tuple[str, bool], list[float]],
                     steps: int, precisions: list[str]) -> None:
    """How many steps compiling needs to pay for itself: compile cost / time saved per step.

    The compiled stage saves ``gain`` seconds on each of its ``steps`` steps and still took
    ``wall_c - wall_e`` longer (or shorter) in total, so compiling cost ``wall_c - wall_e +
    steps x gain``; the break-even is that cost over ``gain``.
    """
    print("\n| precision | compile cost, s | saved per step, ms | break-even, steps |")
    print("|---|---:|---:|---:|")
    for precision in precisions:
        eager = statistics.median(results[(precision, "transferlab")])
        compiled = statistics.median(results[(precision, "transferlab + trainer.compile")])
        gain = BATCH * BLOCK * (1 / eager - 1 / compiled)  # seconds per step
        cost = statistics.median(walls[(precision, True)]) - statistics.median(walls[(precision, False)]) + steps * gain
        even = f"{cost / gain:,.0f}" if gain > 0 else "never (no gain)"
        print(f"| {precision} | {cost:.1f} | {gain * 1000:.1f} | {even} |")


if __name__ == "__main__":
    main()
