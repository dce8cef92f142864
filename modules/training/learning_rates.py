"""Peak learning rates: the defaults when ``pretrain.lr``/``finetune.lr``/``finetune.checkpoint_lr``
are null, and which of the configured fine-tuning rates a fine-tune runs with.

No torch here: config composition (``pipelines/config/compose.py``) fills the defaults.
"""

from __future__ import annotations

# Peak pretraining LR when pretrain.lr is null. The post-LayerNorm BART stalls at 3e-3
# (val/loss flat at the unigram plateau, ~4.98, for 600 steps) and learns at 1e-3; a
# pretrained checkpoint is adapted gently (CONTINUE_LR, set once model.init resolved).
FAMILY_LR = {"causal": 3e-3, "masked": 3e-3, "seq2seq": 1e-3}
CONTINUE_LR = 1e-4
# How a classifier fine-tunes (modules/models/freeze.py), and its peak LR when finetune.lr is
# null. full: 1e-3, the rate the tiny presets were tuned with (docs/BENCHMARKS.md).
# linear_probe: only the head trains (a logistic regression on fixed features): nothing
# pretrained can be damaged and there are few steps to converge in, so 5x faster.
# partial: in between; the head wants the faster rate, but the unfrozen top layers carry
# pretrained features that a linear-probe-sized step would pull away from.
# lora: the adapters start at zero and move a rank-8 subspace only, so they take the larger
# steps LoRA is usually trained with (1e-3..5e-3 on small models).
STRATEGY_LR = {"full": 1e-3, "partial": 2e-3, "linear_probe": 5e-3, "lora": 3e-3}
# The same for a real pretrained checkpoint (model.init, or an extra entry of finetune.inits):
# a large model trained long on real text is wrecked by 1e-3 (MiniLM on SST-2 sits at the
# majority class); the BERT paper's 2e-5..5e-5 range applies. The new head alone (linear_probe)
# can still learn fast. LoRA on a real checkpoint: 5e-4, ten times full's (the adapters are
# a small, zero-initialised update; the pretrained weights cannot be wrecked, only shifted).
CHECKPOINT_LR = {"full": 5e-5, "partial": 1e-4, "linear_probe": 5e-3, "lora": 5e-4}


def default_pretrain_lr(family: str, continued: bool = False) -> float:
    """``pretrain.lr`` when null: the family's rate from scratch; ``continued`` (pretraining
    goes on from a model.init checkpoint): CONTINUE_LR, since 3e-3 would wreck a trained model."""
    return CONTINUE_LR if continued else FAMILY_LR[family]


def default_finetune_lr(strategy: str, checkpoint: bool) -> float:
    """``finetune.lr``/``finetune.checkpoint_lr`` when null: the strategy's rate, gentler when
    the weights tuned are a real pretrained ``checkpoint`` (not this pipeline's tiny export)."""
    return (CHECKPOINT_LR if checkpoint else STRATEGY_LR)[strategy]


def finetune_lr(lr: float, checkpoint_lr: float, checkpoint: bool) -> float:
    """The configured rate a fine-tune runs with: ``finetune.checkpoint_lr`` when it tunes a
    checkpoint listed in ``finetune.inits`` (its weights are its own, trained long on real
    text), ``finetune.lr`` for this pipeline's pretrained export and scratch."""
    return checkpoint_lr if checkpoint else lr
