"""Crash-safe Lightning checkpoints: atomic writes, and picking the newest one that loads.

A run killed with SIGKILL (OOM killer, preemption, a closed laptop) can die in the middle
of writing a checkpoint. Lightning's ``_atomic_save`` serialises into memory first but then
writes the bytes straight onto the final path, so a kill during that write leaves a
truncated ``.ckpt`` under the real name. :class:`AtomicCheckpointIO` writes to a temp file
in the same directory, fsyncs it and ``os.replace``\\ s it onto the final name, so a
checkpoint path either holds a complete file or the previous one. Resume still validates
what it finds (:func:`latest_good_checkpoint`), because disks, copies and older runs can
produce bad files too.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

log = logging.getLogger("transferlab")

# Step checkpoints are named ``step=00000040.ckpt`` (ModelCheckpoint's auto-inserted name).
STEP_FILENAME = "{step:08d}"
_STEP_RE = re.compile(r"^step=(\d+)\.ckpt$")


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable: the directory entry itself must reach the disk."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into a temp file, fsync, ``os.replace`` onto the final name."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        final = Path(path)
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(final.parent)


def step_checkpoints(dirpath: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the step checkpoints in ``dirpath``, newest first."""
    if not dirpath.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in dirpath.iterdir() if (m := _STEP_RE.match(p.name))]
    return sorted(found, reverse=True)


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a resume point, or None if it looks complete.

    ``torch.save`` writes a zip archive whose central directory sits at the end of the
    file, so a truncated file fails to open as a zip at all; ``testzip`` then checks every
    member's CRC, which catches corruption in the middle. This reads the file once without
    unpickling anything, far cheaper than ``torch.load`` of the full state.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            if bad is not None:
                return f"member {bad} fails its CRC check"
            if not any(name.endswith("data.pkl") for name in archive.namelist()):
                return "no data.pkl in the archive (not a torch checkpoint)"
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def latest_good_checkpoint(dirpath: Path) -> Path | None:
    """The newest step checkpoint in ``dirpath`` that is intact, or None if there is none.

    A newer one that fails :func:`checkpoint_problem` is skipped with a warning, so a run
    resumes from the previous good checkpoint instead of crashing or starting over. Every
    rank of a distributed run calls this on the same files and reaches the same answer;
    nothing here deletes or renames (see :func:`set_aside`).
    """
    for step, path in step_checkpoints(dirpath):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        log.warning("checkpoint %s (step %d) is unreadable (%s); falling back to the previous one", path, step,
                    problem)
    return None


def set_aside(dirpath: Path, keep: Path | None) -> None:
    """Rename step checkpoints newer than ``keep`` to ``*.corrupt``.

    Left in place, ModelCheckpoint would count them among its newest-N and could delete a
    good checkpoint in their favour. Call from one process only (rank 0).
    """
    keep_step = -1 if keep is None else int(_STEP_RE.match(keep.name).group(1))  # type: ignore[union-attr]
    for step, path in step_checkpoints(dirpath):
        if step > keep_step:
            path.rename(path.with_name(path.name + ".corrupt"))


def step_checkpoint_callback(dirpath: Path, every_n_steps: int, keep: int) -> ModelCheckpoint:
    """Save every ``every_n_steps`` optimizer steps, keeping the newest ``keep`` files.

    Monitoring ``step`` in ``max`` mode makes ModelCheckpoint's top-k the newest k.
    """
    return ModelCheckpoint(dirpath=dirpath, filename=STEP_FILENAME, monitor="step", mode="max",
                           save_top_k=max(1, keep), every_n_train_steps=every_n_steps, save_last=False,
                           save_on_train_epoch_end=False)
