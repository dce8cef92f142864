"""Measure this machine's dense matmul peak, the denominator of ``train/mfu``.

    .venv/bin/python bench/peak_flops.py [--seconds 5] [--size 2048]

Prints GFLOP/s for fp32 and bf16 (median of 3) and the ``trainer.peak_flops=...`` override
to use for MFU on this machine. The built-in CPU defaults are this script's figures on the
reference machine (modules/training/hardware.py).
"""

from __future__ import annotations

import argparse
import statistics

import torch

from modules.training.hardware import cpu_supports_bf16, measure_matmul_flops


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    print(f"device {args.device}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"cpu bf16 native: {cpu_supports_bf16()}")
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        runs = [measure_matmul_flops(dtype, args.size, args.seconds, args.device) for _ in range(3)]
        peak = statistics.median(runs)
        print(f"{name}: {peak / 1e9:,.0f} GFLOP/s  (runs: {', '.join(f'{r / 1e9:,.0f}' for r in runs)})"
              f"  ->  trainer.peak_flops={peak:.3g}")


if __name__ == "__main__":
    main()
