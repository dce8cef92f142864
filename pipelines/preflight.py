"""Input checks that run before any work, so bad input never leaves state behind.

Called by the CLI and by ``run_pipeline`` before the MLflow tracker exists: every failure
here is one line and exit code 2 with no run, no cache entry and no state dir created.
"""

from __future__ import annotations

import logging
from typing import Any

from pipelines.config.schema import TransferLabConfig
from pipelines.errors import UserError

NEEDS_LABELS = ("finetune", "evaluate", "run")
CONNECT_TIMEOUT_S = 10  # sweep.cluster: how long a Dask scheduler has to answer

log = logging.getLogger("transferlab")


def check_inputs(cfg: TransferLabConfig, until: str = "prep", sweep: bool | None = None) -> None:
    """Raise ``UserError`` for data that cannot serve the stages up to ``until``.

    A finished prep output for this exact config and data means the data was validated
    when it was built: only the fingerprint is computed then (it hashes the input files,
    memoised per file on size and mtime, so the later stages do not read them again). Otherwise the data
    is loaded in full here, because only a full read finds a bad byte, an empty labeled
    file or a one-class label column; prep reuses that load.
    """
    from modules.data.errors import DataError
    from modules.data.sources import check_data, has_labels
    from pipelines.checkpoint_refs import check_init

    check_init(cfg)  # model.init: exists, config.json + safetensors, no unrequested custom code
    if until in NEEDS_LABELS:
        from modules.models.choices import BUILTIN_INITS
        from pipelines.checkpoint_refs import check_checkpoint_ref

        for init in cfg.finetune.inits:  # extra checkpoints to tune next to pretrained/scratch
            if init not in BUILTIN_INITS:
                check_checkpoint_ref(cfg, init, "finetune.inits")
                _check_local_family(cfg, init)
        _check_distill_refs(cfg)
        _check_lora_targets(cfg)
    data = cfg.data
    if until in NEEDS_LABELS and not has_labels(data):
        fix = ("set data.labeled_path=<labeled file>" if data.source == "local_text"
               else "use a labeled source, e.g. data=sst2_local data.path=train.tsv")
        raise UserError(f"data={data.name} has no labels to fine-tune or evaluate on; {fix} "
                        f"(or run `transferlab pretrain` only)")
    synthetic = data.source == "synthetic"
    if until in NEEDS_LABELS and synthetic:  # the class count is in the config: no need to import prep
        _check_label_budget(cfg, cfg.sweep.enabled if sweep is None else sweep, None)
    try:
        cached = _prep_record(cfg)
        if cached is None:
            check_data(data, cfg.finetune.task)
    except DataError as exc:
        raise UserError(str(exc)) from exc
    if until in NEEDS_LABELS and not synthetic:
        _check_label_budget(cfg, cfg.sweep.enabled if sweep is None else sweep, cached)
    if (cfg.sweep.enabled if sweep is None else sweep) and cfg.sweep.cluster:
        check_cluster(cfg.sweep.cluster)


def check_budget(task: str, budget: int, n_classes: int, key: str) -> None:
    """A classification budget below the class count cannot hold every class (the stratified
    subset would miss some and the metrics compare nothing): one line naming ``key``."""
    if task == "classification" and budget < n_classes:
        raise UserError(f"bad value for '{key}': {budget} labeled example(s) cannot contain all {n_classes} classes; "
                        f"use at least {n_classes}")


def _check_label_budget(cfg: TransferLabConfig, sweep: bool, prep_record: dict[str, Any] | None) -> None:
    """Fine-tuning budgets against the class count, known before any work: from the config
    (synthetic), the finished prep output, or the pre-flight load of the data files."""
    ft = cfg.finetune
    if ft.task != "classification" or all(init == "zero_shot" for init in ft.inits):
        return
    n_classes = _class_count(cfg, prep_record)
    if not n_classes:
        return
    if sweep:
        budgets = [b for b in cfg.sweep.budgets if b != "all"]
        if budgets:
            check_budget(ft.task, min(budgets), n_classes, "sweep.budgets")
    else:
        check_budget(ft.task, ft.train_examples, n_classes, "finetune.train_examples")


