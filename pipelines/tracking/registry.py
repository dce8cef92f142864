"""Register the pretrained export (``pretrain.register_as``) and the best fine-tune
(``finetune.register_as``) in the MLflow Model Registry.

A pretrained export's version points at the pretrain run's ``hf_model/`` artifact (a plain
``save_pretrained`` directory: safetensors + tokenizer), so ``model.init=models:/<name>/<v>``
downloads exactly what fine-tuning needs. MLflow 3 also supports versions backed by
"logged models", but a plain source works with the sqlite/file stores: the store keeps
``source`` as the version's storage location and hands it back from
``get_model_version_download_uri``; no MLflow flavor is involved.

One version per pretrain fingerprint: a cache hit (or a rebuilt identical output) whose
fingerprint already has a version registers nothing new.

A fine-tune's version is backed by its MLflow model (``models:/m-<id>``, the
``transformers`` flavor), so ``mlflow models serve -m models:/<name>/<version>`` serves it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from pipelines.config.compose import check_register_as
from pipelines.config.schema import TransferLabConfig
from pipelines.tracking.runs import TAG_FINGERPRINT, redact


class PreparedData(Protocol):
    """What registering reads of the prepared data (a stages.records.PrepRecord): declared here
    because tracking sits below the stages and must not import them."""

    @property
    def path(self) -> str: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def lm_fingerprint(self) -> str: ...

log = logging.getLogger("transferlab")

TAG_REGISTERED = "transferlab.registered_model"
TAG_DATA_FP = "transferlab.data_fingerprint"
TAG_TOKENIZER = "transferlab.tokenizer"


def _fmt(value: float | None, unit: str = "") -> str:
    return "missing" if value is None else f"{value:.6g}{unit}"


def find_version(client, name: str, fp: str):
    """The version of ``name`` registered with fingerprint ``fp``, or None."""
    for mv in client.search_model_versions(f"name='{name}'"):
        if mv.tags.get(TAG_FINGERPRINT) == fp:
            return mv
    return None


def ensure_registered_model(client, name: str, description: str) -> None:
    """Create registered model ``name`` unless it exists."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(name, description=description)
        except MlflowException as exc:  # another run (another seed, say) created it since we looked
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise


def register_export(
    tracker,
    cfg: TransferLabConfig,
    stage_run_id: str,
    source_run_id: str,
    fp: str,
    prep_record: PreparedData,
    steps: int,
    metrics: dict[str, float],
    carbon: dict[str, float | None],
) -> dict[str, Any] | None:
    """Register ``runs:/<source_run_id>/hf_model`` under ``pretrain.register_as``.

    ``source_run_id`` is the run that logged ``hf_model/`` (this stage's run on a cache miss,
    the building run on a hit). Returns ``{"name", "version", "new"}`` or None when
    registration is off. Tags the stage run with ``transferlab.registered_model``.
    """
    name = cfg.pretrain.register_as
    if not name:
        return None
    check_register_as(name)

    def create(client: Any) -> Any:
        stats = _stats(prep_record)
        tokenizer = f"{stats.get('tokenizer_kind', cfg.tokenizer.kind)}/{stats.get('vocab_size', '?')}"
        model = cfg.model
        tags = {
            TAG_FINGERPRINT: fp,
            TAG_DATA_FP: prep_record.lm_fingerprint,
            TAG_TOKENIZER: tokenizer,
            "transferlab.family": model.family,
            "transferlab.arch": model.arch,
            "transferlab.init": redact(model.init or "scratch"),
            "carbon/emissions_kg": _fmt(carbon.get("emissions_kg")),
            "carbon/energy_kwh": _fmt(carbon.get("energy_kwh")),
        }
        description = (
            f"{model.name} ({model.family} LM, arch {model.arch}, init {tags['transferlab.init']}), "
            f"{steps} pretraining steps, val/loss {_fmt(metrics.get('val/loss'))}; "
            f"data {cfg.data.name} (prep fingerprint {prep_record.fingerprint}), tokenizer {tokenizer}; "
            f"carbon {_fmt(carbon.get('emissions_kg'), ' kg CO2e')}, {_fmt(carbon.get('energy_kwh'), ' kWh')}."
        )
        return client.create_model_version(name, source=f"runs:/{source_run_id}/hf_model", run_id=source_run_id,
                                           tags=tags, description=description)

    return _register_once(tracker, "pretrain", name, fp, f"transferlab pretrained exports ({cfg.experiment_name})",
                          stage_run_id, create)


