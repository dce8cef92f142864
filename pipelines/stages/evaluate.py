"""evaluate: compare the fine-tuned models, score the pretrained LM, and write the report.

Test metrics have one home: the fine-tune that made the predictions scores them
(``Task.score``, in ``modules.training.recipes.finetune_on_task`` or
``modules.evaluation.zero_shot.zero_shot_test``) and its record carries them (``FinetuneRecord.metrics``, also in
record.json). They are needed where no evaluate stage runs (the fine-tune's MLflow run, the
CLI summary, the sweep report) and a cache hit must show them without rescoring, so this
stage reads them from the records instead of scoring the saved predictions a second time;
it reads the predictions only to draw confusion matrices. The figures it measures itself are
the LM's perplexity and the report's floor: the majority-class rule on the fine-tunes'
labeled subset (``modules.baselines.classical.majority_scores``).

Those and the plots take seconds (importing torch, scikit-learn and matplotlib alone does),
so they are cached in ``cache/evaluate/<fingerprint>/``, keyed on the upstream entries they
were drawn from: a rerun whose stages are all cache hits renders only the report again (it
says which stages this run reused) and imports none of them.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.cache.store import StageCache, fingerprint, write_record
from pipelines.config.schema import TransferLabConfig
from pipelines.stages.cached import wait_timeout
from pipelines.stages.common import StageContext, StageRun, run_fields, tracked_stage
from pipelines.stages.finetune import init_label
from pipelines.stages.records import (
    DistillRecord,
    EvaluateRecord,
    FinetuneRecord,
    PrepRecord,
    PretrainRecord,
    StageRecord,
)
from pipelines.tracking.runs import TAG_CACHE_WAITED

if TYPE_CHECKING:
    from collections.abc import Callable

    from pipelines.runtime.locks import Claim

log = logging.getLogger("transferlab")


def stage_rows(records: list[StageRecord]) -> list[dict[str, Any]]:
    """Report rows; ``produced_kg`` is what building the output cost: this run's figure,
    or on a cache hit the source run's (``StageRecord.produced``)."""
    return [{"name": rec.label, "cache_hit": rec.cache_hit, **rec.carbon.as_dict(), "produced_kg": rec.produced()[0]}
            for rec in records]


STAGE = "evaluate"


def confusion_png_name(init: str) -> str:
    return "confusion_matrix_" + re.sub(r"[^\w.-]", "_", init) + ".png"


def measurement_fingerprint(cfg: TransferLabConfig, title: str, records: list[StageRecord]) -> str:
    """What the perplexity, the majority-class floor and the plots are drawn from: the
    upstream entries (and what building each cost: the comparison plot's CO2 bars), the
    evaluate keys, the LM objective's masking, the labeled budget and seed, the plot title."""
    upstream = [{"label": rec.label, "fingerprint": getattr(rec, "fingerprint", None),
                 "source_run": getattr(rec, "source_run_id", rec.run_id), "produced_kg": rec.produced()[0]}
                for rec in records]
    pretrain = {k: getattr(cfg.pretrain, k) for k in ("mlm_probability", "mask_ratio", "poisson_lambda")}
    return fingerprint(STAGE, {"upstream": upstream, "evaluate": asdict(cfg.evaluate),
                               "pretrain": pretrain, "seed": cfg.seed, "family": cfg.model.family,
                               "task": cfg.finetune.task, "train_examples": cfg.finetune.train_examples,
                               "title": title})


def measure(cfg: TransferLabConfig, prep_record: PrepRecord, pretrain_record: PretrainRecord,
            finetune_records: list[FinetuneRecord], results: dict[str, dict[str, float]], rows: list[dict[str, Any]],
            title: str, out: Path) -> dict[str, Any]:
    """The slow part: the LM's perplexity, the majority-class floor and the plots (written into ``out``)."""
    from modules.evaluation.metrics import confusion
    from modules.evaluation.perplexity import lm_perplexity
    from modules.evaluation.plots import comparison_png, confusion_matrix_png
    from modules.tasks import get_task

    task = get_task(cfg.finetune.task)
    label_names = prep_record.label_names
    majority = _majority(cfg, prep_record)
    images: list[str] = []
    for rec in finetune_records:
        spec = get_task("classification") if rec.init == "zero_shot" else task
        if spec.name == "classification":
            pred_rows = spec.load_predictions(Path(rec.predictions))
            png = confusion_png_name(rec.init)
            labels, preds = [r["label"] for r in pred_rows], [r["prediction"] for r in pred_rows]
            confusion_matrix_png(confusion(labels, preds, len(label_names)), label_names,
                                 f"Confusion matrix: init={rec.init}, test split", out / png)
            images.append(png)
    lm = lm_perplexity(pretrain_record.hf_model, Path(prep_record.path) / "lm", cfg.model.family,
                       cfg.evaluate.batch_size, cfg.evaluate.perplexity_batches,
                       cfg.pretrain.mlm_probability, cfg.seed,
                       cfg.pretrain.mask_ratio, cfg.pretrain.poisson_lambda,
                       trust_remote_code=cfg.model.trust_remote_code)
    comparison_png({k: v[task.headline] for k, v in results.items()},
                   {r["name"]: r["produced_kg"] or 0.0 for r in rows},
                   title, out / "comparison.png", metric=f"test {task.headline}",
                   chance=task.chance(label_names) if majority is None else majority[task.headline],
                   chance_label="chance" if majority is None else "majority class")
    return {"lm": lm, "majority": majority, "images": ["comparison.png", *images]}


