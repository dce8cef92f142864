"""finetune: tune one init on the task's labeled subset and test it; cached by fingerprint.

``init`` is ``pretrained`` (this pipeline's pretrained export), ``scratch`` (the same
architecture with fresh weights), ``zero_shot`` (classification with a causal LM: prompt
scoring, no training), ``tfidf`` (no network: the task's classical baseline,
modules/baselines/classical.py, on the same labeled subset) or any checkpoint reference
that ``model.init`` accepts (a local HF dir, a hub id, ``runs:/``, ``models:/``), tuned
with its own tokenizer.

A finished fine-tune is a content-addressed cache entry like prep and pretrain, so a sweep
run again (or a point that finished before a crash) is reused, not recomputed; the reuse
gets its own MLflow child run tagged ``transferlab.cache=hit`` with the metrics it reuses.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.config import FinetuneConfig
from modules.models.checkpoints import checkpoint_family
from modules.models.choices import BUILTIN_INITS, TFIDF
from pipelines.cache.store import fingerprint
from pipelines.config.schema import TransferLabConfig
from pipelines.errors import UserError
from pipelines.stages.cached import CachedStage, CacheEntry, cached_stage
from pipelines.stages.common import StageContext, StageRun
from pipelines.stages.inference_cost import cost_metrics, measure_cost, measure_served
from pipelines.stages.pretrain import lightning_logger
from pipelines.stages.records import FinetuneRecord, PrepRecord, PretrainRecord
from pipelines.tracking.runs import TAG_INIT, TAG_STAGE, TAG_STRATEGY, TAG_TASK, run_context

if TYPE_CHECKING:  # torch-heavy: imported where a fine-tune runs
    from modules.training.recipes import FinetuneJob, FinetuneResult

log = logging.getLogger("transferlab")

TAG_INIT_SOURCE = "transferlab.init_source"  # init=checkpoint: which one (credentials redacted)
TAG_BASELINE_CHOICE = "transferlab.baseline_choice"  # init=tfidf: what validation chose ("C=1.0", "rule=copy")
# finetune.search_trials > 0: each trial's run, nested under its fine-tune's run (not a stage of its own).
STAGE_TRIAL = "finetune_trial"
TAG_TRIAL = "transferlab.trial"


def init_label(init: str) -> str:
    """How an init is named in run names, reports and records: ``checkpoint:<name>`` for a
    checkpoint reference (its last path segment), the init itself otherwise."""
    if init in BUILTIN_INITS:
        return init
    from pipelines.checkpoint_refs import source_label

    # The last two path segments: "sentence-transformers/all-MiniLM-L6-v2", "<run id>/hf_model",
    # "my_package/model" (a bare "model" or "hf_model" says nothing).
    parts = [p for p in source_label(init).split(":/")[-1].split("/") if p]
    return f"checkpoint:{'/'.join(parts[-2:]) or init}"


def _source(cfg: TransferLabConfig, pretrain_record: PretrainRecord, init: str) -> tuple[Path, dict[str, Any]]:
    """The checkpoint ``init`` tunes from (a local dir) and what identifies its content."""
    from modules.models.checkpoints import content_digest
    from pipelines.checkpoint_refs import locate_checkpoint

    if init in BUILTIN_INITS:
        hf_model = Path(pretrain_record.hf_model)
        return hf_model, {"pretrain": pretrain_record.fingerprint or content_digest(hf_model)}

    path = locate_checkpoint(cfg, init, "finetune.inits")
    return path, {"checkpoint": content_digest(path)}


def finetune_fingerprint(cfg: TransferLabConfig, prep_record: PrepRecord, identity: dict[str, Any],
                         init: str) -> str:
    """What a fine-tune's output depends on. ``tfidf`` reads only the labeled data, the task,
    the budget and the seed: its ``identity`` (the pretrained source) is ignored, so a
    changed pretraining does not recompute it."""
    if init == TFIDF:
        return fingerprint("finetune", {"prep": prep_record.fingerprint, "init": init, "seed": cfg.seed,
                                        "finetune": {"task": cfg.finetune.task,
                                                     "train_examples": cfg.finetune.train_examples}})
    ft = asdict(cfg.finetune)
    # inits and register_as say what runs and where it is published, not what a fine-tune computes.
    keys = {k: v for k, v in ft.items()
            if k not in ("inits", "register_as") and not k.startswith(("zero_shot", "search_"))}
    if cfg.finetune.strategy != "lora":  # the adapter's knobs change nothing else: old entries stay valid
        keys = {k: v for k, v in keys.items() if not k.startswith("lora_")}
    if cfg.finetune.monitor == "val/loss":  # the default, as before the key existed: old entries stay valid
        keys.pop("monitor")
    if not cfg.finetune.group_by_length:  # shuffled batches, as before the key existed: old entries stay valid
        keys.pop("group_by_length")
    if cfg.finetune.search_trials:
        # The searched range replaces the configured rates; search off (0) leaves the payload,
        # and so every existing cache entry, as it was.
        keys = {**{k: v for k, v in keys.items() if k not in ("lr", "checkpoint_lr")},
                **{k: v for k, v in ft.items() if k.startswith("search_")}}
    if init == "zero_shot":
        keys = {k: v for k, v in ft.items() if k.startswith("zero_shot") or k in ("task", "max_length")}
    trainer = {k: getattr(cfg.trainer, k) for k in ("accelerator", "precision", "deterministic")}
    return fingerprint("finetune", {"prep": prep_record.fingerprint, "source": identity, "init": init,
                                    "finetune": keys, "seed": cfg.seed, "trainer": trainer,
                                    "eval_batch_size": cfg.evaluate.batch_size})


def check_task_family(task: str, family: str, what: str) -> None:
    from modules.tasks import family_error

    why = family_error(task, family, what)
    if why:
        raise UserError(why)


def finetune(ctx: StageContext, prep_record: PrepRecord, pretrain_record: PretrainRecord, init: str) -> FinetuneRecord:
    cfg = ctx.cfg
    ft = cfg.finetune
    task = ft.task
    label = init_label(init)
    source, identity, family = Path(), dict[str, Any](), ""
    if init != TFIDF:  # tfidf uses no checkpoint: the pretrain record is not read
        source, identity = _source(cfg, pretrain_record, init)
        family = checkpoint_family(source)
        check_task_family(task, family, f"the {'pretrained model' if init in BUILTIN_INITS else label} checkpoint")
    if init == "zero_shot":
        from pipelines.config.compose import check_zero_shot

        check_zero_shot(ft, family)
    tags = {TAG_INIT: init if init in BUILTIN_INITS else "checkpoint", TAG_TASK: task}
    if init not in ("zero_shot", TFIDF):
        tags[TAG_STRATEGY] = ft.strategy
    if init not in BUILTIN_INITS:
        from pipelines.checkpoint_refs import source_label

        tags[TAG_INIT_SOURCE] = source_label(init)

    def build(run: StageRun, out: Path) -> dict[str, Any]:
        if init == "zero_shot":
            result = _zero_shot(cfg, prep_record, source, out)
        elif init == TFIDF:
            result = _tfidf(cfg, prep_record, out)
        else:
            result = _train(ctx, run, prep_record, source, family, init, out)
            result["inference"] = measure_cost(cfg, prep_record, out / "hf_model", task,
                                               result["label_names"] or prep_record.label_names, out,
                                               f"finetune[{label}]")
        return {**result, "init": label, "task": task}

    served: dict[str, str | None] = {}  # log_entry's MLflow model URI, for make_record

    def log_entry(run: StageRun, entry: CacheEntry) -> None:
        built = entry.record
        if not entry.hit and init not in ("zero_shot", TFIDF):
            run.log_artifact(entry.path / "hf_model", "hf_model")
            if (entry.path / "adapter").is_dir():  # strategy=lora
                run.log_artifact(entry.path / "adapter", "adapter")
        if init not in ("zero_shot", TFIDF):
            served["uri"] = _mlflow_model(ctx, run, entry, prep_record.label_names)
        run.log_metrics(built["metrics"])  # all test metrics (per class too); a reused point reads complete in the UI
        counts = {"data/train_examples": built["train_examples"],
                  "model/trainable_parameters": built["trainable_parameters"]}
        if built.get("epochs") is not None:
            counts["train/epochs"] = built["epochs"]
        if built.get("total_parameters"):  # entries cached before it was recorded lack it
            counts["model/trainable_share"] = built["trainable_parameters"] / built["total_parameters"]
        if built.get("adapter_bytes") is not None:
            counts["model/adapter_bytes"] = built["adapter_bytes"]
        if built.get("lr_search"):
            counts.update(lr_search_metrics(built["lr_search"]))
        counts.update(cost_metrics(built.get("inference")))
        run.log_metrics(counts)
        if built.get("requested_examples") != built["train_examples"] and init != "zero_shot":
            run.set_tags({"transferlab.train_examples_clamped": f"{built['requested_examples']}->"
                                                                f"{built['train_examples']}"})
        if built.get("majority"):  # tfidf: the majority-class floor on the same test split
            from modules.tasks import HEADLINE

            headline = f"test/{HEADLINE[task]}"
            run.log_metrics({f"{headline}_majority": built["majority"][headline]})
        if built.get("choice"):
            run.set_tags({TAG_BASELINE_CHOICE: ", ".join(f"{k}={v}" for k, v in built["choice"].items())})
        run.log_artifact(entry.path / built["predictions_file"])

    def make_record(run: StageRun, entry: CacheEntry) -> FinetuneRecord:
        built = entry.record
        return FinetuneRecord(**entry.record_fields(run), init=label, task=task, strategy=built.get("strategy"),
                              predictions=str(entry.path / built["predictions_file"]), metrics=built["metrics"],
                              train_examples=built["train_examples"],
                              requested_examples=built.get("requested_examples"),
                              label_names=built.get("label_names") or prep_record.label_names,
                              mlflow_model=served.get("uri"), inference=built.get("inference"))

    fp = finetune_fingerprint(cfg, prep_record, identity, init)
    return cached_stage(ctx, CachedStage("finetune", fp, build, make_record, log_entry, label=f"finetune[{label}]",
                                         run_name=f"finetune-{label}", tags=tags))


def _kg(value: float | None) -> str:
    return "missing" if value is None else f"{value:.6g}"


def register_best(ctx: StageContext, prep_record: PrepRecord, pretrain_record: PretrainRecord,
                  tuned: list[FinetuneRecord]) -> dict[str, Any] | None:
    """Register the best trained init's MLflow model under ``finetune.register_as`` (by the
    task's headline test metric; tfidf and zero_shot have no MLflow model and do not compete).

    Tagged with what a user deciding to deploy it asks: task, labels, init, strategy, the
    test metric, the data fingerprint, what building it emitted (``carbon/emissions_kg``:
    the fine-tune plus, for ``pretrained``, the pretraining it started from; each part in
    its own tag) and the pipeline run it came from. Returns the registry's answer, or None
    (registration off, or no trained init with an MLflow model).
    """
    from modules.tasks import HEADLINE
    from pipelines.tracking import registry

    name = ctx.cfg.finetune.register_as
    if not name:
        return None
    metric = f"test/{HEADLINE[ctx.cfg.finetune.task]}"
    servable = [r for r in tuned if r.mlflow_model and r.metrics.get(metric) is not None]
    if not servable:
        log.info("finetune: no fine-tune with an MLflow model; nothing registered under %s", name)
        return None
    best = max(servable, key=lambda r: r.metrics[metric])
    assert best.mlflow_model is not None
    tune_kg = best.produced()[0]
    # scratch used no pretraining; a checkpoint init's pretraining happened elsewhere, unmeasured.
    external = best.init not in ("pretrained", "scratch")
    pretrain_kg = pretrain_record.produced()[0] if best.init == "pretrained" else 0.0
    total = None if tune_kg is None or pretrain_kg is None else tune_kg + pretrain_kg
    tags = {TAG_TASK: best.task, "transferlab.labels": ",".join(best.label_names)[:5000], TAG_INIT: best.init,
            TAG_STRATEGY: str(best.strategy), "transferlab.test_metric": metric, metric: f"{best.metrics[metric]:.6g}",
            registry.TAG_DATA_FP: prep_record.fingerprint, "carbon/emissions_kg": _kg(total),
            "carbon/finetune_kg": _kg(tune_kg),
            "carbon/pretrain_kg": "not measured (external checkpoint)" if external else _kg(pretrain_kg),
            "transferlab.source_pipeline_run": ctx.parent_run_id or "", "transferlab.finetune_run": best.run_id}
    description = (f"{best.task} fine-tune (init {best.init}, strategy {best.strategy}), best of "
                   f"{', '.join(r.init for r in servable)} by {metric} = {best.metrics[metric]:.4g}; "
                   f"{best.train_examples} labeled examples; labels {', '.join(best.label_names)}; "
                   f"carbon {_kg(total)} kg CO2e{' (fine-tuning only)' if external else ' including pretraining'}.")
    return registry.register_finetuned(ctx.tracker, name, best.mlflow_model, best.run_id, best.fingerprint, tags,
                                       description)


def _mlflow_model(ctx: StageContext, run: StageRun, entry: CacheEntry, prep_labels: list[str]) -> str | None:
    """The fine-tune's servable MLflow model (pipelines/tracking/mlflow_models.py): a build logs
    it; a hit reuses the one this experiment holds of the entry, else logs its own.

    A model that cannot be logged costs the fine-tune nothing: its metrics, predictions and
    ``hf_model/`` stand; the run says why in ``transferlab.mlflow_model_error``."""
    from pipelines.tracking import mlflow_models

    built = entry.record
    if entry.hit:
        uri = mlflow_models.logged_model(ctx.tracker, built["fingerprint"])
        if uri:
            mlflow_models.link_model(ctx.tracker, run.run_id, uri)
            return uri
    labels = built.get("label_names") or prep_labels
    card = (f"transferlab fine-tune for {built['task']} (init {built['init']}, strategy {built.get('strategy')}); "
            f"labels: {', '.join(labels)}; test metrics: {built['metrics']}; cache entry {entry.path}.")
    try:
        ft = ctx.cfg.finetune
        generation = {"max_length": ft.max_length, "max_target_length": ft.max_target_length,
                      "num_beams": ft.num_beams}
        return mlflow_models.log_finetuned_model(ctx.tracker, run.run_id, built["fingerprint"], entry.path / "hf_model",
                                                 built["task"], labels, card, ctx.cfg.model.trust_remote_code,
                                                 generation)
    except Exception as exc:  # the fine-tune itself succeeded: its results stand
        log.warning("finetune[%s]: not logged as an MLflow model: %s", built["init"], exc)
        run.set_tags({mlflow_models.TAG_MODEL_ERROR: str(exc)[:500]})
        return None


def _train(ctx: StageContext, run: StageRun, prep_record: PrepRecord, source: Path, family: str, init: str,
           out: Path) -> dict[str, Any]:
    from modules.models.checkpoints import clamp_max_length
    from modules.tasks import get_task
    from modules.training.learning_rates import finetune_lr
    from modules.training.recipes import FinetuneJob

    cfg = ctx.cfg
    ft = cfg.finetune
    checkpoint = init not in BUILTIN_INITS  # a checkpoint: the "pretrained" weights are its own
    assert ft.lr is not None and ft.checkpoint_lr is not None  # filled in by compose()
    ft = replace(ft, lr=finetune_lr(ft.lr, ft.checkpoint_lr, checkpoint))
    if checkpoint:
        ft = replace(ft, max_length=clamp_max_length(ft.max_length, source, init_label(init)))
    job = FinetuneJob(Path(prep_record.path), source, "scratch" if init == "scratch" else "pretrained", family,
                      out, name=init_label(init), trust_remote_code=cfg.model.trust_remote_code)
    search: dict[str, Any] | None = None
    if ft.search_trials:
        result, search = _search_lr(ctx, run, job, ft, init)
    else:
        result = _fit(ctx, run, job, ft)
    run.log_metrics(result.speed)  # the (chosen) fine-tune's throughput/*: this run's, not the cache entry's
    task = get_task(ft.task)
    task.save_predictions(out / task.predictions_file, result.predictions)
    # The best weights live on in hf_model/; the Lightning checkpoint (with optimizer state,
    # ~3x the size) has served its purpose once the test ran.
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    built = {"metrics": result.metrics, "train_examples": result.train_examples,
             "requested_examples": ft.train_examples,
             "epochs": result.epochs, "strategy": result.strategy, "trainable_parameters": result.trainable_parameters,
             "total_parameters": result.total_parameters,
             "label_names": result.label_names, "predictions_file": task.predictions_file}
    if result.adapter_bytes is not None:
        built["adapter_bytes"] = result.adapter_bytes
    return {**built, "lr_search": search} if search else built


def _fit(ctx: StageContext, run: StageRun, job: FinetuneJob, ft: FinetuneConfig) -> FinetuneResult:
    """One fine-tune (``modules.training.recipes.finetune_on_task``), Lightning logging into ``run``."""
    from modules.training.recipes import finetune_on_task

    cfg = ctx.cfg
    with lightning_logger(ctx, run) as logger:
        return finetune_on_task(job, ft, cfg.trainer, cfg.seed, cfg.evaluate.batch_size, logger=logger)


def _search_lr(ctx: StageContext, run: StageRun, job: FinetuneJob, ft: FinetuneConfig,
               init: str) -> tuple[FinetuneResult, dict[str, Any]]:
    """``finetune.search_trials`` fine-tunes at rates over [search_lr_min, search_lr_max]
    (``modules.training.lr_search``); the one with the best
    best-epoch value of ``finetune.monitor`` (val/loss by default) is the stage's result.

    Each trial is an MLflow run nested under the stage's run (``finetune-<init>-trial-<n>``:
    param ``finetune.lr``, its training curves, ``val/best_loss`` and test metrics) and trains in
    its own ``trials/trial-<n>/``. Only validation loss selects: the trials' test metrics are
    shown, never used. The chosen trial's ``hf_model/`` becomes the stage's; the rest of
    ``trials/`` is deleted. Returns the chosen result and what record.json keeps of the search.
    """
    from modules.training.lr_search import search_lr
    from modules.training.recipes import monitor_mode

    label = init_label(init)
    trials_dir = job.out_dir / "trials"
    # The search minimises: an accuracy (finetune.monitor=val/accuracy) enters negated.
    sign = 1.0 if monitor_mode(ft.monitor) == "min" else -1.0
    best_key = "val/best_" + ft.monitor.removeprefix("val/")  # val/best_loss, val/best_accuracy
    tags = {TAG_STAGE: STAGE_TRIAL, TAG_INIT: init if init in BUILTIN_INITS else "checkpoint", TAG_TASK: ft.task,
            TAG_STRATEGY: ft.strategy}

    def trial(number: int, lr: float) -> tuple[float | None, tuple[FinetuneResult, str]]:
        out = trials_dir / f"trial-{number}"
        with run_context(ctx.tracker, f"finetune-{label}-trial-{number}", {**tags, TAG_TRIAL: str(number)},
                         run.run_id) as trial_id:
            trial_run = StageRun(trial_id, out, ctx.tracker)
            ctx.tracker.log_params(trial_id, {"finetune.lr": str(lr), "search.trial": str(number)})
            result = _fit(ctx, trial_run, replace(job, out_dir=out, name=f"{label} trial {number}"), replace(ft, lr=lr))
            shown = {k: v for k, v in result.metrics.items() if k.startswith("test/")}
            if result.best_score is not None:
                shown[best_key] = result.best_score
            trial_run.log_metrics({**shown, "train/epochs": result.epochs})
        shutil.rmtree(out / "checkpoints", ignore_errors=True)  # the best epoch's weights are in hf_model/
        lower_is_better = None if result.best_score is None else result.best_score * sign
        return lower_is_better, (result, trial_id)

    found = search_lr(trial, ft.search_trials, ft.search_lr_min, ft.search_lr_max, seed=ctx.cfg.seed)
    best = found.best
    result, _ = best.result
    shutil.move(trials_dir / f"trial-{best.number}" / "hf_model", job.out_dir / "hf_model")
    if (trials_dir / f"trial-{best.number}" / "adapter").is_dir():  # strategy=lora
        shutil.move(trials_dir / f"trial-{best.number}" / "adapter", job.out_dir / "adapter")
    shutil.rmtree(trials_dir)
    log.info("finetune[%s]: lr %.3g selected on validation (trial-%d of %d trials, %s %.4f)", label, best.lr,
             best.number, len(found.trials), ft.monitor, sign * best.val_loss)
    # record.json: each trial's best value of the monitored figure, under its own name.
    score_key = "val_loss" if ft.monitor == "val/loss" else ft.monitor.removeprefix("val/")
    return result, {
        "selected_lr": best.lr, "selected_trial": best.number, "monitor": ft.monitor,
        "lr_min": ft.search_lr_min, "lr_max": ft.search_lr_max,
        "trials": [{"trial": t.number, "lr": t.lr, "run_id": t.result[1], "epochs": t.result[0].epochs,
                    score_key: sign * t.val_loss if math.isfinite(t.val_loss) else None} for t in found.trials],
    }


def lr_search_metrics(search: dict[str, Any]) -> dict[str, float]:
    """What the stage run shows of its learning-rate search (record.json's ``lr_search``)."""
    return {"finetune/selected_lr": search["selected_lr"], "finetune/search_trials": len(search["trials"])}


def _zero_shot(cfg: TransferLabConfig, prep_record: PrepRecord, source: Path, out: Path) -> dict[str, Any]:
    """No training: the pretrained causal LM classifies the test split by scoring each
    label's verbalisation after a prompt (modules/evaluation/zero_shot.py)."""
    from modules.evaluation.zero_shot import zero_shot_test
    from modules.tasks import get_task

    ft = cfg.finetune
    names = prep_record.label_names
    if ft.zero_shot_verbalizers is not None and len(ft.zero_shot_verbalizers) != len(names):
        raise UserError(f"bad value for 'finetune.zero_shot_verbalizers': {len(ft.zero_shot_verbalizers)} "
                        f"given for {len(names)} labels ({', '.join(names)}); one per label, in label-id order")
    result = zero_shot_test(prep_record.path, source, ft.zero_shot_template, ft.zero_shot_verbalizers,
                            ft.zero_shot_normalize, cfg.evaluate.batch_size, cfg.model.trust_remote_code)
    task = get_task("classification")
    task.save_predictions(out / task.predictions_file, result.rows)
    metrics = result.metrics
    log.info("finetune[zero_shot]: verbalizers %s; test/accuracy %.4f (chance %.4f)",
             result.verbalizers, metrics["test/accuracy"], 1 / len(names))
    return {"metrics": metrics, "train_examples": 0, "requested_examples": 0, "epochs": None, "strategy": None,
            "trainable_parameters": 0, "label_names": names, "predictions_file": task.predictions_file,
            "verbalizers": result.verbalizers}


def _tfidf(cfg: TransferLabConfig, prep_record: PrepRecord, out: Path) -> dict[str, Any]:
    """No network: the task's classical baseline (modules/baselines/classical.py) on the
    labeled subset the neural fine-tunes get for this budget and seed."""
    from modules.baselines.classical import classical_baseline, load_labeled
    from modules.tasks import get_task

    ft = cfg.finetune
    task = get_task(ft.task)
    result = classical_baseline(load_labeled(prep_record.path), ft.task, ft.train_examples, cfg.seed)
    task.save_predictions(out / task.predictions_file, result.predictions)
    cost = None
    if result.predict is not None:  # what serving it would cost, timed like the networks
        from modules.models.inference import ServedModel

        served = ServedModel(result.predict, result.trainable_parameters, "float64")
        cost = measure_served(cfg, prep_record, served, ft.task, out, "finetune[tfidf]")
    headline = f"test/{task.headline}"
    log.info("finetune[tfidf]: %s on %d labeled examples; %s %.4f (majority class %.4f)",
             ", ".join(f"{k}={v}" for k, v in result.choice.items()), result.train_examples, headline,
             result.metrics[headline], result.majority[headline])
    return {"metrics": result.metrics, "train_examples": result.train_examples, "requested_examples": ft.train_examples,
            "epochs": None, "strategy": None, "trainable_parameters": result.trainable_parameters,
            "label_names": result.label_names, "predictions_file": task.predictions_file,
            "majority": result.majority, "choice": result.choice, "inference": cost}
