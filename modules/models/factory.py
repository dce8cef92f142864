"""Architecture + initialisation -> a transformers model.

``model.arch`` says what the network is; where its weights come from (a fresh init or a
pretrained export) is a separate choice, so "the same architecture from scratch" is
literally the pretrained model's config with new random weights.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from modules.config import ModelConfig

# Each family-neutral ``model`` key under its transformers name, per architecture.
# BART: n_layer is the encoder depth, the decoder has n_decoder_layer (null: as deep).
ARCH_KEYS: dict[str, dict[str, tuple[str, ...]]] = {
    "gpt2": {"max_positions": ("n_positions",), "n_embd": ("n_embd",), "n_layer": ("n_layer",),
             "n_head": ("n_head",), "n_inner": ("n_inner",),
             "dropout": ("resid_pdrop", "embd_pdrop", "attn_pdrop")},
    "bert": {"max_positions": ("max_position_embeddings",), "n_embd": ("hidden_size",),
             "n_layer": ("num_hidden_layers",), "n_head": ("num_attention_heads",),
             "n_inner": ("intermediate_size",), "dropout": ("hidden_dropout_prob", "attention_probs_dropout_prob")},
    "bart": {"max_positions": ("max_position_embeddings",), "n_embd": ("d_model",), "n_layer": ("encoder_layers",),
             "n_decoder_layer": ("decoder_layers",),
             "n_head": ("encoder_attention_heads", "decoder_attention_heads"),
             "n_inner": ("encoder_ffn_dim", "decoder_ffn_dim"), "dropout": ("dropout", "attention_dropout")},
}


def lm_config(model_cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    """Translate the family-neutral ``model`` config group into a transformers config."""
    arch = model_cfg.arch
    if arch not in ARCH_KEYS:
        raise ValueError(f"unknown model.arch {arch!r} (choices: {', '.join(sorted(ARCH_KEYS))})")
    values = {**asdict(model_cfg), "n_decoder_layer": model_cfg.n_decoder_layer or model_cfg.n_layer}
    kwargs: dict[str, Any] = {name: values[key] for key, names in ARCH_KEYS[arch].items() for name in names}
    kwargs.update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    if arch in ("gpt2", "bart"):
        kwargs.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    if arch == "bart":
        # BART starts decoding from </s> (decoder_start_token_id = eos, as facebook/bart-*),
        # then predicts <s> x ... </s>: the labels are the whole original block.
        kwargs.update(decoder_start_token_id=tokenizer.eos_token_id, forced_eos_token_id=tokenizer.eos_token_id)
    return AutoConfig.for_model(arch, **kwargs)


# The head each family pretrains with; the transformers Auto class that builds it.
LM_AUTO = {"causal": AutoModelForCausalLM, "masked": AutoModelForMaskedLM, "seq2seq": AutoModelForSeq2SeqLM}


# The transformers loss each family's LM computes (transformers.loss.loss_utils.LOSS_MAPPING).
LOSS_TYPE = {"causal": "ForCausalLM", "masked": "ForMaskedLM", "seq2seq": "ForConditionalGeneration"}


def name_loss(model: PreTrainedModel, family: str) -> PreTrainedModel:
    """Name the model's loss when its class name does not (``GPT2LMHeadModel``).

    transformers then falls back to the same causal loss, but through a ``warning_once``
    inside ``forward``: under ``torch.compile`` that call is a graph break, so the loss
    (logits -> cross-entropy, the largest tensors of a step) ran uncompiled and split the graph.
    """
    if getattr(model, "loss_type", None) is None:
        model.loss_type = LOSS_TYPE[family]
    return model


def build_lm(config: PretrainedConfig, family: str) -> PreTrainedModel:
    """A freshly initialised LM; SDPA attention (GPT-2, BERT and BART all support it)."""
    return name_loss(LM_AUTO[family].from_config(config, attn_implementation="sdpa"), family)


def load_lm_checked(path: str | Path, family: str, trust_remote_code: bool = False
                    ) -> tuple[PreTrainedModel, list[str]]:
    """:func:`load_lm`, plus the names of the weights the checkpoint lacked (started fresh)."""
    model, info = LM_AUTO[family].from_pretrained(str(path), use_safetensors=True,
                                                     trust_remote_code=trust_remote_code, output_loading_info=True)
    name_loss(model, family)
    missing = sorted(info["missing_keys"])
    if missing:
        logging.getLogger("transferlab").warning(
            "%s has no weights for %d tensors of the %s LM (e.g. %s): they start fresh (a new LM head)",
            path, len(missing), family, missing[0])
    return model, missing


def load_lm(path: str | Path, family: str, trust_remote_code: bool = False) -> PreTrainedModel:
    """The family's LM from a saved checkpoint (safetensors only: unpickling can run code).

    A checkpoint saved without the LM head (a bare encoder such as ``BertModel``) gets a
    freshly initialised head; the missing weights are logged as a warning.
    """
    return load_lm_checked(path, family, trust_remote_code)[0]


def fit_vocab(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> bool:
    """Grow the embeddings when the tokenizer has more ids than the checkpoint (prep adds a
    ``<pad>`` to tokenizers without one, e.g. GPT-2's); the new rows start fresh."""
    rows = model.get_input_embeddings().num_embeddings
    assert isinstance(rows, int)  # nn.Module's dynamic attributes type as Tensor | Module
    if len(tokenizer) <= rows:
        return False
    model.resize_token_embeddings(len(tokenizer))
    return True


# Every dropout knob of the supported architectures; a fine-tune sets them all to finetune.dropout.
DROPOUT_KEYS = ("resid_pdrop", "embd_pdrop", "attn_pdrop", "hidden_dropout_prob", "attention_probs_dropout_prob",
                "summary_first_dropout", "dropout", "attention_dropout", "classifier_dropout")


def build_with_head(auto_class: Any, source: str | Path, weights: str, dropout: float | None = None,
                    trust_remote_code: bool = False, **config_overrides: Any) -> PreTrainedModel:
    """``auto_class`` (a transformers Auto class: a task head) on the architecture of the
    checkpoint at ``source``.

    weights="pretrained" loads its weights (a head it lacks is new); weights="scratch" keeps only
    its config, so both differ in nothing but the weights.
    """
    config = AutoConfig.from_pretrained(str(source), trust_remote_code=trust_remote_code, **config_overrides)
    if dropout is not None:
        for key in DROPOUT_KEYS:
            if hasattr(config, key) or key == "classifier_dropout":  # heads read it when set
                setattr(config, key, dropout)
    if weights == "pretrained":
        # from_pretrained returns eval mode; train mode keeps dropout on, as for scratch.
        return auto_class.from_pretrained(str(source), config=config, use_safetensors=True,
                                          trust_remote_code=trust_remote_code).train()
    if weights == "scratch":
        return auto_class.from_config(config, attn_implementation="sdpa", trust_remote_code=trust_remote_code)
    raise ValueError(f"unknown weights {weights!r} (choices: pretrained, scratch)")


def build_classifier(source: str | Path, weights: str, num_labels: int, dropout: float | None = None,
                     trust_remote_code: bool = False) -> PreTrainedModel:
    """A sequence classifier with the architecture of the checkpoint at ``source``."""
    return build_with_head(AutoModelForSequenceClassification, source, weights, dropout, trust_remote_code,
                           num_labels=num_labels)


def build_token_classifier(source: str | Path, weights: str, label_names: list[str], dropout: float | None = None,
                           trust_remote_code: bool = False) -> PreTrainedModel:
    """A per-token tagger (``AutoModelForTokenClassification``), tag names kept in the config."""
    from transformers import AutoModelForTokenClassification

    return build_with_head(AutoModelForTokenClassification, source, weights, dropout, trust_remote_code,
                           num_labels=len(label_names), id2label=dict(enumerate(label_names)),
                           label2id={name: i for i, name in enumerate(label_names)})


def count_parameters(model: PreTrainedModel, non_embedding: bool = True) -> int:
    return model.num_parameters(exclude_embeddings=non_embedding)


def matmul_parameters(model: PreTrainedModel) -> int:
    """The weights every token is multiplied through: the non-embedding ones plus the output head.

    ``num_parameters(exclude_embeddings=True)`` drops a head tied to the token embedding
    (GPT-2, BERT's MLM decoder, tied BART/T5), yet its vocab x width matmul runs at every
    position: a quarter of the FLOPs of a 4-layer, 256-wide model over a 4096 vocabulary.
    nanoGPT's MFU counts it for that reason; an untied head is a Linear and already counted.
    """
    n = count_parameters(model)
    head, embedding = model.get_output_embeddings(), model.get_input_embeddings()
    weight = getattr(head, "weight", None)
    tied = weight is not None and weight is getattr(embedding, "weight", None)
    if tied and isinstance(weight, torch.Tensor):
        n += weight.numel()
    return n
