"""distill: train a student on a teacher's soft labels and test it; cached by fingerprint.

Runs after the fine-tunes when ``distill.teacher`` is set (classification only). The
teacher is a fine-tuned classifier: an entry of ``finetune.inits`` names that fine-tune of
this run (its ``hf_model/``), anything else a fine-tuned checkpoint (local dir, ``runs:/``,
``models:/``). The student is the pipeline's own pretrained export (``distill.student=
pretrained``) or a ``model.init``-style checkpoint. It trains on the fine-tunes' labeled
subset plus ``distill.unlabeled`` texts of the labeled pool without their labels
(``modules.training.distill_recipe``), with the fine-tunes' hyperparameters, so the
``pretrained`` row of the report is the same student trained on the labels alone.

Its record is a ``FinetuneRecord`` whose init is ``distilled``: the report and the summary
show it as one more init. The MLflow child run is tagged ``transferlab.stage=distill``.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from modules.models.checkpoints import checkpoint_family, content_digest, read_config
from pipelines.cache.store import fingerprint
from pipelines.config.schema import TransferLabConfig
from pipelines.errors import UserError
from pipelines.stages.cached import CachedStage, CacheEntry, cached_stage
from pipelines.stages.common import StageContext, StageRun
from pipelines.stages.finetune import check_task_family, init_label
from pipelines.stages.inference_cost import cost_metrics, measure_cost
from pipelines.stages.pretrain import lightning_logger
from pipelines.stages.records import DistillRecord, FinetuneRecord, PrepRecord, PretrainRecord
from pipelines.tracking.runs import TAG_INIT, TAG_STRATEGY, TAG_TASK

log = logging.getLogger("transferlab")

STAGE = "distill"
DISTILLED = "distilled"  # the student's init label (modules.training.distill_recipe.NAME)
TAG_TEACHER = "transferlab.teacher"  # the teacher's init label (a checkpoint: checkpoint:<name>)
TAG_STUDENT = "transferlab.student"


def teacher_source(cfg: TransferLabConfig, finetune_records: list[FinetuneRecord]) -> tuple[Path, dict[str, Any]]:
    """The teacher's model dir and what identifies it: this run's fine-tune of that init (by
    its cache fingerprint), or a checkpoint (by its content)."""
    from pipelines.checkpoint_refs import locate_checkpoint

    teacher = cfg.distill.teacher
    assert teacher is not None  # the flow runs this stage only with a teacher
    if teacher in cfg.finetune.inits:
        label = init_label(teacher)
        record = next((r for r in finetune_records if r.init == label), None)
        if record is None:
            raise UserError(f"bad value for 'distill.teacher': {teacher!r} has no fine-tune in this run")
        return Path(record.path) / "hf_model", {"finetune": record.fingerprint}
    path = locate_checkpoint(cfg, teacher, "distill.teacher")
    return path, {"checkpoint": content_digest(path)}


def student_source(cfg: TransferLabConfig, pretrain_record: PretrainRecord) -> tuple[Path, dict[str, Any]]:
    """The student's starting checkpoint and what identifies it."""
    from pipelines.checkpoint_refs import locate_checkpoint

    student = cfg.distill.student
    if student == "pretrained":
        hf_model = Path(pretrain_record.hf_model)
        return hf_model, {"pretrain": pretrain_record.fingerprint or content_digest(hf_model)}
    path = locate_checkpoint(cfg, student, "distill.student")
    return path, {"checkpoint": content_digest(path)}


def check_teacher(teacher_dir: Path, label_names: list[str]) -> None:
    """A sequence classifier over the task's classes, or a one-line error naming the key."""
    config = read_config(teacher_dir)
    teacher = "distill.teacher"
    architectures = config.get("architectures") or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise UserError(f"bad value for '{teacher}': {teacher_dir} is not a fine-tuned sequence classifier "
                        f"(architectures {architectures}); name a fine-tuned init or checkpoint")
    # transformers saves no label map for the default two classes (LABEL_0, LABEL_1): absent means 2.
    n = len(config.get("id2label") or {}) or config.get("num_labels") or 2
    if n != len(label_names):
        raise UserError(f"bad value for '{teacher}': the teacher predicts {n} classes, the task has "
                        f"{len(label_names)} ({', '.join(label_names)})")


def distill_fingerprint(cfg: TransferLabConfig, prep_record: PrepRecord, teacher: dict[str, Any],
                        student: dict[str, Any]) -> str:
    """What the student depends on: data, teacher, student, the distill keys and the
    fine-tuning keys it trains with (the LR search's are unused: the student trains at finetune.lr)."""
    ft = {k: v for k, v in asdict(cfg.finetune).items()
          if k != "inits" and not k.startswith(("zero_shot", "search_"))}
    distill = {k: v for k, v in asdict(cfg.distill).items() if k not in ("teacher", "student")}
    trainer = {k: getattr(cfg.trainer, k) for k in ("accelerator", "precision", "deterministic")}
    return fingerprint(STAGE, {"prep": prep_record.fingerprint, "teacher": teacher, "student": student,
                               "distill": distill, "finetune": ft, "seed": cfg.seed, "trainer": trainer,
                               "eval_batch_size": cfg.evaluate.batch_size})


