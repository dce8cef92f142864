"""evaluate: score every fine-tuned model, the pretrained LM, and write the report."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from pipelines.stages.common import StageContext, record, stage_label, tracked_stage

log = logging.getLogger("transferlab")


def stage_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Report rows; ``produced_kg`` is what building the output cost: this run's figure,
    or on a cache hit the source run's (recorded by the stage as ``avoided_kg``)."""
    return [{"name": stage_label(rec), "cache_hit": rec.get("cache_hit", False), **rec["carbon"],
             "produced_kg": rec.get("avoided_kg") if rec.get("cache_hit") else rec["carbon"]["emissions_kg"]}
            for rec in records]


def evaluate(ctx: StageContext, prep_record: dict[str, Any], pretrain_record: dict[str, Any],
             finetune_records: list[dict[str, Any]]) -> dict[str, Any]:
    from modules.evaluation.metrics import confusion
    from modules.evaluation.perplexity import lm_perplexity
    from modules.evaluation.plots import comparison_png, confusion_matrix_png
    from modules.evaluation.report import render_report
    from modules.tasks import get_task

    cfg = ctx.cfg
    task = get_task(cfg.finetune.task)
    label_names = prep_record["label_names"]
    headline = task.headline
    with tracked_stage(ctx, "evaluate") as run:
        out = run.workdir
        results: dict[str, dict[str, float]] = {}
        images: list[str] = []
        for rec in finetune_records:
            init = rec["init"]
            spec = get_task("classification") if init == "zero_shot" else task
            rows = spec.load_predictions(Path(rec["predictions"]))
            results[init] = spec.score(rows, label_names)
            if spec.name == "classification":
                png = "confusion_matrix_" + re.sub(r"[^\w.-]", "_", init) + ".png"
                labels, preds = [r["label"] for r in rows], [r["prediction"] for r in rows]
                confusion_matrix_png(confusion(labels, preds, len(label_names)), label_names,
                                     f"Confusion matrix: init={init}, test split", out / png)
                images.append(png)
        lm = lm_perplexity(pretrain_record["hf_model"], Path(prep_record["path"]) / "lm", cfg.model.family,
                           cfg.evaluate.batch_size, cfg.evaluate.perplexity_batches,
                           cfg.pretrain.mlm_probability, cfg.seed,
                           cfg.pretrain.mask_ratio, cfg.pretrain.poisson_lambda,
                           trust_remote_code=cfg.model.trust_remote_code)
        metrics = {} if lm["loss"] is None else {"val/loss": lm["loss"], "val/perplexity": lm["perplexity"]}
        for init, m in results.items():
            for key, value in m.items():
                metrics[f"test/{key}/{init}"] = value
        if "pretrained" in results and "scratch" in results:
            metrics[f"test/{headline}_gain"] = results["pretrained"][headline] - results["scratch"][headline]
        run.log_metrics(metrics)

        rows = stage_rows([prep_record, pretrain_record, *finetune_records])
        comparison_png({k: v[headline] for k, v in results.items()},
                       {r["name"]: r["produced_kg"] or 0.0 for r in rows},
                       f"{cfg.experiment_name}: {cfg.model.name} on {cfg.data.name} ({task.name})",
                       out / "comparison.png", chance=task.chance(label_names), metric=f"test {headline}")
        images.insert(0, "comparison.png")
        report = render_report(
            f"transferlab report: {cfg.experiment_name} ({cfg.model.name}, {cfg.data.name}, {task.name})",
            results, lm, rows, images, columns=task.report_columns,
            notes=[f"Labeled training examples: {cfg.finetune.train_examples}; seed {cfg.seed}. "
                   "CO2 of a cached stage is what building its output cost when it ran."],
        )
        (out / "report.md").write_text(report)
        for name in ["report.md", *images]:
            run.log_artifact(out / name)
        log.info("evaluate: %s", "  ".join(f"test/{headline}[{k}] {v[headline]:.4f}" for k, v in results.items()))
    return record("evaluate", run, path=str(out), report=str(out / "report.md"), metrics=metrics,
                  artifacts=["report.md", *images])
