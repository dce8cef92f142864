"""Train a tokenizer with the ``tokenizers`` library (or reuse a pretrained one) and turn
text into model inputs.

Two independent choices, as in the course material: the *algorithm* (``tokenizer.kind``:
byte-level BPE as GPT-2/BART, WordPiece as BERT, Unigram as SentencePiece/T5/ALBERT) and
the *special tokens*, which follow the model family because the objective needs them:

- causal:  ``<|endoftext|>`` (bos/eos/unk, GPT-2) + ``<pad>``; no post-processor (packing
  puts one EOS between documents).
- masked:  ``[PAD] [UNK] [CLS] [SEP] [MASK]``, post-processor ``[CLS] $A [SEP]`` (BERT).
- seq2seq: ``<s> <pad> </s> <unk> <mask>``, post-processor ``<s> $A </s>`` (BART).

Trained tokenizers are wrapped in ``PreTrainedTokenizerFast`` so ``save_pretrained`` writes
them next to the model and ``AutoTokenizer.from_pretrained`` reads them back in every
later stage. ``kind=pretrained`` loads an existing tokenizer instead and checks that it
has what the family needs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from datasets import Dataset
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from modules.config import ModelConfig, TokenizerConfig
from modules.data.errors import DataError
from modules.data.tokenizer_kinds import TRAINED_KINDS, pretrained_tokenizer_path, tokenizer_kind_for

CAUSAL_SPECIAL = {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                  "pad_token": "<pad>"}
MASKED_SPECIAL = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                  "mask_token": "[MASK]"}
SEQ2SEQ_SPECIAL = {"bos_token": "<s>", "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>",
                   "mask_token": "<mask>"}
FAMILY_SPECIAL = {"causal": CAUSAL_SPECIAL, "masked": MASKED_SPECIAL, "seq2seq": SEQ2SEQ_SPECIAL}
# Vocabulary order of the special tokens (ids 0..n-1); BART's order for seq2seq.
_SPECIAL_ORDER = {
    "causal": ["<pad>", "<|endoftext|>"],
    "masked": list(MASKED_SPECIAL.values()),
    "seq2seq": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
}

# The family each algorithm is classically paired with: the specials when none is given.
_CLASSIC_FAMILY = {"bpe": "causal", "wordpiece": "masked", "unigram": "seq2seq"}


def _post_processor(tok: Tokenizer, family: str) -> None:
    """Frame every encoded text the way the family's models were pretrained."""
    if family == "masked":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
        )
    elif family == "seq2seq":
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
            special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))],
        )


def train_tokenizer(texts: Iterable[str], kind: str, vocab_size: int, min_frequency: int = 2,
                    family: str | None = None) -> PreTrainedTokenizerFast:
    """Train ``kind`` on ``texts`` with the special tokens of ``family``.

    ``family`` None: the family the algorithm is classically paired with (bpe: causal,
    wordpiece: masked, unigram: seq2seq).
    """
    if kind not in TRAINED_KINDS:
        raise ValueError(f"unknown tokenizer kind {kind!r} to train (choices: {', '.join(TRAINED_KINDS)})")
    family = family or _CLASSIC_FAMILY[kind]
    special = FAMILY_SPECIAL[family]
    order = _SPECIAL_ORDER[family]
    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer: Any = trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=order,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
        )
    elif kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=special["unk_token"]))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                            special_tokens=order, show_progress=False)
    else:  # unigram, SentencePiece style: NFKC, whitespace kept as "▁" inside the pieces
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        # Unigram has no min_frequency; the EM pruning decides what stays.
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=order,
                                          unk_token=special["unk_token"], show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    _post_processor(tok, family)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **special)


def load_pretrained_tokenizer(path: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """A checkpoint's tokenizer (local dir or hub id), as one-line ``DataError`` on failure."""
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:  # OSError offline / not found, ValueError for remote code, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"tokenizer.kind=pretrained: cannot load a tokenizer from {path!r} "
                        f"(not a local tokenizer dir, and the hub is offline or has no such id: {first})") from exc


