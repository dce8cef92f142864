"""What the hardware can do: bf16 support, peak FLOP/s for MFU, loader workers.

MFU only means something against the right peak: the dense matmul rate of the device in
the precision the model trains in. GPU peaks come from Lightning's vendor table
(``get_available_flops``). CPU peaks vary by SKU and core count far more, so the CPU
defaults below are what ``bench/peak_flops.py`` measured on the reference machine; run
it on yours and set ``trainer.peak_flops`` to make MFU exact.
"""

from __future__ import annotations

import os
import time

import torch

# bench/peak_flops.py (2048x2048 matmuls) on the reference machine: 2 cores with AVX-512
# and AMX, torch 2.13 CPU. AMX makes bf16 ~7x fp32 on large matmuls; a 256-wide model's
# small matmuls reach only a fraction of it, which its MFU then shows honestly.
CPU_PEAK_FLOPS = {"fp32": 4.0e11, "bf16": 2.4e12}
def cpu_supports_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run natively instead of being emulated (slower than fp32)."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # an older or non-x86 build
        return False


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto``: bf16 autocast where the hardware runs bf16 natively, else fp32."""
    if precision != "auto":
        return precision
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    if accelerator in ("cpu", "auto"):
        return "bf16-mixed" if cpu_supports_bf16() else "32-true"
    return "32-true"


def _kind(precision: str) -> str:
    return "bf16" if precision.startswith(("bf16", "16")) else "fp32"


def default_peak_flops(accelerator: str, precision: str) -> float | None:
    """Dense peak FLOP/s for MFU; None when the device is unknown (MFU is then not logged)."""
    kind = _kind(precision)
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        # Lightning's table of vendor dense peaks (it tells H100/H200 SXM from PCIe/NVL).
        from lightning.fabric.utilities.throughput import get_available_flops

        dtype = torch.float16 if precision.startswith("16") else torch.bfloat16 if kind == "bf16" else torch.float32
        flops = get_available_flops(torch.device("cuda", torch.cuda.current_device()), dtype)
        return float(flops) if flops else None
    return CPU_PEAK_FLOPS[kind]


def default_num_workers(accelerator: str) -> int:
    """DataLoader workers. Packed token blocks cost next to nothing to collate, so on a CPU
    every worker process would only steal cores from the matmuls; on a GPU a few workers
    keep the host side ahead of the device."""
    if accelerator == "cpu" or not torch.cuda.is_available():
        return 0
    return min(4, max(1, (os.cpu_count() or 2) - 1))


def measure_matmul_flops(dtype: torch.dtype = torch.float32, n: int = 2048, seconds: float = 3.0,
                         device: str = "cpu") -> float:
    """Sustained FLOP/s of a square matmul loop: the practical dense peak of this device."""
    a = torch.randn(n, n, device=device, dtype=dtype)  # (n, n)
    b = torch.randn(n, n, device=device, dtype=dtype)  # (n, n)
    for _ in range(2):  # warm-up: thread pool, oneDNN kernel selection
        a @ b
    iters, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        iters += 1
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return 2.0 * n**3 * iters / (time.perf_counter() - start)
