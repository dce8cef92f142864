"""Tokenizer training and packing."""

from __future__ import annotations

from datasets import Dataset

from modules.data.synthetic import generate
from modules.data.tokenization import (
    pack_for_lm,
    tokenize_labeled,
    tokenizer_kind_for,
    train_tokenizer,
)

DATA = generate(seed=3, corpus_documents=200, labeled_train=20, labeled_val=4, labeled_test=8, words_per_topic=8,
                neutral_words=40)


def test_auto_kind_follows_the_family() -> None:
    assert tokenizer_kind_for("causal", "auto") == "bpe"
    assert tokenizer_kind_for("masked", "auto") == "wordpiece"
    assert tokenizer_kind_for("masked", "bpe") == "bpe"


def test_bpe_packs_fixed_blocks_with_eos_between_documents() -> None:
    tok = train_tokenizer(DATA.corpus["train"], "bpe", 300)
    assert tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id
    packed = pack_for_lm(Dataset.from_dict({"text": DATA.corpus["train"]}), tok, 16, "causal")
    assert packed.num_rows > 10
    assert all(len(ids) == 16 for ids in packed["input_ids"])
    flat = [t for ids in packed["input_ids"] for t in ids]
    assert flat.count(tok.eos_token_id) >= packed.num_rows * 16 // 200  # one per document


def test_wordpiece_adds_cls_sep_and_round_trips() -> None:
    tok = train_tokenizer(DATA.corpus["train"], "wordpiece", 300)
    text = DATA.labeled["train"][0][0]
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert tok.decode(ids, skip_special_tokens=True).replace(" .", ".") == text.replace(" .", ".")
    labeled = tokenize_labeled(Dataset.from_dict({"text": [t for t, _ in DATA.labeled["train"]],
                                                  "label": [y for _, y in DATA.labeled["train"]]}), tok, 8)
    assert max(len(x) for x in labeled["input_ids"]) <= 8
