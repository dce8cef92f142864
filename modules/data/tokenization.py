"""Train a tokenizer with the ``tokenizers`` library and turn text into model inputs.

Causal LMs get byte-level BPE (GPT-2 style), masked LMs get WordPiece (BERT style). Both
are wrapped in ``PreTrainedTokenizerFast`` so that ``save_pretrained`` writes them next to
the model and ``AutoTokenizer.from_pretrained`` reads them back in every later stage.
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
from transformers import PreTrainedTokenizerFast

BPE_SPECIAL = {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<pad>"}
WORDPIECE_SPECIAL = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}


def tokenizer_kind_for(family: str, kind: str) -> str:
    """``auto`` means the kind the model family was designed with."""
    if kind != "auto":
        return kind
    return "bpe" if family == "causal" else "wordpiece"


def train_tokenizer(texts: Iterable[str], kind: str, vocab_size: int, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=sorted(set(BPE_SPECIAL.values())),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return PreTrainedTokenizerFast(tokenizer_object=tok, **BPE_SPECIAL)
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(WORDPIECE_SPECIAL.values()),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
        return PreTrainedTokenizerFast(tokenizer_object=tok, **WORDPIECE_SPECIAL)
    raise ValueError(f"unknown tokenizer kind {kind!r} (choices: auto, bpe, wordpiece)")


def pack_for_lm(texts: Dataset, tokenizer: PreTrainedTokenizerFast, block_size: int, family: str) -> Dataset:
    """Tokenize and pack a ``text`` column into ``block_size`` token blocks.

    Packing (concatenate, then cut) wastes no compute on padding. Causal LMs get an EOS
    between documents so the model learns where one ends; masked LMs get [CLS]/[SEP]
    from the tokenizer's post-processor. The ragged tail is dropped.
    """
    eos = [tokenizer.eos_token_id] if family == "causal" else []

    def tokenize(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        ids = tokenizer(batch["text"], add_special_tokens=family == "masked")["input_ids"]
        return {"ids": [x + eos for x in ids]}

    def group(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        flat = [t for ids in batch["ids"] for t in ids]
        n = (len(flat) // block_size) * block_size
        return {"input_ids": [flat[i : i + block_size] for i in range(0, n, block_size)]}

    tokenized = texts.map(tokenize, batched=True, remove_columns=texts.column_names, desc="tokenize")
    return tokenized.map(group, batched=True, batch_size=1000, remove_columns=["ids"], desc=f"pack to {block_size}")


def tokenize_labeled(rows: Dataset, tokenizer: PreTrainedTokenizerFast, max_length: int) -> Dataset:
    """Tokenize a (text, label) dataset for classification; padding happens per batch."""

    def tokenize(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        enc = tokenizer(batch["text"], truncation=True, max_length=max_length)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    return rows.map(tokenize, batched=True, desc="tokenize labeled")
