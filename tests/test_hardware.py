"""Precision and MFU-peak defaults follow the hardware, and say so when they cannot know."""

from __future__ import annotations

from modules.training.hardware import (
    CPU_PEAK_FLOPS,
    cpu_supports_bf16,
    default_num_workers,
    default_peak_flops,
    resolve_precision,
)


def test_explicit_precision_is_kept() -> None:
    assert resolve_precision("32-true", "cpu") == "32-true"
    assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"


def test_auto_precision_on_cpu_follows_native_bf16() -> None:
    expected = "bf16-mixed" if cpu_supports_bf16() else "32-true"
    assert resolve_precision("auto", "cpu") == expected


def test_cpu_peak_matches_the_training_precision() -> None:
    assert default_peak_flops("cpu", "32-true") == CPU_PEAK_FLOPS["fp32"]
    assert default_peak_flops("cpu", "bf16-mixed") == CPU_PEAK_FLOPS["bf16"]
    assert CPU_PEAK_FLOPS["bf16"] > CPU_PEAK_FLOPS["fp32"]


def test_cpu_training_uses_no_loader_workers() -> None:
    assert default_num_workers("cpu") == 0
