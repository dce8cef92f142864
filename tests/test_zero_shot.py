"""init=zero_shot: the prompt scorer against hand computations, its config errors, and the
stage next to the fine-tuned inits with the evaluate report."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from conftest import tiny_overrides

from modules.evaluation.zero_shot import verbalize, zero_shot_classify
from pipelines import stages
from pipelines.cli import main
from pipelines.config.compose import compose
from pipelines.errors import UserError
from pipelines.stages.common import StageContext

WORDS = ["<|endoftext|>", "<pad>", "[UNK]", "the", "cat", "car", "sat", "drove", "fast", "Label:", "Topic:",
         "animal", "vehicle", "ice", "hockey", "sports", "text:"]


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<pad>", unk_token="[UNK]")


@pytest.fixture(scope="module")
def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    # A wide initialisation spreads the scores, so the argmax is not decided by rounding.
    return GPT2LMHeadModel(GPT2Config(vocab_size=len(WORDS), n_positions=32, n_embd=16, n_layer=1, n_head=2,
                                      initializer_range=0.5, bos_token_id=0, eos_token_id=0))


def direct_score(model, tokenizer, prompt: str, label: str) -> float:
    """One unpadded sequence per pair, log-probs summed by hand: the reference."""
    start = [tokenizer.eos_token_id]
    p = start + tokenizer(prompt, add_special_tokens=False)["input_ids"]
    v = tokenizer(label, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + v])
    with torch.no_grad():
        lp = model(input_ids=ids).logits[0].log_softmax(-1)  # [T, V]
    return float(sum(lp[len(p) + i - 1, tok] for i, tok in enumerate(v)))


TEXTS = ["the cat sat", "the car drove fast", "cat"]
LABELS = [" animal", " vehicle", " ice hockey"]  # the last one is two tokens


def test_batched_scores_match_a_direct_loop_and_argmax(gpt2, tokenizer) -> None:
    res = zero_shot_classify(gpt2, tokenizer, TEXTS, LABELS, "{text} Label:", batch_size=4)
    assert res.label_tokens == [1, 1, 2]
    assert len(res.scores) == len(TEXTS) and all(len(row) == len(LABELS) for row in res.scores)
    for text, row, pred in zip(TEXTS, res.scores, res.predictions, strict=True):
        expected = [direct_score(gpt2, tokenizer, f"{text} Label:", label) for label in LABELS]
        assert row == pytest.approx(expected, abs=1e-4)
        assert pred == max(range(len(LABELS)), key=expected.__getitem__)
    # Padding is invisible: one pair per batch gives the same scores.
    single = zero_shot_classify(gpt2, tokenizer, TEXTS, LABELS, "{text} Label:", batch_size=1)
    assert sum(single.scores, []) == pytest.approx(sum(res.scores, []), abs=1e-4)


def test_template_is_applied_and_normalize_divides_by_label_length(gpt2, tokenizer) -> None:
    summed = zero_shot_classify(gpt2, tokenizer, TEXTS, LABELS, "text: {text} Topic:")
    assert summed.scores[1][2] == pytest.approx(direct_score(gpt2, tokenizer, "text: the car drove fast Topic:",
                                                             " ice hockey"), abs=1e-4)
    # A different template is a different prompt, hence different scores.
    other = zero_shot_classify(gpt2, tokenizer, TEXTS, LABELS, "{text} Label:")
    assert other.scores[1][2] != pytest.approx(summed.scores[1][2], abs=1e-4)
    mean = zero_shot_classify(gpt2, tokenizer, TEXTS, LABELS, "text: {text} Topic:", normalize=True)
    for s_row, m_row in zip(summed.scores, mean.scores, strict=True):
        assert m_row[:2] == pytest.approx(s_row[:2], abs=1e-5)  # one-token labels: unchanged
        assert m_row[2] == pytest.approx(s_row[2] / 2, abs=1e-5)  # two tokens: halved
        assert m_row[2] > s_row[2]


class NextWordLM(torch.nn.Module):
    """A 'language model' that knows one fact per word: after `cat` comes `animal`, after
    `car` comes `vehicle` (log-odds 5 over every other token)."""

    def __init__(self, follows: dict[int, int], vocab: int) -> None:
        super().__init__()
        self.follows, self.vocab = follows, vocab
        self.dummy = torch.nn.Parameter(torch.zeros(()))
        self.config = SimpleNamespace(n_positions=64)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        logits = torch.zeros(*input_ids.shape, self.vocab)  # [B, T, V]
        for (b, t), tok in zip(torch.cartesian_prod(torch.arange(input_ids.shape[0]),
                                                    torch.arange(input_ids.shape[1])).tolist(),
                               input_ids.flatten().tolist(), strict=True):
            if tok in self.follows:
                logits[b, t, self.follows[tok]] = 5.0
        return SimpleNamespace(logits=logits)


def test_known_answer_with_a_hand_built_lm(tokenizer) -> None:
    ids = {w: i for i, w in enumerate(WORDS)}
    lm = NextWordLM({ids["cat"]: ids["animal"], ids["car"]: ids["vehicle"]}, len(WORDS))
    res = zero_shot_classify(lm, tokenizer, ["the cat", "the car", "cat", "car"], [" animal", " vehicle"], "{text}")
    assert res.predictions == [0, 1, 0, 1]
    # log p(animal | cat) = 5 - log(e^5 + V - 1); the wrong label gets -log(e^5 + V - 1).
    z = torch.logsumexp(torch.tensor([5.0] + [0.0] * (len(WORDS) - 1)), 0).item()
    assert res.scores[0] == pytest.approx([5 - z, -z], abs=1e-5)


def test_verbalizers_default_to_spaced_label_names_and_must_match_the_labels(gpt2, tokenizer) -> None:
    assert verbalize(["sports", "cat"], None) == [" sports", " cat"]
    assert verbalize(["a", "b"], ["animal", "vehicle"]) == ["animal", "vehicle"]
    with pytest.raises(ValueError, match="2 labels"):
        verbalize(["a", "b"], ["x"])
    with pytest.raises(ValueError, match="placeholder"):
        zero_shot_classify(gpt2, tokenizer, TEXTS, LABELS, "no placeholder")


@pytest.mark.parametrize("overrides, must_mention", [
    (["model=bert_tiny", "finetune.inits=[pretrained,zero_shot]"], ["finetune.inits", "zero_shot", "masked"]),
    (["model=bart_tiny", "finetune.inits=[zero_shot]"], ["finetune.inits", "seq2seq"]),
    (["finetune.zero_shot_template=Label:"], ["finetune.zero_shot_template", "{text}"]),
])
def test_zero_shot_config_errors_exit_2_with_one_line(overrides: list[str], must_mention: list[str],
                                                      capsys: pytest.CaptureFixture) -> None:
    assert main(["config", *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for word in must_mention:
        assert word in err


def test_causal_model_accepts_zero_shot() -> None:
    cfg = compose(["finetune.inits=[pretrained,scratch,zero_shot]"])
    assert cfg.finetune.inits == ["pretrained", "scratch", "zero_shot"]
    assert cfg.finetune.zero_shot_template == "{text}\nLabel:"


# --- stage level: tiny pipeline with the three inits -------------------------------------

@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> StageContext:
    cfg = compose(tiny_overrides(tmp_path_factory.mktemp("zeroshot"), "finetune.inits=[pretrained,scratch,zero_shot]"))
    return StageContext.create(cfg)


@pytest.fixture(scope="module")
def upstream(ctx: StageContext) -> tuple[dict[str, Any], dict[str, Any]]:
    prep_rec = stages.prep(ctx)
    return prep_rec, stages.pretrain(ctx, prep_rec)


def test_zero_shot_stage_next_to_fine_tunes_and_in_the_report(ctx: StageContext, upstream) -> None:
    prep_rec, pretrain_rec = upstream
    recs = [stages.finetune(ctx, prep_rec, pretrain_rec, init) for init in ctx.cfg.finetune.inits]
    zs = recs[-1]
    run = ctx.tracker.client.get_run(zs.run_id)
    assert run.data.tags["transferlab.stage"] == "finetune"
    assert run.data.tags["transferlab.init"] == "zero_shot"
    assert 0.0 <= run.data.metrics["test/accuracy"] <= 1.0
    assert "test/f1_macro" in run.data.metrics and "carbon/emissions_kg" in run.data.metrics
    assert "train/loss" not in run.data.metrics  # nothing trained
    assert "predictions.csv" in {a.path for a in ctx.tracker.client.list_artifacts(zs.run_id)}
    with open(zs.predictions) as f:
        rows = list(csv.DictReader(f))
    n_labels = len(prep_rec.label_names)
    assert len(rows) == ctx.cfg.data.labeled_test
    assert {int(r["prediction"]) for r in rows} <= set(range(n_labels))
    accuracy = sum(r["label"] == r["prediction"] for r in rows) / len(rows)
    assert run.data.metrics["test/accuracy"] == pytest.approx(accuracy)

    ev = stages.evaluate(ctx, prep_rec, pretrain_rec, recs)
    metrics = ctx.tracker.client.get_run(ev.run_id).data.metrics
    assert metrics["test/accuracy/zero_shot"] == pytest.approx(accuracy)
    assert metrics["test/accuracy_gain"] == pytest.approx(
        metrics["test/accuracy/pretrained"] - metrics["test/accuracy/scratch"])
    report = Path(ev.report).read_text()
    assert f"| zero_shot | {accuracy:.4f} |" in report
    assert "confusion_matrix_zero_shot.png" in ev.artifacts


def test_zero_shot_stage_rejects_a_non_causal_checkpoint(ctx: StageContext, upstream, tmp_path: Path) -> None:
    prep_rec, pretrain_rec = upstream
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertForMaskedLM"]}))
    before = len(ctx.tracker.client.search_runs([ctx.tracker.experiment_id]))
    with pytest.raises(UserError, match="finetune.inits.*'masked'"):
        stages.finetune(ctx, prep_rec, replace(pretrain_rec, hf_model=str(tmp_path)), "zero_shot")
    assert len(ctx.tracker.client.search_runs([ctx.tracker.experiment_id])) == before  # no run left behind
