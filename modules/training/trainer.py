"""Lightning Trainer construction shared by every training recipe."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import lightning as L
import torch
from lightning.pytorch.loggers import Logger

from modules.config import TrainerConfig
from modules.training.hardware import resolve_precision

if TYPE_CHECKING:
    from lightning.fabric.connector import _PRECISION_INPUT


def quiet_lightning() -> None:
    """Drop start-up chatter and warnings that are noise on a 2-core CPU box."""
    import logging

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*number of training batches.*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")
    # Lightning 2.6 against torch 2.13's pytree API; harmless and not ours to fix.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")


def make_trainer(
    trainer_cfg: TrainerConfig,
    root_dir: str | Path,
    callbacks: list[L.Callback],
    logger: Logger | bool,
    **overrides: Any,
) -> L.Trainer:
    """A Trainer from the ``trainer`` config group plus recipe-specific overrides.

    ``strategy`` and ``num_nodes`` go straight to Lightning, so ``ddp``/``fsdp`` use
    Lightning's own launchers (a subprocess per extra local device when started from a
    script; the ranks torchrun or SLURM started otherwise).
    """
    quiet_lightning()
    if trainer_cfg.num_threads:
        torch.set_num_threads(int(trainer_cfg.num_threads))
    return L.Trainer(
        accelerator=trainer_cfg.accelerator,
        devices=trainer_cfg.devices,
        strategy=trainer_cfg.strategy,
        num_nodes=trainer_cfg.num_nodes,
        # A str to Lightning's Literal: the config admits only Lightning's precision names.
        precision=cast("_PRECISION_INPUT", resolve_precision(trainer_cfg.precision, trainer_cfg.accelerator)),
        deterministic=trainer_cfg.deterministic,
        log_every_n_steps=trainer_cfg.log_every_n_steps,
        default_root_dir=str(root_dir),
        callbacks=callbacks,
        logger=logger,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **overrides,
    )
