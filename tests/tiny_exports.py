"""A tiny LM of each architecture, built by the factory and saved as a pretrained export:
what the fine-tuning strategy tests (full, partial, linear_probe, lora) split and wrap
(the ``exported`` fixture in conftest.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from modules.config import ModelConfig
from modules.data.synthetic import generate
from modules.data.tokenization import train_tokenizer
from modules.models.factory import build_lm, lm_config

DATA = generate(seed=5, corpus_documents=120, labeled_train=8, labeled_val=4, labeled_test=4, words_per_topic=8,
                neutral_words=40)
MODEL = ModelConfig(name="test", arch="gpt2", family="causal", n_layer=2, n_embd=32, n_head=2, n_inner=64,
                    max_positions=64, dropout=0.1, n_decoder_layer=None)
FAMILY = {"gpt2": "causal", "bert": "masked", "bart": "seq2seq"}
# Per arch: the classification head, which trains under every strategy.
HEAD = {"gpt2": ("score.",), "bert": ("classifier.", "bert.pooler."), "bart": ("classification_head.",)}


def export_tiny_lm(arch: str, out: Path) -> Path:
    """A tiny, untrained LM of ``arch`` saved under ``out``."""
    tok = train_tokenizer(DATA.corpus["train"], "bpe", 300, family=FAMILY[arch])
    build_lm(lm_config(replace(MODEL, arch=arch), tok), FAMILY[arch]).save_pretrained(str(out))
    return out