def _register_once(tracker, stage: str, name: str, fp: str, about: str, stage_run_id: str,
                   create: Callable[[Any], Any]) -> dict[str, Any]:
    """One version of registered model ``name`` (created with description ``about`` if new) per
    fingerprint ``fp``: the one that holds it already, else ``create(client)``'s. Tags the
    stage run with ``transferlab.registered_model``; returns ``{"name", "version", "new", "uri"}``."""
    client = tracker.client
    ensure_registered_model(client, name, about)
    existing = find_version(client, name, fp)
    if existing is not None:
        log.info("%s: %s version %s already holds fingerprint %s; registering nothing new", stage, name,
                 existing.version, fp)
        version, new = existing.version, False
    else:
        version, new = create(client).version, True
        log.info("%s: registered %s version %s (models:/%s/%s)", stage, name, version, name, version)
    tracker.set_tags(stage_run_id, {TAG_REGISTERED: f"{name}/{version}"})
    return {"name": name, "version": str(version), "new": new, "uri": f"models:/{name}/{version}"}


def _stats(prep_record: PreparedData) -> dict[str, Any]:
    try:
        return json.loads((Path(prep_record.path) / "stats.json").read_text())
    except (OSError, ValueError):
        return {}


def has_hf_model(tracker, run_id: str) -> bool:
    """Whether ``run_id`` is in this store and logged ``hf_model/`` (a cache entry can
    outlive or come from another store)."""
    from mlflow.exceptions import MlflowException

    try:
        return any(a.path == "hf_model" for a in tracker.client.list_artifacts(run_id))
    except MlflowException:
        return False


def source_carbon(tracker, run_id: str) -> dict[str, float | None]:
    """What building the export cost, from the run that built it."""
    from mlflow.exceptions import MlflowException

    try:
        metrics = tracker.client.get_run(run_id).data.metrics
    except MlflowException:
        return {"emissions_kg": None, "energy_kwh": None}
    return {"emissions_kg": metrics.get("carbon/emissions_kg"), "energy_kwh": metrics.get("carbon/energy_kwh")}


def register_finetuned(tracker, name: str, model_uri: str, stage_run_id: str, fp: str, tags: dict[str, str],
                       description: str) -> dict[str, Any]:
    """Register a fine-tune's MLflow model (``models:/m-<id>``, tracking/mlflow_models.py) under
    ``finetune.register_as``: one version per fine-tune fingerprint, as for pretrained exports.

    ``stage_run_id`` is the fine-tune run that logged (or, on a cache hit, reused) the model;
    it gets the ``transferlab.registered_model`` tag. Returns ``{"name", "version", "new", "uri"}``.
    """
    check_register_as(name, "finetune.register_as")

    def create(client: Any) -> Any:
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri

        model_id = model_uri.removeprefix("models:/")
        source_run = client.get_logged_model(model_id).source_run_id
        # MLflow 3.17's sqlalchemy registry resolves a models:/m-<id> source through a bare
        # MlflowClient(), i.e. the process's global store: ours for the call. It used to be
        # ours only by luck (Lightning's logger sets MLFLOW_TRACKING_URI when it trains), so a
        # run whose fine-tunes were all cache hits could not register ("Logged model ... not found").
        with _use_tracking_uri(tracker.uri):
            return client.create_model_version(name, source=model_uri, run_id=source_run,
                                               tags={TAG_FINGERPRINT: fp, **tags}, description=description,
                                               model_id=model_id)

    return _register_once(tracker, "finetune", name, fp, "transferlab fine-tuned models, servable: "
                          f"mlflow models serve -m models:/{name}/<version>", stage_run_id, create)
