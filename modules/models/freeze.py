"""Fine-tuning strategies: which parameters of a sequence classifier train.

``full`` trains everything; ``linear_probe`` freezes the body so only the classification
head learns (a probe of what pretraining put into the features); ``partial`` also trains
the top ``k`` transformer layers (and the final norm on top of them).

Found generically rather than per architecture: the *body* is ``model.base_model``
(``transformer`` for GPT-2, ``bert`` for BERT/MiniLM, ``model`` for BART) and the *head*
is everything outside it (``score``, ``classifier``, ``classification_head``), plus BERT's
pooler, which feeds only the classifier and is fresh after MLM-only pretraining. The
*layers* are the ``nn.ModuleList`` s of identical blocks inside the body, bottom to top in
registration order: ``transformer.h``; ``bert.encoder.layer``; for BART
``model.encoder.layers`` then ``model.decoder.layers`` (the decoder sits on top: its last
layer's state at ``</s>`` is what the head reads, so "top k" starts there).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from torch import nn
from transformers import PreTrainedModel

from modules.data.errors import DataError
from modules.models.choices import STRATEGIES

log = logging.getLogger("transferlab")

# Submodules of the body that belong to the head: they only transform the pooled
# representation for the classifier (BERT's dense+tanh over [CLS]).
HEAD_PARTS_IN_BODY = ("pooler",)


class StrategyError(DataError):
    """The checkpoint cannot be split the way ``finetune.strategy`` asks (user input: exit 2)."""


@dataclass
class FreezeReport:
    strategy: str
    trainable_parameters: int
    total_parameters: int
    trainable_layers: int  # transformer layers that train (all of them for ``full``)
    total_layers: int


def transformer_layers(body: nn.Module) -> list[nn.Module]:
    """The body's transformer blocks, bottom to top: every ``nn.ModuleList`` of one block class,
    in registration order, skipping lists nested inside an earlier list's blocks."""
    found: list[tuple[str, nn.ModuleList]] = []
    for name, module in body.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if any(name.startswith(f"{outer}.") for outer, _ in found):
            continue  # e.g. T5's per-block ``layer`` list
        if len({type(m) for m in module}) == 1:
            found.append((name, module))
    return [block for _, lst in found for block in lst]


def _final_norms(body: nn.Module, top: nn.Module) -> list[nn.Module]:
    """Norms applied to the top layer's output: a ``*Norm*`` module that is a direct child
    of the body or of the stack holding ``top`` and is not an embedding norm (GPT-2's
    ``ln_f``; none for the post-LayerNorm BERT and BART)."""
    stacks = [body] + [m for m in body.modules() if any(c is top for lst in m.children()
                                                          if isinstance(lst, nn.ModuleList) for c in lst)]
    norms = [child for stack in stacks for name, child in stack.named_children()
             if "norm" in type(child).__name__.lower() and "embed" not in name]
    return list({id(m): m for m in norms}.values())  # the body can be the stack itself


def apply_strategy(model: PreTrainedModel, strategy: str, trainable_layers: int = 2) -> FreezeReport:
    """Set ``requires_grad`` per ``strategy`` and put frozen parts in eval mode.

    Frozen parts run in eval mode (dropout off) so the features they hand up are fixed, as
    in classic feature extraction; Lightning keeps per-module modes across its train/val
    switches. The head always trains. Raises ``StrategyError`` (one line naming
    ``finetune.strategy``/``finetune.trainable_layers``) for a model it cannot split.
    """
    if strategy not in STRATEGIES:
        raise StrategyError(f"bad value for 'finetune.strategy': {strategy!r} (choices: {', '.join(STRATEGIES)})")
    body = model.base_model
    total = sum(p.numel() for p in model.parameters())
    if body is model:
        raise StrategyError(f"finetune.strategy={strategy}: cannot tell the body from the head of "
                            f"{type(model).__name__}; use finetune.strategy=full")
    layers = transformer_layers(body)
    n_layers = len(layers)
    if strategy == "full":
        model.requires_grad_(True)
        return FreezeReport(strategy, total, total, n_layers, n_layers)

    train_modules: list[nn.Module] = [body.get_submodule(n) for n in HEAD_PARTS_IN_BODY if hasattr(body, n)
                                      and isinstance(getattr(body, n), nn.Module)]
    train_modules += [child for child in model.children() if child is not body]
    k = 0
    if strategy == "partial":
        if not layers:
            raise StrategyError(f"finetune.strategy=partial: cannot find the transformer layers of "
                                f"{type(model).__name__} (model_type {model.config.model_type!r}); "
                                "use finetune.strategy=full or linear_probe")
        k = trainable_layers
        if not 1 <= k <= n_layers:
            raise StrategyError(f"bad value for 'finetune.trainable_layers': {k} (the "
                                f"{model.config.model_type} model has {n_layers} transformer layers)")
        train_modules += layers[-k:] + _final_norms(body, layers[-1])

    model.requires_grad_(False)
    body.eval()
    for module in train_modules:
        module.requires_grad_(True)
        module.train(model.training)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if trainable == 0:
        raise StrategyError(f"finetune.strategy={strategy}: {type(model).__name__} has no classification head "
                            "outside its body; use finetune.strategy=full")
    return FreezeReport(strategy, trainable, total, k, n_layers)
