"""How big a model built from scratch is, from the family-neutral ``model`` config alone.

No torch: config validation and the operator's limits (``pipelines/config``) read these
before anything is built.
"""

from __future__ import annotations

from modules.config import ModelConfig


def estimated_parameters(model: ModelConfig, vocab_size: int) -> int:
    """Weights of a model built from scratch: embeddings plus per layer attention (4 d^2) and
    MLP (2 d x inner); a seq2seq decoder layer adds cross-attention (4 d^2 more)."""
    d, inner = model.n_embd, model.n_inner or 4 * model.n_embd
    layer = 4 * d * d + 2 * d * inner
    total = model.n_layer * layer + (vocab_size + model.max_positions) * d
    if model.family == "seq2seq":
        total += (model.n_decoder_layer or model.n_layer) * (layer + 4 * d * d)
    return total


def layer_count(model: ModelConfig) -> int:
    """Transformer layers, bottom to top: a seq2seq model's encoder and then its decoder
    (n_decoder_layer, null: as deep as the encoder), as finetune.trainable_layers counts them."""
    if model.family != "seq2seq":
        return model.n_layer
    return model.n_layer + (model.n_decoder_layer or model.n_layer)
