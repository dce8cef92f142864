"""Atomic checkpoint writes and the choice of a resume point (fast, no training)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from modules.training.checkpointing import (
    AtomicCheckpointIO,
    checkpoint_problem,
    latest_good_checkpoint,
    set_aside,
)


def _save(io: AtomicCheckpointIO, path: Path, step: int) -> None:
    io.save_checkpoint({"global_step": step, "state_dict": {"w": torch.randn(64, 64)}}, path)


def test_atomic_save_leaves_no_partial_file_when_the_write_fails(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    io = AtomicCheckpointIO()
    target = tmp_path / "step=00000010.ckpt"
    _save(io, target, 10)
    before = target.read_bytes()

    def dies_mid_write(obj, fh, *args, **kwargs):
        fh.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_mid_write)
    with pytest.raises(OSError, match="disk full"):
        _save(io, target, 20)
    assert target.read_bytes() == before  # the old file untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]  # no temp file left


def test_complete_save_is_intact_under_its_final_name(tmp_path: Path) -> None:
    target = tmp_path / "step=00000010.ckpt"
    _save(AtomicCheckpointIO(), target, 10)
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]
    assert checkpoint_problem(target) is None
    assert torch.load(target, weights_only=True)["global_step"] == 10


def test_truncated_newest_checkpoint_falls_back_to_previous_with_warning(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    io = AtomicCheckpointIO()
    for step in (10, 20, 30):
        _save(io, tmp_path / f"step={step:08d}.ckpt", step)
    newest = tmp_path / "step=00000030.ckpt"
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])  # what a kill during a non-atomic write leaves
    with caplog.at_level(logging.WARNING, logger="transferlab"):
        chosen = latest_good_checkpoint(tmp_path)
    assert chosen == tmp_path / "step=00000020.ckpt"
    assert any("step=00000030.ckpt" in r.getMessage() and "unreadable" in r.getMessage() for r in caplog.records)
    set_aside(tmp_path, chosen)
    assert (tmp_path / "step=00000030.ckpt.corrupt").exists()
    assert latest_good_checkpoint(tmp_path) == chosen


def test_corrupted_middle_of_checkpoint_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "step=00000010.ckpt"
    _save(AtomicCheckpointIO(), path, 10)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte inside the tensor data
    path.write_bytes(bytes(data))
    assert checkpoint_problem(path) is not None
    assert latest_good_checkpoint(tmp_path) is None


def test_no_checkpoint_means_no_resume(tmp_path: Path) -> None:
    assert latest_good_checkpoint(tmp_path / "missing") is None
    (tmp_path / "last.ckpt").write_bytes(b"not a step checkpoint")
    assert latest_good_checkpoint(tmp_path) is None