def _class_count(cfg: TransferLabConfig, prep_record: dict[str, Any] | None) -> int | None:
    from modules.data.sources import validated_label_names

    if cfg.data.source == "synthetic":
        return cfg.data.num_topics
    if prep_record is not None:
        return len((prep_record.get("stats") or {}).get("label_names") or []) or None
    names = validated_label_names(cfg.data, cfg.finetune.task)
    return len(names) if names else None


def _check_lora_targets(cfg: TransferLabConfig) -> None:
    """finetune.strategy=lora: each of finetune.lora_target_modules names a layer of the model
    that pretraining exports (the preset's arch, or a local model.init), so a typo stops the
    run before pretraining; other checkpoints are checked when a fine-tune builds them."""
    from modules.data.errors import DataError
    from pipelines.checkpoint_refs import kind_of

    if cfg.finetune.strategy != "lora":
        return
    model = cfg.model
    source = model.arch if model.from_scratch else model.init if kind_of(model.init) == "local" else None
    if source is None:
        return
    from modules.models.lora import LoraSettings, check_targets

    try:
        check_targets(source, LoraSettings.from_config(cfg.finetune).target_modules, model.trust_remote_code)
    except DataError as exc:
        raise UserError(str(exc)) from exc


def _check_local_family(cfg: TransferLabConfig, init: str) -> None:
    """A local checkpoint's family is known from its config.json: refuse one that cannot
    serve the task now, not after pretraining (a hub or MLflow one is checked once fetched)."""
    from pathlib import Path

    from modules.models.checkpoints import family_of, read_config
    from pipelines.checkpoint_refs import kind_of
    from pipelines.stages.finetune import check_task_family, init_label

    if kind_of(init) != "local":
        return
    config = read_config(Path(init).expanduser().resolve())
    check_task_family(cfg.finetune.task, family_of(config, init),
                      f"the {init_label(init)} checkpoint in finetune.inits")


def _check_distill_refs(cfg: TransferLabConfig) -> None:
    """distill.teacher / distill.student checkpoints (not this run's inits): they exist, no downloads."""
    from pipelines.checkpoint_refs import check_checkpoint_ref

    dc = cfg.distill
    if not dc.enabled:
        return
    if dc.teacher not in cfg.finetune.inits:
        check_checkpoint_ref(cfg, str(dc.teacher), "distill.teacher")
    if dc.student != "pretrained":
        check_checkpoint_ref(cfg, dc.student, "distill.student")


def _prep_record(cfg: TransferLabConfig) -> dict[str, Any] | None:
    """The finished prep output's record for this config, or None (reads, never creates, state)."""
    from pipelines.cache.store import StageCache
    from pipelines.stages.prep import prep_fingerprint

    return StageCache(cfg.paths.home, "prep").lookup(prep_fingerprint(cfg))


def check_cluster(address: str) -> int:
    """The number of workers on the Dask scheduler at ``address``; a one-line UserError when
    prefect-dask is missing or nothing answers there, before the sweep starts anything."""
    try:
        import distributed
        import prefect_dask  # noqa: F401
    except ImportError as exc:
        raise UserError(f"sweep.cluster={address} needs prefect-dask: pip install 'transferlab[cluster]' "
                        f"({one_line(exc)})") from exc
    try:
        with distributed.Client(address, timeout=CONNECT_TIMEOUT_S) as client:
            workers = len(client.nthreads())
    except (OSError, TimeoutError, ValueError) as exc:
        raise UserError(f"sweep.cluster={address}: no Dask scheduler answers there within {CONNECT_TIMEOUT_S} s "
                        f"(start one with `dask scheduler`, and workers with `dask worker {address} --nthreads 1`): "
                        f"{one_line(exc)}") from exc
    if not workers:
        log.warning("sweep: the Dask scheduler at %s has no workers yet; the points wait until one joins "
                    "(`dask worker %s --nthreads 1`)", address, address)
    return workers


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message``, at most 300 characters: an error as a log or report cell."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
