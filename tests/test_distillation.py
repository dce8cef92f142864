"""Distillation: the loss by hand, a student pulled toward its teacher, the distill stage in
the flow, and the distill keys' one-line errors."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_overrides
from mlflow.tracking import MlflowClient

from modules.training.distillation import IGNORE_LABEL, DistillationClassification, distillation_loss
from pipelines.errors import ConfigError, UserError

# ---------------------------------------------------------------------------- the loss


def _softmax(xs: list[float], t: float) -> list[float]:
    exps = [math.exp(x / t) for x in xs]
    return [e / sum(exps) for e in exps]


def test_loss_equals_the_hand_computed_value() -> None:
    student = [[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]]
    teacher = [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    labels = [0, IGNORE_LABEL]  # row 2 is unlabeled: KL only
    alpha, t = 0.25, 2.0

    def kl(s: list[float], q: list[float]) -> float:
        p_s, p_t = _softmax(s, t), _softmax(q, t)
        return sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s, strict=True)) * t * t

    ce_row0 = -math.log(_softmax(student[0], 1.0)[0])
    expected = ((alpha * kl(student[0], teacher[0]) + (1 - alpha) * ce_row0) + kl(student[1], teacher[1])) / 2

    got = distillation_loss(torch.tensor(student), torch.tensor(teacher), torch.tensor(labels), alpha, t)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_alpha_zero_is_cross_entropy_and_alpha_one_is_scaled_kl() -> None:
    gen = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(6, 4, generator=gen), torch.randn(6, 4, generator=gen)  # (B, C)
    labels = torch.tensor([0, 1, 2, 3, 1, 0])  # (B,): every row labeled
    t = 3.0
    assert distillation_loss(student, teacher, labels, 0.0, t).item() == pytest.approx(
        F.cross_entropy(student, labels).item(), rel=1e-6)
    kl = F.kl_div(F.log_softmax(student / t, -1), F.log_softmax(teacher / t, -1), log_target=True,
                  reduction="batchmean") * t * t
    assert distillation_loss(student, teacher, labels, 1.0, t).item() == pytest.approx(kl.item(), rel=1e-5)


def test_unlabeled_rows_ignore_alpha_and_a_perfect_student_costs_nothing_there() -> None:
    teacher = torch.tensor([[3.0, -1.0], [0.0, 2.0]])  # (B, C)
    unlabeled = torch.tensor([IGNORE_LABEL, IGNORE_LABEL])
    assert distillation_loss(teacher.clone(), teacher, unlabeled, 0.3, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    off = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    assert distillation_loss(off, teacher, unlabeled, 0.0, 2.0).item() == pytest.approx(
        distillation_loss(off, teacher, unlabeled, 1.0, 2.0).item(), rel=1e-6)
    assert distillation_loss(off, teacher, unlabeled, 0.5, 2.0).item() > 0


def test_a_student_trained_on_soft_labels_moves_toward_its_teacher() -> None:
    """A tiny classifier, unlabeled rows only: its agreement with the teacher's argmax rises
    from about chance to most rows, and the loss falls."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=20, n_positions=16, n_embd=32, n_layer=1, n_head=2, num_labels=2,
                        pad_token_id=0)
    student = GPT2ForSequenceClassification(config)
    ids = torch.randint(1, 20, (64, 8))  # (N, T)
    low = (ids < 10).float().sum(-1)  # (N,): the teacher's rule, learnable from the tokens
    teacher = torch.stack([low - 4, 4 - low], dim=-1)  # (N, 2)
    module = DistillationClassification(student, 2, 1e-2, 0.0, 0.0, alpha=0.5, temperature=2.0)
    optimizer = torch.optim.AdamW(student.parameters(), lr=3e-3)

    def agreement() -> float:
        with torch.no_grad():
            preds = student(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.argmax(-1)  # (N,)
        return (preds == teacher.argmax(-1)).float().mean().item()

    before = agreement()
    losses = []
    student.train()
    for step in range(120):
        rows = torch.arange(step * 16, step * 16 + 16) % 64
        batch = {"input_ids": ids[rows], "attention_mask": torch.ones_like(ids[rows]),
                 "labels": torch.full((16,), IGNORE_LABEL), "teacher_logits": teacher[rows]}
        with pytest.warns(match="self.trainer"):  # self.log() outside a Trainer: a warning, nothing logged
            loss = module.training_step(batch, step)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    student.eval()
    after = agreement()
    assert after >= 0.85 and after > before + 0.2, (before, after)
    assert sum(losses[-10:]) < sum(losses[:10])


# ---------------------------------------------------------------------------- data


def test_collator_stacks_teacher_logits_next_to_padded_ids() -> None:
    from modules.data.distillation import DistillationCollator

    class Tok:  # what DataCollatorWithPadding asks of a tokenizer, no files needed
        padding_side = "right"
        pad_token_id = 0
        model_input_names = ["input_ids", "attention_mask"]

        def pad(self, rows: Any, **kwargs: Any) -> Any:
            from transformers import BatchEncoding

            width = max(len(r["input_ids"]) for r in rows)
            out = {"input_ids": [r["input_ids"] + [0] * (width - len(r["input_ids"])) for r in rows],
                   "attention_mask": [[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows],
                   "labels": [r["labels"] for r in rows]}
            return BatchEncoding(out, tensor_type="pt")

    collate = DistillationCollator(Tok())  # type: ignore[arg-type]
    batch = collate([{"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": 1, "teacher_logits": [0.5, -1.0]},
                     {"input_ids": [8], "attention_mask": [1], "labels": -100, "teacher_logits": [2.0, 0.0]}])
    assert batch["input_ids"].shape == (2, 3) and batch["labels"].tolist() == [1, -100]
    assert batch["teacher_logits"].dtype == torch.float32 and batch["teacher_logits"].tolist() == [[0.5, -1.0],
                                                                                                   [2.0, 0.0]]
    plain = collate([{"input_ids": [5], "attention_mask": [1], "labels": 0}])
    assert "teacher_logits" not in plain


def test_unlabeled_rows_come_from_outside_the_labeled_subset() -> None:
    from modules.training.distill_recipe import unlabeled_indices

    labeled = [0, 3, 7]
    some = unlabeled_indices(20, labeled, 5, seed=1)
    assert len(some) == 5 and not set(some) & set(labeled)
    assert some == unlabeled_indices(20, labeled, 5, seed=1)  # seeded
    assert unlabeled_indices(20, labeled, None, seed=1) == [i for i in range(20) if i not in labeled]
    assert unlabeled_indices(20, labeled, 0, seed=1) == []
    assert len(unlabeled_indices(20, labeled, 100, seed=1)) == 17  # more than there are: all, with a warning


def test_the_report_line_says_how_much_of_the_teacher_the_student_keeps() -> None:
    from modules.evaluation.report import distillation_note

    results = {"pretrained": {"accuracy": 0.8}, "distilled": {"accuracy": 0.6}}
    line = distillation_note(results, "pretrained", "pretrained", "accuracy", 16, 40, 0.5, 2.0, (1000, 4000))
    assert "16 labeled + 40 unlabeled" in line and "keeps 75.0% of the teacher's test accuracy" in line
    assert "student 1,000, teacher 4,000 (4x the student's)" in line
    # A checkpoint teacher is not among the run's results: no share, no division by a missing score.
    assert "keeps" not in distillation_note(results, "checkpoint:a/b", "pretrained", "accuracy", 16, 0, 1.0, 1.0)


# ---------------------------------------------------------------------------- config


def test_distillation_is_off_by_default(tiny_cfg: Any) -> None:
    assert tiny_cfg.distill.teacher is None and not tiny_cfg.distill.enabled
    assert tiny_cfg.distill.student == "pretrained"


@pytest.mark.parametrize(("override", "key"), [
    (["distill.alpha=1.5"], "distill.alpha"),
    (["distill.alpha=-0.1"], "distill.alpha"),
    (["distill.temperature=0"], "distill.temperature"),
    (["distill.unlabeled=-1"], "distill.unlabeled"),
    (["distill.teacher=tfidf"], "distill.teacher"),
    (["distill.teacher=zero_shot"], "distill.teacher"),
    (["distill.teacher=scratch", "finetune.inits=[pretrained]"], "distill.teacher"),
    (["distill.teacher=pretrained", "finetune.task=seq2seq", "model=bart_tiny"], "distill.teacher"),
    (["distill.teacher=pretrained", "sweep.enabled=true"], "distill.teacher"),
    (["distill.teacher=pretrained", "distill.student=scratch"], "distill.student"),
    (["distill.teacher=pretrained", "distill.student=tfidf"], "distill.student"),
])
def test_bad_distill_values_are_one_line_errors_naming_the_key(tmp_path: Path, override: list[str],
                                                                key: str) -> None:
    from pipelines.config.compose import compose

    with pytest.raises(ConfigError) as err:
        compose(tiny_overrides(tmp_path, *override))
    message = str(err.value)
    assert f"'{key}'" in message and "\n" not in message, message


def test_a_missing_teacher_checkpoint_is_refused_before_any_work(tmp_path: Path) -> None:
    from pipelines.config.compose import compose
    from pipelines.preflight import check_inputs

    cfg = compose(tiny_overrides(tmp_path / "home", f"distill.teacher={tmp_path / 'nowhere'}"))
    with pytest.raises(UserError, match="^distill.teacher=.*no such directory") as err:
        check_inputs(cfg, "evaluate")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "home").exists()


def test_a_teacher_over_other_classes_is_refused(tmp_path: Path) -> None:
    import json

    from pipelines.stages.distill import check_teacher

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2",
                                                      "architectures": ["GPT2ForSequenceClassification"],
                                                      "id2label": {"0": "a", "1": "b", "2": "c"}}))
    with pytest.raises(UserError, match="'distill.teacher': the teacher predicts 3 classes, the task has 2"):
        check_teacher(tmp_path, ["neg", "pos"])
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(UserError, match="not a fine-tuned sequence classifier"):
        check_teacher(tmp_path, ["neg", "pos"])
    # transformers writes no label map for two classes: a binary teacher (SST-2's) must pass, and
    # must not pass for a three-class task.
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert",
                                                      "architectures": ["BertForSequenceClassification"]}))
    check_teacher(tmp_path, ["neg", "pos"])
    with pytest.raises(UserError, match="the teacher predicts 2 classes, the task has 3"):
        check_teacher(tmp_path, ["a", "b", "c"])


