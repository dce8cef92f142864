"""AdamW runs fused: the pretraining module clips its own gradients to allow it, and fine-tuning does not clip."""

from __future__ import annotations

import torch
from lightning import Trainer
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, GPT2Config

from modules.training.lm import LanguageModelPretraining


def _module(grad_clip: float, fused: bool) -> LanguageModelPretraining:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=16))
    return LanguageModelPretraining(model, lr=1e-3, weight_decay=0.0, warmup_steps=0, max_steps=10,
                                    grad_clip=grad_clip, fused_adamw=fused)


def _grad_norm(module: LanguageModelPretraining) -> float:
    return float(torch.norm(torch.stack([p.grad.norm() for p in module.parameters() if p.grad is not None])))


def _backward(module: LanguageModelPretraining) -> None:
    ids = torch.randint(0, 50, (4, 16))  # (B, T)
    module.model(input_ids=ids, labels=ids).loss.backward()


def test_gradients_are_clipped_before_the_step() -> None:
    module = _module(grad_clip=0.01, fused=True)
    _backward(module)
    assert _grad_norm(module) > 0.01  # a fresh model's gradient is far larger than the clip
    module.on_before_optimizer_step(module.configure_optimizers()["optimizer"])
    assert _grad_norm(module) <= 0.01 * (1 + 1e-4)


def test_no_clip_leaves_gradients_alone() -> None:
    module = _module(grad_clip=0.0, fused=False)
    _backward(module)
    before = _grad_norm(module)
    module.on_before_optimizer_step(module.configure_optimizers()["optimizer"])
    assert _grad_norm(module) == before


def test_fused_adamw_is_requested_and_steps() -> None:
    module = _module(grad_clip=1.0, fused=True)
    opt = module.configure_optimizers()["optimizer"]
    assert opt.defaults["fused"] is True
    assert _module(grad_clip=1.0, fused=False).configure_optimizers()["optimizer"].defaults["fused"] in (False, None)
    _backward(module)
    before = [p.detach().clone() for p in module.parameters()]
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))


def test_fine_tuning_steps_with_a_fused_adamw_over_its_trainable_parameters() -> None:
    """Fine-tuning never clips through Lightning, so its AdamW runs fused (the foreach one
    took MiniLM 111 ms a CPU step, the fused one 17); a frozen body stays out of the optimizer."""
    from modules.training.classification import SequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(
        GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=16, num_labels=3, pad_token_id=0))
    for p in model.transformer.parameters():
        p.requires_grad = False  # a linear probe
    module = SequenceClassification(model, num_labels=3, lr=1e-3, weight_decay=0.01, warmup_ratio=0.1)
    module.trainer = Trainer(max_steps=10, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    opt = module.configure_optimizers()["optimizer"]
    assert opt.defaults["fused"] is True
    stepped = {id(p) for group in opt.param_groups for p in group["params"]}
    assert stepped == {id(p) for p in model.score.parameters()}
