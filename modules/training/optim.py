"""Optimizer and schedule shared by pretraining and fine-tuning."""

from __future__ import annotations

import torch
from torch import nn
from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup


def adamw_with_schedule(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    warmup_steps: int,
    total_steps: int,
    schedule: str = "cosine",
    fused: bool = True,
) -> dict:
    """AdamW with weight decay on matrices only (not biases/LayerNorm), per-step schedule.

    Fused by default: on all-MiniLM-L6-v2's 22.7M parameters a CPU step of the foreach
    AdamW takes 111 ms against the fused one's 17 ms, on fine-tuning steps of 0.35-0.85 s
    (SST-2, batch 32). Only a caller that clips through Lightning under a grad scaler must pass
    ``fused=False`` (Lightning refuses to clip gradients a fused optimizer unscales itself).
    Returned in the dict form Lightning's ``configure_optimizers`` accepts.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.95),
        # fused: one kernel per step (the transformers Trainer's default on torch >= 2.8).
        fused=fused and all(p.device.type in ("cpu", "cuda") for p in params),
    )
    make = get_cosine_schedule_with_warmup if schedule == "cosine" else get_linear_schedule_with_warmup
    scheduler = make(optimizer, num_warmup_steps=min(warmup_steps, total_steps), num_training_steps=total_steps)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
