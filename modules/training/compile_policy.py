"""When to ``torch.compile`` a pretraining run: ``trainer.compile=auto`` (the default).

Compiling costs a fixed time up front (tracing and code generation) and then makes every
step faster, so it pays only on runs long enough to earn the compile time back. ``auto``
compiles when the steps still to run reach ``trainer.compile_min_steps``, whose default is
the break-even measured on the reference machine with a cold compiler cache (the first
compile on a machine; inductor caches generated code on disk, and a warm cache pays back
within a few steps).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

# Steps after which compiling pays back, per accelerator. CPU, measured 2026-12-02 on the
# reference 2-core CPU (AMD EPYC, fp32), gpt2 4x256, context 128, batch 16: a cold compile
# adds 22.6 s to the first step, and the compiled pretrain stage then saves 47 ms per step
# (4,262 -> 4,724 tokens/s), so it breaks even after ~480 steps (docs/BENCHMARKS.md, "When
# compiling pays"). GPU: not measured (no GPU lent yet); the CPU figure is kept, which errs
# towards not compiling, since a GPU's per-step gain is larger relative to its compile time.
DEFAULT_MIN_STEPS: dict[str, int] = {"cpu": 500, "gpu": 500}


@dataclass(frozen=True)
class CompileDecision:
    compile: bool
    min_steps: int | None  # the threshold auto compared against; None when the setting was explicit
    reason: str  # one line for the log: why it compiles or not

    def params(self) -> dict[str, str]:
        """What the stage records next to the config's ``trainer.compile``."""
        out = {"trainer.compiled": str(self.compile).lower()}
        if self.min_steps is not None:
            out["trainer.compile_min_steps_used"] = str(self.min_steps)
        return out


def _compiler_missing(accelerator: str) -> str | None:
    """Why inductor could not generate code here, or None: on a CPU it needs a C++ compiler
    (``$CXX``, else g++), on a GPU triton."""
    if accelerator == "gpu":
        from torch.utils._triton import has_triton

        return None if has_triton() else "triton is not installed"
    cxx = os.environ.get("CXX", "g++")
    return None if shutil.which(cxx) else f"no C++ compiler ({cxx}) on PATH"


def decide_compile(setting: bool | str, steps_to_run: int, accelerator: str,
                   min_steps: int | None = None) -> CompileDecision:
    """``setting`` is ``trainer.compile`` (true, false or "auto"); ``steps_to_run`` the steps this
    attempt trains (after a resume, only those left)."""
    if setting is True or setting is False:
        return CompileDecision(setting, None, f"trainer.compile={str(setting).lower()}")
    threshold = min_steps if min_steps is not None else DEFAULT_MIN_STEPS.get(accelerator, DEFAULT_MIN_STEPS["cpu"])
    if steps_to_run < threshold:
        return CompileDecision(False, threshold, f"auto: {steps_to_run} steps to run < trainer.compile_min_steps "
                                                 f"{threshold}, compiling would not pay back")
    missing = _compiler_missing(accelerator)
    if missing:
        return CompileDecision(False, threshold, f"auto: {missing}, training eager")
    return CompileDecision(True, threshold, f"auto: {steps_to_run} steps to run >= trainer.compile_min_steps "
                                            f"{threshold}")