def distill(ctx: StageContext, prep_record: PrepRecord, pretrain_record: PretrainRecord,
            finetune_records: list[FinetuneRecord]) -> DistillRecord:
    cfg = ctx.cfg
    ft, dc = cfg.finetune, cfg.distill
    if ft.task != "classification":  # compose() refuses it; a hand-built config gets the same line
        raise UserError(f"bad value for 'distill.teacher': distillation serves finetune.task=classification only "
                        f"(task is {ft.task!r})")
    assert dc.teacher is not None
    teacher_dir, teacher_id = teacher_source(cfg, finetune_records)
    check_teacher(teacher_dir, prep_record.label_names)
    student_dir, student_id = student_source(cfg, pretrain_record)
    student_family = checkpoint_family(student_dir)
    check_task_family(ft.task, student_family, f"the distill.student {init_label(dc.student)} checkpoint")
    teacher_label, student_label = init_label(dc.teacher), init_label(dc.student)
    tags = {TAG_INIT: DISTILLED, TAG_TASK: ft.task, TAG_STRATEGY: ft.strategy, TAG_TEACHER: teacher_label,
            TAG_STUDENT: student_label}

    def build(run: StageRun, out: Path) -> dict[str, Any]:
        from modules.tasks import get_task
        from modules.training.distill_recipe import DistillJob, distill_on_task
        from modules.training.learning_rates import finetune_lr

        assert ft.lr is not None and ft.checkpoint_lr is not None  # filled in by compose()
        tuned = replace(ft, lr=finetune_lr(ft.lr, ft.checkpoint_lr, dc.student != "pretrained"))
        job = DistillJob(Path(prep_record.path), student_dir, student_family, teacher_dir,
                         checkpoint_family(teacher_dir), out, cfg.model.trust_remote_code)
        with lightning_logger(ctx, run) as logger:
            result = distill_on_task(job, tuned, dc, cfg.trainer, cfg.seed, cfg.evaluate.batch_size, logger=logger)
        task = get_task(ft.task)
        task.save_predictions(out / task.predictions_file, result.predictions)
        shutil.rmtree(out / "checkpoints", ignore_errors=True)  # the best weights live on in hf_model/
        labels = result.label_names or prep_record.label_names
        cost = measure_cost(cfg, prep_record, out / "hf_model", ft.task, labels, out, f"distill[{DISTILLED}]")
        return {"inference": cost, "metrics": result.metrics, "train_examples": result.train_examples,
                "requested_examples": ft.train_examples, "unlabeled_examples": result.unlabeled_examples,
                "epochs": result.epochs, "strategy": result.strategy,
                "trainable_parameters": result.trainable_parameters, "parameters": result.student_parameters,
                "teacher_parameters": result.teacher_parameters, "teacher_agreement": result.teacher_agreement,
                "label_names": result.label_names, "predictions_file": task.predictions_file,
                "init": DISTILLED, "teacher": teacher_label, "student": student_label, "task": ft.task}

    def log_entry(run: StageRun, entry: CacheEntry) -> None:
        built = entry.record
        if not entry.hit:
            run.log_artifact(entry.path / "hf_model", "hf_model")
        run.log_metrics(built["metrics"])
        counts = {"data/train_examples": built["train_examples"],
                  "data/unlabeled_examples": built["unlabeled_examples"],
                  "model/trainable_parameters": built["trainable_parameters"],
                  "model/parameters": built["parameters"], "teacher/parameters": built["teacher_parameters"],
                  "train/epochs": built["epochs"]}
        if built.get("teacher_agreement") is not None:
            counts["distill/teacher_agreement"] = built["teacher_agreement"]
        counts.update(cost_metrics(built.get("inference")))
        run.log_metrics(counts)
        run.log_artifact(entry.path / built["predictions_file"])

    def make_record(run: StageRun, entry: CacheEntry) -> DistillRecord:
        built = entry.record
        return DistillRecord(**entry.record_fields(run), init=DISTILLED, task=ft.task, strategy=built["strategy"],
                             predictions=str(entry.path / built["predictions_file"]), metrics=built["metrics"],
                             train_examples=built["train_examples"], requested_examples=built["requested_examples"],
                             label_names=built["label_names"], teacher=built["teacher"],
                             unlabeled_examples=built["unlabeled_examples"], parameters=built.get("parameters"),
                             teacher_parameters=built.get("teacher_parameters"), inference=built.get("inference"))

    fp = distill_fingerprint(cfg, prep_record, teacher_id, student_id)
    log.info("distill: student %s learns from teacher %s (alpha %g, temperature %g)", student_label, teacher_label,
             dc.alpha, dc.temperature)
    return cached_stage(ctx, CachedStage(STAGE, fp, build, make_record, log_entry, label=f"distill[{DISTILLED}]",
                                         run_name=f"distill-{DISTILLED}", tags=tags))
