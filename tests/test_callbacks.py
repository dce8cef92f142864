"""Throughput accounting used for train/tokens_per_sec and train/mfu."""

from __future__ import annotations

import time

import lightning as L
import torch
from torch.utils.data import DataLoader

from modules.training.callbacks import ExampleThroughput, ThroughputMonitor, flops_per_token


def test_flops_per_token_counts_matmuls_and_attention() -> None:
    assert flops_per_token(1_000_000, n_layer=2, n_embd=64, seq_len=32) == 6e6 + 12 * 2 * 64 * 32


def test_steady_throughput_skips_the_warmup_window() -> None:
    monitor = ThroughputMonitor(flops_per_token=1.0, peak_flops=1.0)
    assert monitor.steady_tokens_per_sec() is None
    monitor.history = [100.0]
    assert monitor.steady_tokens_per_sec() == 100.0  # one window: nothing to skip
    monitor.history = [1.0, 30.0, 10.0, 20.0]
    assert monitor.steady_tokens_per_sec() == 20.0


class _Tiny(L.LightningModule):
    """One linear layer over dict batches, like a fine-tune's; validation is made slow on purpose."""

    def __init__(self, val_sleep: float) -> None:
        super().__init__()
        self.layer, self.val_sleep = torch.nn.Linear(4, 2), val_sleep

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.layer(batch["input_ids"].float()).sum()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        time.sleep(self.val_sleep)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.layer(batch["input_ids"].float())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader(rows: int, batch: int) -> DataLoader:
    data = [{"input_ids": torch.ones(4, dtype=torch.long)} for _ in range(rows)]
    return DataLoader(data, batch_size=batch)  # (B, 4) batches; the last one short


def test_example_throughput_counts_every_row_and_leaves_validation_out(tmp_path) -> None:
    speed = ExampleThroughput()
    trainer = L.Trainer(max_epochs=2, callbacks=[speed], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=1,
                        default_root_dir=tmp_path)
    val_sleep, val_batches = 0.25, 3
    model = _Tiny(val_sleep)
    trainer.fit(model, _loader(10, 4), _loader(3 * val_batches, 3))
    trainer.test(model, _loader(7, 4), verbose=False)
    assert speed.train_examples == 2 * 10 and speed.test_examples == 7
    # Two epochs of validation slept 1.5 s (the sanity check 0.25 s more); none of it is training
    # time, so training took less than even one epoch's validation.
    assert 0 < speed.train_seconds < val_batches * val_sleep
    metrics = speed.metrics()
    assert metrics["throughput/train_examples_per_sec"] == 20 / speed.train_seconds
    assert metrics["throughput/test_examples_per_sec"] == 7 / speed.test_seconds


def test_example_throughput_reports_nothing_it_did_not_measure() -> None:
    assert ExampleThroughput().metrics() == {}
