"""Throughput accounting used for train/tokens_per_sec and train/mfu."""

from __future__ import annotations

from modules.training.callbacks import ThroughputMonitor, flops_per_token


def test_flops_per_token_counts_matmuls_and_attention() -> None:
    assert flops_per_token(1_000_000, n_layer=2, n_embd=64, seq_len=32) == 6e6 + 12 * 2 * 64 * 32


def test_steady_throughput_skips_the_warmup_window() -> None:
    monitor = ThroughputMonitor(flops_per_token=1.0, peak_flops=1.0)
    assert monitor.steady_tokens_per_sec() is None
    monitor.history = [100.0]
    assert monitor.steady_tokens_per_sec() == 100.0  # one window: nothing to skip
    monitor.history = [1.0, 30.0, 10.0, 20.0]
    assert monitor.steady_tokens_per_sec() == 20.0
