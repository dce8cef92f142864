"""Callbacks: throughput/MFU metrics and a quiet progress line for orchestrated runs."""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any

import lightning as L
import torch

log = logging.getLogger("transferlab")


def flops_per_token(n_params: int, n_layer: int, n_embd: int, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward), as in the PaLM appendix / nanoGPT.

    6 * N for the matmuls over N parameters (``matmul_parameters``: the non-embedding ones
    and the output head), plus attention's 12 * L * H * T term, which N does not count.
    """
    return 6.0 * n_params + 12.0 * n_layer * n_embd * seq_len


class ThroughputMonitor(L.Callback):
    """Logs ``train/tokens_per_sec`` and ``train/mfu`` every ``every_n_steps`` steps.

    Counting is host-side (``numel`` of the batch), so nothing syncs per step; on a GPU one
    synchronize per window makes the window's wall time cover the work it counts.
    MFU = achieved model FLOPs/s over ``peak_flops`` (the device's dense peak); with no
    known peak (an unlisted GPU and no ``trainer.peak_flops``) MFU is not logged rather than guessed.
    """

    def __init__(self, flops_per_token: float, peak_flops: float | None, every_n_steps: int = 10) -> None:
        self.flops_per_token, self.peak_flops, self.every = flops_per_token, peak_flops, every_n_steps
        self._tokens = 0
        self._t0: float | None = None
        self.history: list[float] = []  # tokens/s of each completed window

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._tokens += int(batch["input_ids"].numel())  # (B, T)
        if trainer.global_step % self.every or self._t0 is None:
            return
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - self._t0
        tps = self._tokens / max(elapsed, 1e-9)
        self.history.append(tps)
        pl_module.log("train/tokens_per_sec", tps, on_step=True, on_epoch=False)
        if self.peak_flops:
            pl_module.log("train/mfu", tps * self.flops_per_token / self.peak_flops, on_step=True, on_epoch=False)
        self._tokens, self._t0 = 0, time.perf_counter()

    def steady_tokens_per_sec(self) -> float | None:
        """Median window throughput, leaving out the first window (allocator and cache warm-up)."""
        windows = self.history[1:] or self.history
        return float(statistics.median(windows)) if windows else None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Validation time is not training throughput: restart the window after it.
        self._tokens, self._t0 = 0, None


def _examples(batch: Any) -> int:
    """Rows in a fine-tuning batch: every task's batch is a dict of (B, ...) tensors."""
    first = batch["input_ids"] if "input_ids" in batch else next(iter(batch.values()))
    return int(first.shape[0])


class ExampleThroughput(L.Callback):
    """Fine-tuning's examples/s, training (validation left out) and the test pass apart.

    Fine-tunes are too short for step windows; this counts whole passes instead, host-side
    (nothing syncs per step). The figures let a fine-tune be compared with another trainer
    on the same data (``bench/finetune_throughput.py``).
    """

    def __init__(self) -> None:
        self.train_examples = self.test_examples = 0
        self.train_seconds = self.test_seconds = 0.0
        self._t0: float | None = None
        self._test_t0 = 0.0

    def _pause(self) -> None:
        if self._t0 is not None:
            self.train_seconds += time.perf_counter() - self._t0
            self._t0 = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.train_examples += _examples(batch)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pause()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.training and not trainer.sanity_checking:  # back to the epoch's training
            self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pause()

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.test_examples, self._test_t0 = 0, time.perf_counter()

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        self.test_examples += _examples(batch)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.test_seconds = time.perf_counter() - self._test_t0

    def metrics(self) -> dict[str, float]:
        out = {}
        if self.train_seconds > 0:
            out["throughput/train_examples_per_sec"] = self.train_examples / self.train_seconds
        if self.test_seconds > 0:
            out["throughput/test_examples_per_sec"] = self.test_examples / self.test_seconds
        return out


class ProgressLog(L.Callback):
    """One log line every N steps instead of a progress bar.

    A bar redraws in place, which Prefect's log capture and CI logs turn into spam; a line
    every N steps reads the same in a terminal, a log file and the Prefect UI.
    """

    def __init__(self, name: str, every_n_steps: int = 50) -> None:
        self.name, self.every = name, every_n_steps
        self._start = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else trainer.estimated_stepping_batches
        log.info("%s: training for %s steps", self.name, int(total))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step % self.every:
            return
        loss = trainer.callback_metrics.get("train/loss")
        loss_s = f"{float(loss):.4f}" if loss is not None else "n/a"
        log.info("%s: step %d  train/loss %s  (%.0fs)", self.name, step, loss_s, time.perf_counter() - self._start)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        shown = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if shown:
            log.info("%s: step %d  %s", self.name, trainer.global_step,
                     "  ".join(f"{k} {v:.4f}" for k, v in sorted(shown.items())))
