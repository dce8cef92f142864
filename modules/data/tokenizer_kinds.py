"""The tokenizer kinds and what each needs, importable without torch or ``tokenizers``.

Config validation (``pipelines/config/compose.py``) checks ``tokenizer.kind`` and the
smallest honourable ``tokenizer.vocab_size`` from here, and ``modules/data/tokenization.py``
trains with the same table, so ``kind=auto`` means one thing everywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modules.data.errors import DataError

if TYPE_CHECKING:
    from modules.config import ModelConfig, TokenizerConfig

TOKENIZER_KINDS = ("auto", "bpe", "wordpiece", "unigram", "pretrained")
TRAINED_KINDS = ("bpe", "wordpiece", "unigram")
# kind=auto from scratch: the kind the family was designed with (BPE for GPT-2 and BART,
# WordPiece for BERT); with a model.init checkpoint, auto is the checkpoint's own tokenizer.
AUTO_KIND = {"causal": "bpe", "masked": "wordpiece", "seq2seq": "bpe"}
# Special tokens each family's trained tokenizer adds (modules/data/tokenization.py _SPECIAL_ORDER),
# and the alphabet a tokenizer kind needs on top: byte-level BPE starts from all 256 bytes;
# WordPiece and Unigram from the corpus's characters (Unigram fails outright when they do not
# fit), for which 64 is a floor that covers letters, digits and punctuation.
SPECIAL_TOKENS = {"causal": 2, "masked": 5, "seq2seq": 5}
ALPHABET = {"bpe": 256, "wordpiece": 64, "unigram": 64}


def trained_kind(kind: str, family: str) -> str:
    """The kind a scratch tokenizer is trained as: ``auto`` resolved for the family."""
    return AUTO_KIND.get(family, "bpe") if kind == "auto" else kind


def min_vocab_size(kind: str, family: str) -> int | None:
    """The smallest ``tokenizer.vocab_size`` a trained tokenizer can honour: its special
    tokens plus its alphabet (None: a pretrained tokenizer brings its own vocabulary)."""
    kind = trained_kind(kind, family)
    if kind not in ALPHABET:
        return None
    return ALPHABET[kind] + SPECIAL_TOKENS[family]


def tokenizer_kind_for(family: str, kind: str, init: str = "scratch") -> str:
    """``auto``: the checkpoint's own tokenizer when ``model.init`` is not scratch,
    otherwise the kind the family was designed with (BPE for GPT-2 and BART, WordPiece for
    BERT)."""
    if kind != "auto":
        return kind
    if init not in ("scratch", "", None):
        return "pretrained"
    return AUTO_KIND[family]


def pretrained_tokenizer_path(tokenizer_cfg: TokenizerConfig, model_cfg: ModelConfig | None) -> str:
    """Where ``kind=pretrained`` loads from: ``tokenizer.path``, else model.init's checkpoint."""
    path = tokenizer_cfg.path or (model_cfg.init_path if model_cfg else None)
    if not path and model_cfg and model_cfg.init not in (None, "", "scratch"):
        path = model_cfg.init
    if not path:
        raise DataError("tokenizer.kind=pretrained needs tokenizer.path (a local dir or hub id) "
                        "or a model.init checkpoint")
    return str(path)