# ---------------------------------------------------------------------------- the flow


@pytest.fixture(scope="module")
def distilled_flow(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> tuple[Path, dict[str, Any]]:
    from pipelines.flows import transfer_learning

    home = tmp_path_factory.mktemp("distill")
    overrides = tiny_overrides(home, "finetune.inits=[pretrained,tfidf]", "distill.teacher=pretrained",
                               "distill.unlabeled=40")
    return home, transfer_learning(overrides=overrides)


def test_a_flow_with_distill_on_has_a_distill_child_run_with_test_metrics(
        distilled_flow: tuple[Path, dict[str, Any]]) -> None:
    home, summary = distilled_flow
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("transferlab")
    children = client.search_runs([exp.experiment_id],
                                  f"tags.mlflow.parentRunId = '{summary['parent_run_id']}'")
    stages = sorted(r.data.tags["transferlab.stage"] for r in children)
    assert stages == ["distill", "evaluate", "finetune", "finetune", "prep", "pretrain"]
    run = next(r for r in children if r.data.tags["transferlab.stage"] == "distill")
    assert run.info.status == "FINISHED"
    assert run.data.tags["transferlab.init"] == "distilled" and run.data.tags["transferlab.teacher"] == "pretrained"
    metrics = run.data.metrics
    assert {"test/accuracy", "test/f1_macro", "val/loss", "train/loss", "carbon/emissions_kg",
            "distill/teacher_agreement"} <= set(metrics)
    assert metrics["data/unlabeled_examples"] == 40 and metrics["data/train_examples"] == 16
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"predictions.csv", "hf_model"} <= artifacts
    assert run.data.params["distill.teacher"] == "pretrained"

    # The summary and the report show the student as one more init.
    assert set(summary["headline"]["by_init"]) == {"pretrained", "tfidf", "distilled"}
    assert "test/accuracy/distilled" in summary["evaluate"]
    assert "distill" in [s["stage"] for s in summary["stages"]]
    report = Path(summary["report"]).read_text()
    assert "| distilled |" in report and "teacher `pretrained`" in report and "| distill |" in report
    assert "Parameters (non-embedding): student" in report


