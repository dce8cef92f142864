"""The seeded LM collator works outside the main process (a deployed Prefect flow run)."""

from __future__ import annotations

import multiprocessing as mp

import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import PreTrainedTokenizerFast

from modules.data.datamodules import lm_collator


def _tokenizer() -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[MASK]", *(f"w{i}" for i in range(40))])}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", mask_token="[MASK]")


def test_seeded_masked_collator_runs_in_a_spawned_process(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prefect runs a deployed flow run in a spawned process: not "MainProcess", and no
    # DataLoader worker info with num_workers=0. transformers' own check raised there.
    monkeypatch.setattr(mp.current_process(), "name", "SpawnProcess-1")
    tok = _tokenizer()
    examples = [{"input_ids": list(range(3, 43))} for _ in range(4)]
    first = lm_collator(tok, "masked", mlm_probability=0.3, seed=7)(examples)
    again = lm_collator(tok, "masked", mlm_probability=0.3, seed=7)(examples)
    assert (first["labels"] != -100).any()  # something was masked
    assert first["labels"].equal(again["labels"]) and first["input_ids"].equal(again["input_ids"])  # seeded
