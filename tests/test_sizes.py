"""modules/models/sizes.py: model size from the config agrees with the model the factory builds."""

from __future__ import annotations

from dataclasses import replace

import pytest

from modules.config import ModelConfig
from modules.models.choices import ARCHS
from modules.models.sizes import estimated_parameters, layer_count

MODEL = ModelConfig(name="test", arch="gpt2", family="causal", n_layer=2, n_embd=32, n_head=2, n_inner=64,
                    max_positions=64, dropout=0.1)


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("n_decoder_layer", [None, 3])
def test_config_sizes_match_the_built_model(arch: str, n_decoder_layer: int | None) -> None:
    from modules.data.synthetic import generate
    from modules.data.tokenization import train_tokenizer
    from modules.models.factory import build_lm, lm_config
    from modules.models.freeze import transformer_layers

    family = ARCHS[arch]
    model_cfg = replace(MODEL, arch=arch, family=family, n_decoder_layer=n_decoder_layer)
    data = generate(seed=5, corpus_documents=60, labeled_train=4, labeled_val=2, labeled_test=2, words_per_topic=8,
                    neutral_words=40)
    tok = train_tokenizer(data.corpus["train"], "bpe", 300, family=family)
    lm = build_lm(lm_config(model_cfg, tok), family)
    assert layer_count(model_cfg) == len(transformer_layers(lm.base_model))  # what trainable_layers counts
    built = sum(p.numel() for p in lm.base_model.parameters())
    # Weights only: biases, norms (and BART's extra position rows) are left out of the estimate.
    assert 0.9 * built <= estimated_parameters(model_cfg, len(tok)) <= built


def test_decoder_depth_defaults_to_the_encoders() -> None:
    bart = replace(MODEL, family="seq2seq", n_decoder_layer=None)
    assert layer_count(bart) == 4 and layer_count(replace(bart, n_decoder_layer=1)) == 3
    assert layer_count(replace(MODEL, family="causal", n_decoder_layer=None)) == 2
    assert estimated_parameters(bart, 100) > estimated_parameters(replace(bart, family="masked"), 100)


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("tied", [True, False])
def test_mfu_counts_the_output_head_once(arch: str, tied: bool) -> None:
    """The head's vocab x width matmul runs at every position whether or not its weight is the
    token embedding's; the FLOP count behind train/mfu must include it exactly once."""
    from modules.data.synthetic import generate
    from modules.data.tokenization import train_tokenizer
    from modules.models.factory import build_lm, count_parameters, lm_config, matmul_parameters

    family = ARCHS[arch]
    data = generate(seed=5, corpus_documents=60, labeled_train=4, labeled_val=2, labeled_test=2, words_per_topic=8,
                    neutral_words=40)
    tok = train_tokenizer(data.corpus["train"], "bpe", 300, family=family)
    config = lm_config(replace(MODEL, arch=arch, family=family), tok)
    config.tie_word_embeddings = tied
    lm = build_lm(config, family)
    head = lm.get_output_embeddings().weight
    assert (head is lm.get_input_embeddings().weight) == tied
    assert head.shape[0] >= len(tok)  # (vocab, width): the matmul that is easy to leave out
    non_embedding = count_parameters(lm)
    assert matmul_parameters(lm) == non_embedding + (head.numel() if tied else 0)
    if not tied:  # an untied head is an ordinary Linear, which the non-embedding count already holds
        assert non_embedding >= head.numel()
