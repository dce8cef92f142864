"""modules/training/learning_rates.py: the default peak LRs and which configured rate a fine-tune uses."""

from __future__ import annotations

import pytest

from modules.models.choices import FAMILIES, STRATEGIES
from modules.training.learning_rates import (
    CHECKPOINT_LR,
    CONTINUE_LR,
    FAMILY_LR,
    STRATEGY_LR,
    default_finetune_lr,
    default_pretrain_lr,
    finetune_lr,
)


def test_every_family_and_strategy_has_a_default() -> None:
    assert set(FAMILY_LR) == set(FAMILIES)
    assert set(STRATEGY_LR) == set(CHECKPOINT_LR) == set(STRATEGIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_pretrain_lr_by_family_and_gentler_when_continuing(family: str) -> None:
    assert default_pretrain_lr(family) == FAMILY_LR[family]
    assert default_pretrain_lr(family, continued=True) == CONTINUE_LR < FAMILY_LR[family]
    assert default_pretrain_lr("seq2seq") < default_pretrain_lr("causal")  # BART stalls at 3e-3


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_finetune_lr_by_strategy_and_never_faster_for_a_checkpoint(strategy: str) -> None:
    assert default_finetune_lr(strategy, checkpoint=False) == STRATEGY_LR[strategy]
    assert default_finetune_lr(strategy, checkpoint=True) == CHECKPOINT_LR[strategy]
    assert CHECKPOINT_LR[strategy] <= STRATEGY_LR[strategy]


def test_a_checkpoint_tunes_with_checkpoint_lr() -> None:
    assert finetune_lr(1e-3, 5e-5, checkpoint=True) == 5e-5
    assert finetune_lr(1e-3, 5e-5, checkpoint=False) == 1e-3