def test_a_second_distilled_flow_reuses_the_student(distilled_flow: tuple[Path, dict[str, Any]]) -> None:
    from pipelines.flows import transfer_learning

    home, first = distilled_flow
    again = transfer_learning(overrides=tiny_overrides(home, "finetune.inits=[pretrained,tfidf]",
                                                       "distill.teacher=pretrained", "distill.unlabeled=40"))
    stage = next(s for s in again["stages"] if s["stage"] == "distill")
    assert stage["cache_hit"]
    assert again["headline"]["by_init"]["distilled"] == first["headline"]["by_init"]["distilled"]


def test_a_checkpoint_teacher_and_a_checkpoint_student_distill_through_the_flow(
        distilled_flow: tuple[Path, dict[str, Any]]) -> None:
    """distill.teacher / distill.student as local HF dirs (any fine-tuned classifier, any
    model.init-style checkpoint): here the first flow's fine-tune and pretrained export."""
    import json

    from pipelines.flows import transfer_learning

    home, _ = distilled_flow
    tuned = next(d for d in (home / "cache" / "finetune").iterdir() if (d / "record.json").is_file()
                 and json.loads((d / "record.json").read_text()).get("init") == "pretrained")
    exported = next(d for d in (home / "cache" / "pretrain").iterdir() if (d / "record.json").is_file())
    summary = transfer_learning(overrides=tiny_overrides(
        home, "finetune.inits=[tfidf]", f"distill.teacher={tuned / 'hf_model'}",
        f"distill.student={exported / 'hf_model'}", "distill.unlabeled=0", "distill.alpha=1.0"))
    stage = next(s for s in summary["stages"] if s["stage"] == "distill")
    assert not stage["cache_hit"]  # another teacher, student and alpha than the first flow's: another entry
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("transferlab")
    run = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{summary['parent_run_id']}' and "
                                                  "tags.`transferlab.stage` = 'distill'")[0]
    assert run.data.tags["transferlab.teacher"].startswith("checkpoint:")
    assert run.data.tags["transferlab.student"].startswith("checkpoint:")
    assert run.data.metrics["data/unlabeled_examples"] == 0 and "test/accuracy" in run.data.metrics
    assert set(summary["headline"]["by_init"]) == {"tfidf", "distilled"}