def report_title(cfg: TransferLabConfig) -> str:
    from modules.tasks import get_task

    return f"{cfg.experiment_name}: {cfg.model.name} on {cfg.data.name} ({get_task(cfg.finetune.task).name})"


def measured(run: StageRun, cache: StageCache, fp: str, claim: Claim,
             build: Callable[[Path], dict[str, Any]] | None) -> tuple[dict[str, Any], bool]:
    """(a new measurement, built into the cache by ``build(dir)``, False), or with ``build``
    None (the entry is done) (the cached one, True); its images are copied into the run's
    work dir either way."""
    if claim.waited_for:
        run.set_tags({TAG_CACHE_WAITED: f"{claim.waited_s:.1f}"})
    if build is None:
        entry = cache.lookup(fp)
        if entry is None:  # removed between the claim and now (cache gc): not ours to rebuild
            raise RuntimeError(f"evaluate cache entry {cache.path(fp)} disappeared")
    else:
        with cache.build(fp) as tmp:
            entry = {**build(tmp), "stage": STAGE, "fingerprint": fp, "run_id": run.run_id}
            write_record(tmp, entry)
    hit = build is None
    source = cache.path(fp)
    for name in entry["images"]:
        shutil.copy2(source / name, run.workdir / name)
    run.mark_cache(hit, fp, entry["run_id"] if hit else None)
    if hit:
        log.info("evaluate: perplexity and plots reused from %s (cache hit %s)", source, fp)
    return entry, hit


def evaluate(ctx: StageContext, prep_record: PrepRecord, pretrain_record: PretrainRecord,
             finetune_records: list[FinetuneRecord]) -> EvaluateRecord:
    """The stage runs every time (the report says which stages this run reused); its
    measurements are claimed before its run opens, as ``cached_stage`` does, so waiting for
    another run that is measuring the same thing is neither timed nor charged as carbon.
    The builder keeps the claim until its report is written."""
    cfg = ctx.cfg
    records: list[StageRecord] = [prep_record, pretrain_record, *finetune_records]
    title = report_title(cfg)
    fp = measurement_fingerprint(cfg, title, records)
    cache = StageCache(ctx.home, STAGE)
    results = {rec.init: rec.test_scores() for rec in finetune_records}
    rows = stage_rows(records)
    rows[1]["trained"] = cfg.pretrain.max_steps > 0  # 0: a checkpoint passed through, not pretrained
    with cache.claim(fp, wait_timeout(cfg)) as claim:
        if not claim.done:
            return _report(ctx, finetune_records, results, rows, lambda run: measured(
                run, cache, fp, claim,
                lambda tmp: measure(cfg, prep_record, pretrain_record, finetune_records, results, rows, title, tmp)))
    return _report(ctx, finetune_records, results, rows, lambda run: measured(run, cache, fp, claim, None))


def _report(ctx: StageContext, finetune_records: list[FinetuneRecord], results: dict[str, dict[str, float]],
            rows: list[dict[str, Any]],
            measured_by: Callable[[StageRun], tuple[dict[str, Any], bool]]) -> EvaluateRecord:
    """The evaluate run: metrics from the records and the measurement, and the report."""
    from modules.evaluation.report import distillation_note, render_report
    from modules.tasks import get_task

    cfg = ctx.cfg
    task = get_task(cfg.finetune.task)
    headline = task.headline
    with tracked_stage(ctx, STAGE) as run:
        out = run.workdir
        entry, hit = measured_by(run)
        lm, majority, images = entry["lm"], entry["majority"], list(entry["images"])
        loss, perplexity = lm["loss"], lm["perplexity"]
        metrics = {} if loss is None or perplexity is None else {"val/loss": loss, "val/perplexity": perplexity}
        for init, m in results.items():
            for key, value in m.items():
                metrics[f"test/{key}/{init}"] = value
        if "pretrained" in results and "scratch" in results:
            metrics[f"test/{headline}_gain"] = results["pretrained"][headline] - results["scratch"][headline]
        if majority is not None:
            metrics[f"test/{headline}_majority"] = majority[headline]
        run.log_metrics(metrics)

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
                          artifacts=["report.md", *images], cache_hit=hit)


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
