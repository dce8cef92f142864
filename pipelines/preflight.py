"""Input checks that run before any work, so bad input never leaves state behind.

Called by the CLI and by ``run_pipeline`` before the MLflow tracker exists: every failure
here is one line and exit code 2 with no run, no cache entry and no state dir created.
"""

from __future__ import annotations

from typing import Any

from pipelines.errors import UserError

NEEDS_LABELS = ("finetune", "evaluate", "run")


def check_inputs(cfg: dict[str, Any], until: str = "prep") -> None:
    """Raise ``UserError`` for data that cannot serve the stages up to ``until``.

    A finished prep output for this exact config and data means the data was validated
    when it was built: only the fingerprint is computed then (it hashes the input files,
    memoised per file on size and mtime, so the later stages do not read them again). Otherwise the data
    is loaded in full here, because only a full read finds a bad byte, an empty labeled
    file or a one-class label column; prep reuses that load.
    """
    from modules.data.errors import DataError
    from modules.data.sources import check_data, has_labels
    from pipelines.model_init import check_init

    check_init(cfg)  # model.init: exists, config.json + safetensors, no unrequested custom code
    if until in NEEDS_LABELS:
        from pipelines.model_init import check_checkpoint_ref
        from pipelines.stages.finetune import BUILTIN_INITS

        for init in cfg["finetune"]["inits"]:  # extra checkpoints to tune next to pretrained/scratch
            if init not in BUILTIN_INITS:
                check_checkpoint_ref(cfg, init, "finetune.inits")
                _check_local_family(cfg, init)
    data = cfg["data"]
    if until in NEEDS_LABELS and not has_labels(data):
        fix = ("set data.labeled_path=<labeled file>" if data["source"] == "local_text"
               else "use a labeled source, e.g. data=sst2_local data.path=train.tsv")
        raise UserError(f"data={data['name']} has no labels to fine-tune or evaluate on; {fix} "
                        f"(or run `transferlab pretrain` only)")
    try:
        if _prep_is_cached(cfg):
            return
        check_data(data, cfg["finetune"]["task"])
    except DataError as exc:
        raise UserError(str(exc)) from exc


def _check_local_family(cfg: dict[str, Any], init: str) -> None:
    """A local checkpoint's family is known from its config.json: refuse one that cannot
    serve the task now, not after pretraining (a hub or MLflow one is checked once fetched)."""
    import json
    from pathlib import Path

    from pipelines.model_init import family_of, kind_of
    from pipelines.stages.finetune import check_task_family, init_label

    if kind_of(init) != "local":
        return
    config = json.loads((Path(init).expanduser().resolve() / "config.json").read_text())
    check_task_family(cfg["finetune"]["task"], family_of(config, init), f"the {init_label(init)} checkpoint in finetune.inits")


def _prep_is_cached(cfg: dict[str, Any]) -> bool:
    """Whether a finished prep output exists for this config (reads, never creates, state)."""
    from pipelines.cache import StageCache
    from pipelines.stages.prep import prep_fingerprint

    return StageCache(cfg["paths"]["home"], "prep").lookup(prep_fingerprint(cfg)) is not None
