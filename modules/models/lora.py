"""finetune.strategy=lora: low-rank adapters (``peft``) on the attention projections.

The pretrained weights stay frozen; each targeted linear layer ``W`` gains a trainable
update ``(alpha / rank) * B @ A`` with ``A`` (rank x in) and ``B`` (out x rank, zero at
start), so training starts from the pretrained model exactly and updates a small share of
the parameters. The task head is new and always trains in full: it goes into peft's
``modules_to_save`` (found as ``modules/models/freeze.py`` finds it: everything outside the
body, plus BERT's pooler). A seq2seq LM has no separate head (GPT-2 and BART tie it to the
embeddings): only the adapters train.

Two exports (:func:`save_lora`): ``adapter/`` (``PeftModel.save_pretrained``: the adapters
and the head, small, applied over the init's weights with ``PeftModel.from_pretrained``) and
``hf_model/``, the adapters merged into the weights (``merge_and_unload``): a plain
transformers model like every other strategy's, so evaluation, predictions and reloading
with ``AutoModelFor...`` read it unchanged.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from torch import nn
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

from modules.config import FinetuneConfig
from modules.models.freeze import HEAD_PARTS_IN_BODY, FreezeReport, StrategyError, transformer_layers

log = logging.getLogger("transferlab")

AUTO = "auto"


@dataclass(frozen=True)
class LoraSettings:
    """The ``finetune.lora_*`` keys: adapter rank, scale numerator, dropout on the adapter's
    input, and which linear layers get one (``auto``: :func:`default_targets`)."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.1
    target_modules: tuple[str, ...] | str = AUTO

    @classmethod
    def from_config(cls, ft: FinetuneConfig) -> LoraSettings:
        targets = ft.lora_target_modules
        names = targets if targets == AUTO else (targets,) if isinstance(targets, str) else tuple(map(str, targets))
        return cls(ft.lora_rank, ft.lora_alpha, ft.lora_dropout, names)


def default_targets(model_type: str) -> tuple[str, ...]:
    """The layers ``auto`` adapts: peft's per-architecture choice (the attention query and
    value projections: gpt2 ``c_attn``, bert ``query``/``value``, bart ``q_proj``/``v_proj``)."""
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as BY_MODEL_TYPE

    if model_type not in BY_MODEL_TYPE:
        raise StrategyError(f"finetune.strategy=lora: no default target modules for model_type {model_type!r}; "
                            "name them with finetune.lora_target_modules=[...]")
    return tuple(BY_MODEL_TYPE[model_type])


def head_modules(model: PreTrainedModel) -> list[str]:
    """Qualified names of the task head's modules (those with weights of their own): the
    children outside the body, and BERT's pooler. Empty for an LM whose head is tied to the
    embeddings (GPT-2, BART): training a copy of it would untie them and train the embeddings."""
    body = model.base_model
    if body is model:
        return []
    prefix = next(name for name, child in model.named_children() if child is body)
    in_body = {id(p) for p in body.parameters()}
    names = [name for name, child in model.named_children() if child is not body
             and any(True for _ in child.parameters()) and not any(id(p) in in_body for p in child.parameters())]
    return names + [f"{prefix}.{part}" for part in HEAD_PARTS_IN_BODY
                    if isinstance(getattr(body, part, None), nn.Module)]


def _resolve_targets(model: PreTrainedModel, targets: tuple[str, ...] | str) -> list[str]:
    """The target names, each checked to name at least one linear layer of ``model`` (peft
    matches a name against the last components of a module's path)."""
    names = list(default_targets(model.config.model_type)) if targets == AUTO else list(targets)
    linear = {name for name, m in model.named_modules() if isinstance(m, nn.Linear | Conv1D)}
    for target in names:
        if not any(n == target or n.endswith(f".{target}") for n in linear):
            known = sorted({n.rsplit(".", 1)[-1] for n in linear})
            raise StrategyError(f"bad value for 'finetune.lora_target_modules': {target!r} names no linear layer of "
                                f"the {model.config.model_type} model (its linear layers: {', '.join(known)})")
    return names


def check_targets(source: str | Path, targets: tuple[str, ...] | str, trust_remote_code: bool = False) -> None:
    """Before any work: ``targets`` against a weightless (meta-device) body of the architecture
    ``source`` names (a model_type such as ``gpt2``, or a checkpoint dir); StrategyError as in
    :func:`apply_lora`. Layers of a task head are not in the body: :func:`apply_lora` checks those."""
    import torch
    from transformers import AutoConfig, AutoModel

    config = (AutoConfig.from_pretrained(str(source), trust_remote_code=trust_remote_code) if Path(source).is_dir()
              else AutoConfig.for_model(str(source)))
    with torch.device("meta"):
        body = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
    _resolve_targets(body, targets)


def apply_lora(model: PreTrainedModel, settings: LoraSettings) -> tuple[PreTrainedModel, FreezeReport]:
    """Wrap ``model`` in a ``PeftModel`` with adapters on ``settings.target_modules`` and the
    head trainable. Returned typed as the model it wraps: a ``PeftModel`` forwards calls,
    attributes and ``generate`` to it, which is all the training modules use."""
    from peft import LoraConfig, get_peft_model

    total = sum(p.numel() for p in model.parameters())
    n_layers = len(transformer_layers(model.base_model))
    targets = _resolve_targets(model, settings.target_modules)
    # GPT-2's projections are Conv1D (weights stored in x out): peft must transpose them.
    fan_in_fan_out = any(isinstance(m, Conv1D) for n, m in model.named_modules()
                         if any(n == t or n.endswith(f".{t}") for t in targets))
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=targets, modules_to_save=head_modules(model) or None,
                        fan_in_fan_out=fan_in_fan_out, bias="none")
    with warnings.catch_warnings():  # peft's own use of a transformers API it deprecated
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        wrapped = get_peft_model(model, config)
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    return cast(PreTrainedModel, wrapped), FreezeReport("lora", trainable, total, n_layers, n_layers)


def save_lora(model: PreTrainedModel, hf_dir: Path, adapter_dir: Path | None) -> int | None:
    """Write the adapter to ``adapter_dir`` (skipped when None) and the merged model to
    ``hf_dir``; returns the adapter's size on disk in bytes (None when not written).

    ``model`` is the ``PeftModel`` from :func:`apply_lora`; merging folds the adapters into
    its wrapped model in place, so the adapter is saved first."""
    from peft import PeftModel

    assert isinstance(model, PeftModel), "save_lora takes the model apply_lora returned"
    size = None
    if adapter_dir is not None:
        model.save_pretrained(str(adapter_dir))
        size = sum(f.stat().st_size for f in adapter_dir.rglob("*") if f.is_file())
    merged = model.merge_and_unload()
    assert isinstance(merged, PreTrainedModel)
    merged.save_pretrained(str(hf_dir))
    return size