def fit_to_family(tokenizer: PreTrainedTokenizerBase, family: str, kind: str) -> PreTrainedTokenizerBase:
    """Check a (pretrained) tokenizer has what the family's objective needs; fail in one line.

    A missing pad token is added (``<pad>``, a new id) rather than aliased to EOS: the
    causal collator turns pad positions into -100, which would hide every EOS.
    """
    need = {"causal": ["eos_token"], "masked": ["mask_token"], "seq2seq": ["mask_token", "eos_token"]}[family]
    why = {"eos_token": "an EOS token to separate documents", "mask_token": "a mask token for its objective"}
    for attr in need:
        if getattr(tokenizer, attr, None) is None:
            raise DataError(f"tokenizer.kind={kind}: the tokenizer has no {attr}, but family={family} needs "
                            f"{why[attr]} (train one instead: tokenizer.kind=bpe|wordpiece|unigram)")
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": "<pad>"})
    return tokenizer


def make_tokenizer(texts: Iterable[str], tokenizer_cfg: TokenizerConfig, family: str,
                   model_cfg: ModelConfig | None = None) -> tuple[PreTrainedTokenizerBase, str]:
    """The tokenizer the config asks for, and its resolved kind."""
    init = model_cfg.init if model_cfg else "scratch"
    kind = tokenizer_kind_for(family, tokenizer_cfg.kind, init)
    if kind == "pretrained":
        path = pretrained_tokenizer_path(tokenizer_cfg, model_cfg)
        tok = load_pretrained_tokenizer(path, bool(model_cfg and model_cfg.trust_remote_code))
        return fit_to_family(tok, family, kind), kind
    tok = train_tokenizer(texts, kind, tokenizer_cfg.vocab_size, tokenizer_cfg.min_frequency, family)
    return tok, kind


def _separator(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    sep = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    return [sep] if sep is not None else []


def pack_for_lm(texts: Dataset, tokenizer: PreTrainedTokenizerBase, block_size: int, family: str) -> Dataset:
    """Tokenize and pack a ``text`` column into ``block_size`` token blocks.

    Packing (concatenate, then cut) wastes no compute on padding. Causal LMs get an EOS
    between documents so the model learns where one ends. Masked and seq2seq LMs get each
    document framed by the tokenizer's post-processor ([CLS] … [SEP] for BERT, <s> … </s>
    for BART), the same framing their fine-tuning inputs have; the seq2seq denoising
    collator then corrupts each block and the decoder reconstructs it whole, so a block
    spanning two documents teaches the boundary too (as BART's document packing does).
    A pretrained tokenizer whose post-processor adds nothing gets an EOS/SEP appended.
    The ragged tail is dropped.
    """
    framed = family != "causal" and tokenizer.num_special_tokens_to_add() > 0
    tail = [] if framed else _separator(tokenizer)

    def tokenize(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        ids = tokenizer(batch["text"], add_special_tokens=framed)["input_ids"]
        return {"ids": [x + tail for x in ids]}

    def group(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        flat = [t for ids in batch["ids"] for t in ids]
        n = (len(flat) // block_size) * block_size
        return {"input_ids": [flat[i : i + block_size] for i in range(0, n, block_size)]}

    tokenized = texts.map(tokenize, batched=True, remove_columns=texts.column_names, desc="tokenize")
    return tokenized.map(group, batched=True, batch_size=1000, remove_columns=["ids"], desc=f"pack to {block_size}")


def tokenize_labeled(rows: Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int,
                     family: str | None = None) -> Dataset:
    """Tokenize a (text, label) dataset for classification; padding happens per batch.

    family=seq2seq: BartForSequenceClassification reads the hidden state at the last EOS
    and requires the same number of EOS in every row, so each row is made to end with
    exactly one EOS (an EOS-looking string inside the text is dropped, a tokenizer whose
    post-processor adds none gets one appended, truncation keeps it).
    """
    eos = tokenizer.eos_token_id

    def one_eos(ids: list[int]) -> list[int]:
        body = [t for t in ids if t != eos]
        return body[: max_length - 1] + [eos]

    def tokenize(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        enc = tokenizer(batch["text"], truncation=True, max_length=max_length)
        ids = enc["input_ids"]
        if family == "seq2seq" and eos is not None:
            ids = [one_eos(x) for x in ids]
            return {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]}
        return {"input_ids": ids, "attention_mask": enc["attention_mask"]}

    return rows.map(tokenize, batched=True, desc="tokenize labeled")
