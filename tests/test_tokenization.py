"""Tokenizer training and packing."""

from __future__ import annotations

from dataclasses import replace

from datasets import Dataset

from modules.config import ModelConfig, TokenizerConfig
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


# --- kinds x families (issue 3) -------------------------------------------------------

import pytest  # noqa: E402

from modules.data.errors import DataError  # noqa: E402
from modules.data.tokenization import make_tokenizer  # noqa: E402

TOK_CFG = TokenizerConfig(kind="auto", path=None, vocab_size=300, min_frequency=2)


def test_auto_kind_for_seq2seq_and_for_a_checkpoint() -> None:
    assert tokenizer_kind_for("seq2seq", "auto") == "bpe"
    assert tokenizer_kind_for("causal", "auto", init="runs:/abc/hf_model") == "pretrained"
    assert tokenizer_kind_for("causal", "unigram", init="some/dir") == "unigram"


def test_unigram_trains_and_round_trips() -> None:
    tok = train_tokenizer(DATA.corpus["train"], "unigram", 300, family="seq2seq")
    text = DATA.labeled["train"][3][0]
    ids = tok(text)["input_ids"]
    pieces = tok.convert_ids_to_tokens(ids)
    assert pieces[0] == "<s>" and pieces[-1] == "</s>" and pieces[1].startswith("▁")  # Metaspace
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.unk_token == "<unk>" and tok.mask_token == "<mask>"


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "unigram"])
@pytest.mark.parametrize("family", ["causal", "masked", "seq2seq"])
def test_every_trained_kind_has_the_specials_its_family_needs(kind: str, family: str) -> None:
    tok, resolved = make_tokenizer(DATA.corpus["train"], replace(TOK_CFG, kind=kind), family)
    assert resolved == kind
    assert tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id
    if family == "causal":
        assert tok.eos_token_id is not None and tok.mask_token_id is None
    else:
        assert tok.mask_token_id is not None
        packed = pack_for_lm(Dataset.from_dict({"text": DATA.corpus["train"][:40]}), tok, 16, family)
        flat = [t for ids in packed["input_ids"] for t in ids]
        frame = tok.cls_token_id if family == "masked" else tok.bos_token_id
        assert flat.count(frame) >= 30  # one per document, from the post-processor


def test_seq2seq_bpe_is_bart_shaped() -> None:
    tok = train_tokenizer(DATA.corpus["train"], "bpe", 300, family="seq2seq")
    assert tok.convert_ids_to_tokens(list(range(5))) == ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    ids = tok(DATA.labeled["train"][0][0])["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id and ids.count(tok.eos_token_id) == 1


def test_seq2seq_labeled_rows_end_with_exactly_one_eos() -> None:
    tok = train_tokenizer(DATA.corpus["train"], "bpe", 300, family="seq2seq")
    rows = Dataset.from_dict({"text": ["a long text " * 20, "with </s> inside </s>", "short"], "label": [0, 1, 0]})
    out = tokenize_labeled(rows, tok, 8, family="seq2seq")
    for ids, mask in zip(out["input_ids"], out["attention_mask"], strict=True):
        assert len(ids) <= 8 and ids[-1] == tok.eos_token_id and ids.count(tok.eos_token_id) == 1
        assert len(mask) == len(ids)


def test_pretrained_tokenizer_is_reused_from_a_saved_dir(tmp_path) -> None:
    original = train_tokenizer(DATA.corpus["train"], "unigram", 300, family="seq2seq")
    original.save_pretrained(str(tmp_path / "tok"))
    cfg = replace(TOK_CFG, kind="pretrained", path=str(tmp_path / "tok"))
    tok, kind = make_tokenizer(["never", "trained", "on"], cfg, "seq2seq")
    assert kind == "pretrained" and tok.get_vocab() == original.get_vocab()
    text = DATA.labeled["train"][1][0]
    assert tok(text)["input_ids"] == original(text)["input_ids"]
    # tokenizer.path null: model.init's checkpoint dir is the source.
    tok2, kind2 = make_tokenizer([], replace(TOK_CFG, kind="auto"), "seq2seq",
                                 ModelConfig(init=str(tmp_path / "tok"), init_path=None, trust_remote_code=False))
    assert kind2 == "pretrained" and len(tok2) == len(original)


def test_pretrained_tokenizer_without_a_mask_token_fails_for_masked_and_seq2seq(tmp_path) -> None:
    causal = train_tokenizer(DATA.corpus["train"], "bpe", 300, family="causal")
    causal.save_pretrained(str(tmp_path / "gpt"))
    cfg = replace(TOK_CFG, kind="pretrained", path=str(tmp_path / "gpt"))
    for family in ("masked", "seq2seq"):
        with pytest.raises(DataError, match=r"tokenizer.kind=pretrained.*mask_token.*family=" + family) as err:
            make_tokenizer([], cfg, family)
        assert "\n" not in str(err.value)
    tok, _ = make_tokenizer([], cfg, "causal")  # fine for the family it was made for
    assert tok.eos_token_id is not None


def test_pretrained_hub_id_offline_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match=r"tokenizer.kind=pretrained: cannot load .*no-such-org/no-such-tok") as err:
        make_tokenizer([], replace(TOK_CFG, kind="pretrained", path="no-such-org/no-such-tok"), "causal")
    assert "\n" not in str(err.value)
