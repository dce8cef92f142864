"""evaluate: compare the fine-tuned models, score the pretrained LM, and write the report.

Test metrics have one home: the fine-tune that made the predictions scores them
(``Task.score``, in ``modules.training.recipes.finetune_on_task`` or
``modules.evaluation.zero_shot.zero_shot_test``) and its record carries them (``FinetuneRecord.metrics``, also in
record.json). They are needed where no evaluate stage runs (the fine-tune's MLflow run, the
CLI summary, the sweep report) and a cache hit must show them without rescoring, so this
stage reads them from the records instead of scoring the saved predictions a second time;
it reads the predictions only to draw confusion matrices. The one figure it measures itself
is the report's floor: the majority-class rule on the fine-tunes' labeled subset
(``modules.baselines.classical.majority_scores``), cheap enough to need no cache.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from pipelines.config.schema import TransferLabConfig
from pipelines.stages.common import StageContext, run_fields, tracked_stage
from pipelines.stages.finetune import init_label
from pipelines.stages.records import (
    DistillRecord,
    EvaluateRecord,
    FinetuneRecord,
    PrepRecord,
    PretrainRecord,
    StageRecord,
)

log = logging.getLogger("transferlab")


def stage_rows(records: list[StageRecord]) -> list[dict[str, Any]]:
    """Report rows; ``produced_kg`` is what building the output cost: this run's figure,
    or on a cache hit the source run's (``StageRecord.produced``)."""
    return [{"name": rec.label, "cache_hit": rec.cache_hit, **rec.carbon.as_dict(), "produced_kg": rec.produced()[0]}
            for rec in records]


def evaluate(ctx: StageContext, prep_record: PrepRecord, pretrain_record: PretrainRecord,
             finetune_records: list[FinetuneRecord]) -> EvaluateRecord:
    from modules.evaluation.metrics import confusion
    from modules.evaluation.perplexity import lm_perplexity
    from modules.evaluation.plots import comparison_png, confusion_matrix_png
    from modules.evaluation.report import distillation_note, render_report
    from modules.tasks import get_task

    cfg = ctx.cfg
    task = get_task(cfg.finetune.task)
    label_names = prep_record.label_names
    headline = task.headline
    with tracked_stage(ctx, "evaluate") as run:
        out = run.workdir
        results: dict[str, dict[str, float]] = {}
        images: list[str] = []
        for rec in finetune_records:
            init = rec.init
            results[init] = rec.test_scores()
            spec = get_task("classification") if init == "zero_shot" else task
            if spec.name == "classification":
                rows = spec.load_predictions(Path(rec.predictions))
                png = "confusion_matrix_" + re.sub(r"[^\w.-]", "_", init) + ".png"
                labels, preds = [r["label"] for r in rows], [r["prediction"] for r in rows]
                confusion_matrix_png(confusion(labels, preds, len(label_names)), label_names,
                                     f"Confusion matrix: init={init}, test split", out / png)
                images.append(png)
        lm = lm_perplexity(pretrain_record.hf_model, Path(prep_record.path) / "lm", cfg.model.family,
                           cfg.evaluate.batch_size, cfg.evaluate.perplexity_batches,
                           cfg.pretrain.mlm_probability, cfg.seed,
                           cfg.pretrain.mask_ratio, cfg.pretrain.poisson_lambda,
                           trust_remote_code=cfg.model.trust_remote_code)
        loss, perplexity = lm["loss"], lm["perplexity"]
        metrics = {} if loss is None or perplexity is None else {"val/loss": loss, "val/perplexity": perplexity}
        for init, m in results.items():
            for key, value in m.items():
                metrics[f"test/{key}/{init}"] = value
        if "pretrained" in results and "scratch" in results:
            metrics[f"test/{headline}_gain"] = results["pretrained"][headline] - results["scratch"][headline]
        majority = _majority(cfg, prep_record)
        if majority is not None:
            metrics[f"test/{headline}_majority"] = majority[headline]
        run.log_metrics(metrics)

        rows = stage_rows([prep_record, pretrain_record, *finetune_records])
        rows[1]["trained"] = cfg.pretrain.max_steps > 0  # 0: a checkpoint passed through, not pretrained
        comparison_png({k: v[headline] for k, v in results.items()},
                       {r["name"]: r["produced_kg"] or 0.0 for r in rows},
                       f"{cfg.experiment_name}: {cfg.model.name} on {cfg.data.name} ({task.name})",
                       out / "comparison.png", metric=f"test {headline}",
                       chance=task.chance(label_names) if majority is None else majority[headline],
                       chance_label="chance" if majority is None else "majority class")
        images.insert(0, "comparison.png")
        notes = [f"Labeled training examples: {cfg.finetune.train_examples}; seed {cfg.seed}. "
                 "CO2 of a cached stage is what building its output cost when it ran."]
        for rec in finetune_records:
            if isinstance(rec, DistillRecord):
                notes.append(distillation_note(results, rec.teacher, init_label(cfg.distill.student), headline,
                                               rec.train_examples, rec.unlabeled_examples, cfg.distill.alpha,
                                               cfg.distill.temperature,
                                               (rec.parameters, rec.teacher_parameters)))
        report = render_report(
            f"transferlab report: {cfg.experiment_name} "
            f"({cfg.model.name}, {cfg.data.name}, {task.name})",
            results, lm, rows, images, columns=task.report_columns, majority=majority,
            notes=notes, inference={rec.init: rec.inference for rec in finetune_records if rec.inference},
        )
        (out / "report.md").write_text(report)
        for name in ["report.md", *images]:
            run.log_artifact(out / name)
        log.info("evaluate: %s", "  ".join(f"test/{headline}[{k}] {v[headline]:.4f}" for k, v in results.items()))
    return EvaluateRecord(**run_fields(run), path=str(out), report=str(out / "report.md"), metrics=metrics,
                          artifacts=["report.md", *images])


def _majority(cfg: TransferLabConfig, prep_record: PrepRecord) -> dict[str, float] | None:
    """The majority-class rule's test metrics (names without "test/") for the fine-tunes'
    labeled subset: the report's floor. None when that subset cannot be drawn (a budget below
    the class count, which only a zero_shot-only run lets through): the report then shows chance."""
    from modules.baselines.classical import load_labeled, majority_scores
    from modules.data.errors import DataError

    try:
        scores = majority_scores(load_labeled(prep_record.path), cfg.finetune.task, cfg.finetune.train_examples,
                                 cfg.seed)
    except DataError as exc:
        log.info("evaluate: no majority-class floor (%s)", exc)
        return None
    return {k.removeprefix("test/"): v for k, v in scores.items()}
