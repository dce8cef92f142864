"""The tokenizer kinds and what each needs, importable without torch or ``tokenizers``.

Config validation (``pipelines/config/compose.py``) checks ``tokenizer.kind`` and the
smallest honourable ``tokenizer.vocab_size`` from here, and ``modules/data/tokenization.py``
trains with the same table, so ``kind=auto`` means one thing everywhere.
"""

from __future__ import annotations

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
