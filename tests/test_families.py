"""The three model families: BART text infilling, per-arch configs, one tiny pretrain
step per family, and a whole tiny pipeline for the seq2seq family."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import tiny_overrides

from modules.config import ModelConfig
from modules.data.denoising import DataCollatorForTextInfilling, infill_spans
from modules.data.synthetic import generate
from modules.data.tokenization import train_tokenizer
from pipelines.config.compose import compose

DATA = generate(seed=5, corpus_documents=120, labeled_train=8, labeled_val=4, labeled_test=4, words_per_topic=8,
                neutral_words=40)


@pytest.fixture(scope="module")
def bart_tok():
    return train_tokenizer(DATA.corpus["train"], "bpe", 300, family="seq2seq")


def _segments(corrupted: list[int], mask_id: int) -> list[list[int]]:
    out: list[list[int]] = [[]]
    for t in corrupted:
        if t == mask_id:
            out.append([])
        else:
            out[-1].append(t)
    return out


# --- text infilling ---------------------------------------------------------------------

def test_infilling_masks_mask_ratio_in_spans_of_one_mask_each(bart_tok) -> None:
    n = 3000
    original = list(range(10, 10 + n))  # distinct ids, none of them special
    collate = DataCollatorForTextInfilling(bart_tok, mask_ratio=0.3, poisson_lambda=3.0, seed=7)
    batch = collate([{"input_ids": original}])
    src = batch["input_ids"][0].tolist()
    mask = bart_tok.mask_token_id
    n_masks = src.count(mask)
    kept = [t for t in src if t != mask]
    assert 1 - len(kept) / n == pytest.approx(0.3, abs=1e-3)  # exactly round(0.3 n) masked
    # One mask per span: never two masks in a row, and every kept stretch between two masks
    # is a contiguous, in-order piece of the original (nothing else was dropped or moved).
    assert all(not (a == mask and b == mask) for a, b in zip(src, src[1:], strict=False))
    assert kept == sorted(kept)
    for seg in (s for s in _segments(src, mask) if s):
        assert seg == list(range(seg[0], seg[0] + len(seg)))
    # Poisson(3) spans: about 0.3 n / 3 of them (length-0 insertions included).
    assert 0.75 * n * 0.3 / 3 < n_masks < 1.25 * n * 0.3 / 3
    assert batch["labels"][0].tolist() == original


def test_zero_length_spans_insert_a_mask() -> None:
    rng = np.random.default_rng(0)
    spans = [s for _ in range(200) for s in infill_spans(60, 0.3, 3.0, rng)]
    assert any(length == 0 for _, length in spans)
    for _ in range(50):
        sp = infill_spans(60, 0.3, 3.0, rng)
        assert sum(length for _, length in sp) == 18
        ends = [s + length for s, length in sp]
        assert all(e < s for e, (s, _) in zip(ends, sp[1:], strict=False))  # non-touching
        assert ends[-1] <= 60


def test_infilling_pads_inputs_and_labels_and_is_seeded(bart_tok) -> None:
    feats = [{"input_ids": list(range(10, 74))}, {"input_ids": list(range(100, 140))}]
    a = DataCollatorForTextInfilling(bart_tok, seed=3)(feats)
    b = DataCollatorForTextInfilling(bart_tok, seed=3)(feats)
    c = DataCollatorForTextInfilling(bart_tok, seed=4)(feats)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["input_ids"], c["input_ids"])
    assert a["labels"].shape == (2, 64) and a["labels"][1, 40:].eq(-100).all()
    assert a["labels"][1, :40].tolist() == list(range(100, 140))
    pad = a["attention_mask"] == 0
    assert a["input_ids"][pad].eq(bart_tok.pad_token_id).all() and a["attention_mask"][0].all()
    # Unseeded: follows torch's global RNG, so seed_everything makes training reproducible.
    unseeded = DataCollatorForTextInfilling(bart_tok)
    torch.manual_seed(1)
    x = unseeded(feats)["input_ids"]
    torch.manual_seed(1)
    assert torch.equal(x, unseeded(feats)["input_ids"])


# --- configs and models -----------------------------------------------------------------

MODEL = ModelConfig(name="test", arch="gpt2", family="causal", n_layer=2, n_embd=32, n_head=2, n_inner=64,
                    max_positions=64, dropout=0.0, n_decoder_layer=None)


@pytest.mark.parametrize("arch,family", [("gpt2", "causal"), ("bert", "masked"), ("bart", "seq2seq")])
def test_lm_config_and_build_for_each_arch(arch: str, family: str) -> None:
    from modules.models.factory import build_lm, lm_config

    tok = train_tokenizer(DATA.corpus["train"], "bpe", 300, family=family)
    cfg = lm_config(replace(MODEL, arch=arch, n_decoder_layer=3 if arch == "bart" else None), tok)
    model = build_lm(cfg, family)
    assert model.config.model_type == arch and model.config.vocab_size == len(tok)
    assert model.config._attn_implementation == "sdpa"
    if arch == "bart":
        assert (cfg.encoder_layers, cfg.decoder_layers, cfg.d_model) == (2, 3, 32)
        assert cfg.encoder_attention_heads == cfg.decoder_attention_heads == 2
        assert cfg.encoder_ffn_dim == cfg.decoder_ffn_dim == 64
        assert (cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id) == (tok.pad_token_id, tok.bos_token_id,
                                                                           tok.eos_token_id)
        assert cfg.decoder_start_token_id == tok.eos_token_id
        batch = DataCollatorForTextInfilling(tok, seed=0)([{"input_ids": list(range(5, 37))}] * 2)
        with torch.no_grad():
            assert math.isfinite(model(**batch).loss.item())


# --- one tiny pretraining run per family ------------------------------------------------

@pytest.mark.parametrize("preset", ["gpt2_tiny", "bert_tiny", "bart_tiny"])
def test_pretrain_step_per_family(tmp_path: Path, preset: str) -> None:
    from modules.data.prepare import prepare_data
    from modules.evaluation.perplexity import lm_perplexity
    from modules.models.factory import build_classifier, load_lm
    from modules.training.recipes import pretrain_language_model

    cfg = compose(tiny_overrides(tmp_path, f"model={preset}", "pretrain.max_steps=2", "pretrain.val_every_n_steps=2"))
    family = cfg.model.family
    prep = tmp_path / "prep"
    prepare_data(prep, cfg.data, cfg.tokenizer, family, cfg.pretrain.block_size, model_cfg=cfg.model)
    result = pretrain_language_model(prep, tmp_path / "out", cfg.model, cfg.pretrain, cfg.trainer, seed=0)
    assert result.steps == 2 and math.isfinite(result.metrics["val/loss"])
    load_lm(result.hf_model, family)
    ppl = lm_perplexity(result.hf_model, prep / "lm", family, batch_size=8, max_batches=2)
    assert ppl["tokens"] > 0 and 1 < ppl["perplexity"] < 1e6
    # The export fine-tunes: a classifier forward on tokenized labeled rows works.
    from datasets import load_from_disk
    from transformers import AutoTokenizer, DataCollatorWithPadding

    from modules.tasks import get_task

    tok = AutoTokenizer.from_pretrained(result.hf_model)
    raw = load_from_disk(str(prep / "labeled"))["train"].select(range(4))
    rows = get_task("classification").tokenize(raw, tok, family, cfg.finetune.max_length, cfg.finetune)
    batch = DataCollatorWithPadding(tok)([{"input_ids": r["input_ids"], "attention_mask": r["attention_mask"]}
                                          for r in rows])
    if family == "seq2seq":  # BartForSequenceClassification pools the hidden state at the one final EOS
        assert all(r["input_ids"][-1] == tok.eos_token_id and r["input_ids"].count(tok.eos_token_id) == 1
                   for r in rows)
    clf = build_classifier(result.hf_model, "pretrained", 4)
    assert clf(**batch).logits.shape == (4, 4)


# --- the whole pipeline, seq2seq --------------------------------------------------------

def test_stage_level_run_with_bart_tiny(tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    from pipelines import stages
    from pipelines.stages.common import StageContext

    ctx = StageContext.create(compose(tiny_overrides(tmp_path, "model=bart_tiny")))
    prep = stages.prep(ctx)
    pre = stages.pretrain(ctx, prep)
    tuned = [stages.finetune(ctx, prep, pre, init) for init in ("pretrained", "scratch")]
    ev = stages.evaluate(ctx, prep, pre, tuned)
    assert math.isfinite(pre.metrics["val/loss"])
    for rec in tuned:
        clf = AutoModelForSequenceClassification.from_pretrained(f"{rec.path}/hf_model")
        assert type(clf).__name__ == "BartForSequenceClassification"
        assert 0.0 <= rec.metrics["test/accuracy"] <= 1.0
    metrics: dict[str, Any] = ctx.tracker.client.get_run(ev.run_id).data.metrics
    assert metrics["val/perplexity"] > 1 and "test/accuracy/pretrained" in metrics


# --- config checks ----------------------------------------------------------------------

@pytest.mark.parametrize("overrides,key", [
    (["tokenizer=pretrained"], "tokenizer.path"),
    (["model=gpt2_tiny", "model.n_decoder_layer=2"], "model.n_decoder_layer"),
    (["model=bart_tiny", "pretrain.mask_ratio=1.0"], "pretrain.mask_ratio"),
    (["model=bart_tiny", "pretrain.poisson_lambda=0"], "pretrain.poisson_lambda"),
    (["model=bart_tiny", "model.arch=gpt2"], "model.family"),
])
def test_family_config_errors_name_the_key(tmp_path: Path, overrides: list[str], key: str) -> None:
    from pipelines.errors import ConfigError

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
        compose(tiny_overrides(tmp_path, *overrides))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("preset", ["gpt2_small", "bert_small", "bart_small", "bart_tiny"])
def test_presets_compose_and_take_overrides(tmp_path: Path, preset: str) -> None:
    cfg = compose([f"model={preset}", "model.n_layer=3", "model.n_embd=96", f"paths.home={tmp_path}"])
    assert cfg.model.name == preset and (cfg.model.n_layer, cfg.model.n_embd) == (3, 96)
