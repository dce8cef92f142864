"""Resolve ``model.init`` (where the weights come from) to a local, safe-to-load directory.

``model.arch`` says what the network is when it is built from scratch; ``model.init`` says
where weights come from: ``scratch``, a local HF directory, a hub id, ``runs:/<run_id>/<path>``
or ``models:/<name>/<version or alias>``. A checkpoint brings its own architecture, so the
resolver fills ``model.arch``, ``model.family`` and the size keys from its ``config.json``
and points ``tokenizer`` at its tokenizer when ``tokenizer.kind`` is ``auto``.

Two entry points: ``check_init`` is the cheap pre-flight (no downloads, no state written,
used by the CLI before anything starts) and ``resolve_init`` does the work (downloads into
``$TRANSFERLAB_HOME/cache/init/<digest>/`` atomically) right before the parent MLflow run
is created, so a bad ``model.init`` leaves nothing behind. Only safetensors weights are
accepted: unpickling ``pytorch_model.bin`` can run arbitrary code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from modules.config import ModelConfig
from modules.models.checkpoints import content_digest, family_of, read_config, size_keys
from modules.training.learning_rates import default_pretrain_lr
from pipelines.cache.store import RECORD, atomic_dir, write_record
from pipelines.config.schema import TransferLabConfig
from pipelines.errors import UserError

log = logging.getLogger("transferlab")

SCRATCH = "scratch"
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack",
                  "model.ckpt.index")
# What a hub download fetches: config, safetensors weights and tokenizer files; never pickles.
HUB_PATTERNS = ["config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json",
                "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model"]
_CONVERT = ("convert it once where you trust its source: AutoModel.from_pretrained(dir).save_pretrained(new_dir) "
            "writes safetensors")


def kind_of(init: str) -> str:
    """``scratch`` | ``runs`` | ``models`` | ``local`` | ``hub`` (a path that does not exist and
    does not look like a path is taken as a hub id, e.g. ``sentence-transformers/all-MiniLM-L6-v2``)."""
    if init == SCRATCH:
        return SCRATCH
    if init.startswith("runs:/"):
        return "runs"
    if init.startswith("models:/"):
        return "models"
    if Path(init).expanduser().exists() or init.startswith(("/", ".", "~")) or init.count("/") > 1:
        return "local"
    return "hub"


# ---------------------------------------------------------------------------- local dirs


def check_checkpoint_dir(path: Path, init: str, trust_remote_code: bool, key: str = "model.init") -> dict[str, Any]:
    """The checkpoint's ``config.json`` after the safety checks; one-line UserError otherwise."""
    if not path.is_dir():
        raise UserError(f"{key}={init!r}: no such directory {path}")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise UserError(f"{key}={init!r}: {path} has no config.json (not a Hugging Face model directory)")
    if not any(path.glob("*.safetensors")):
        pickles = [name for name in PICKLE_WEIGHTS if (path / name).exists()]
        if pickles:
            raise UserError(f"{key}={init!r}: {path} has only pickle weights ({pickles[0]}); transferlab loads "
                            f"safetensors only, since unpickling can run arbitrary code; {_CONVERT}")
        raise UserError(f"{key}={init!r}: {path} has no *.safetensors weights")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{key}={init!r}: unreadable {config_file}: {exc}") from exc
    if not trust_remote_code:
        for name in ("config.json", "tokenizer_config.json"):
            file = path / name
            if file.is_file() and "auto_map" in (config if name == "config.json" else _json(file)):
                raise UserError(f"{key}={init!r}: {file} has auto_map (custom model code that would run on "
                                "load); set model.trust_remote_code=true only if you trust its source")
    if "model_type" not in config:
        raise UserError(f"{key}={init!r}: {config_file} has no model_type")
    return config


def _json(file: Path) -> dict[str, Any]:
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError):
        return {}


# ---------------------------------------------------------------------------- hub


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _hub_download(init: str, local_only: bool) -> Path:
    """The hub snapshot (config, safetensors, tokenizer) in the HF cache; one line if unreachable."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    unreachable = (f"model.init={init!r}: not a local directory, and the Hugging Face hub is unreachable "
                   "(offline or no network); pass a local model directory or an MLflow URI "
                   "(runs:/<run_id>/hf_model, models:/<name>/<version>) instead")
    try:
        return Path(snapshot_download(init, allow_patterns=HUB_PATTERNS, local_files_only=local_only or _hub_offline()))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:
        raise UserError(unreachable) from exc
    except (RepositoryNotFoundError, GatedRepoError) as exc:
        raise UserError(f"model.init={init!r}: no such (accessible) model on the Hugging Face hub") from exc
    except HfHubHTTPError as exc:
        raise UserError(f"model.init={init!r}: hub error: {str(exc).splitlines()[0]}") from exc
    except ValueError as exc:  # HFValidationError: not a valid repo id either
        raise UserError(f"model.init={init!r}: neither an existing directory nor a valid hub id") from exc


# ---------------------------------------------------------------------------- MLflow


def _client(cfg: TransferLabConfig):
    from mlflow.tracking import MlflowClient

    from pipelines.tracking.runs import tracking_uri

    uri = tracking_uri(cfg)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _store_missing(cfg: TransferLabConfig) -> bool:
    """A local sqlite store that does not exist yet holds no runs or models: say so without creating it."""
    from pipelines.tracking.runs import tracking_uri

    uri = tracking_uri(cfg)
    return uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file()


def parse_models_uri(init: str) -> tuple[str, str | None, str | None, str]:
    """``models:/name/3`` -> (name, "3", None, subpath); ``models:/name/champion`` and
    ``models:/name@champion`` -> (name, None, "champion", subpath)."""
    rest = init.removeprefix("models:/").strip("/")
    head, _, sub = rest.partition("/")
    if "@" in head:
        name, _, alias = head.partition("@")
        return name, None, alias, sub
    version, _, sub = sub.partition("/")
    if not head or not version:
        raise UserError(f"model.init={init!r}: expected models:/<name>/<version or alias>")
    if version.isdigit():
        return head, version, None, sub
    return head, None, version, sub


def check_artifact_path(init: str, key: str = "model.init") -> None:
    """A ``runs:/``/``models:/`` URI names a path *inside* its run's or model's artifacts:
    ``.``/``..`` segments, backslashes and control characters are refused before anything
    is looked up or copied (``models:/m/1/../../..`` would reach any directory), also
    URL-encoded (``%2e%2e``)."""
    from urllib.parse import unquote

    rest = init.split(":/", 1)[1] if ":/" in init else init
    decoded = rest
    for _ in range(3):  # a file:// artifact store URL-decodes the path: %2e%2e is '..' there
        decoded = unquote(decoded)
    segments = [s for form in (rest, decoded) for s in form.strip("/").split("/")]
    if any(s in (".", "..") for s in segments) or "\\" in decoded or any(ord(c) < 32 for c in decoded):
        raise UserError(f"{key}={init!r}: the artifact path may not contain '.' or '..' segments or backslashes "
                        "(it names a path inside the run's or model's artifacts)")


def _local_dir(uri: str) -> str | None:
    """The local directory behind a ``file://`` or plain-path artifact URI; None if remote."""
    if uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(uri).path)
    return uri if uri.startswith("/") else None


def _check_contained(base: str, sub: str, init: str, key: str) -> None:
    """On a local artifact store, ``sub`` resolved through symlinks stays inside ``base``."""
    local = _local_dir(base)
    if local is None or not sub:
        return
    from urllib.parse import unquote

    root = os.path.realpath(local)
    target = os.path.realpath(os.path.join(local, unquote(sub)))
    if target != root and not target.startswith(root.rstrip(os.sep) + os.sep):
        raise UserError(f"{key}={init!r}: the artifact path leads outside the artifacts it names")


def _mlflow_source(cfg: TransferLabConfig, init: str, key: str = "model.init") -> tuple[str, str]:
    """(artifact URI to download, cache key) for an MLflow URI; one-line UserError if it does not exist.

    ``models:/`` is resolved here with a client on *our* store: MLflow's own models:/ download
    looks the version up in the process-global registry URI, not the tracking URI it is given.
    Aliases are resolved to their version, so the cache key follows the alias when it moves.
    """
    from mlflow.exceptions import MlflowException

    check_artifact_path(init, key)
    missing = f"{key}={init!r} does not exist in the MLflow store {redact_uri(cfg)}"
    if _store_missing(cfg):
        raise UserError(missing)
    client = _client(cfg)
    if init.startswith("runs:/"):
        run_id, _, path = init.removeprefix("runs:/").strip("/").partition("/")
        try:
            run = client.get_run(run_id)
            _check_contained(run.info.artifact_uri, path, init, key)
            if path:
                parent = path.rsplit("/", 1)[0] if "/" in path else None
                names = {a.path for a in client.list_artifacts(run_id, parent)}
                if path not in names:
                    raise UserError(f"{missing} (run {run_id} has no artifact {path!r})")
        except MlflowException as exc:
            raise UserError(missing) from exc
        return init, f"{init}"
    name, version, alias, sub = parse_models_uri(init)
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
        source = client.get_model_version_download_uri(name, mv.version)
    except MlflowException as exc:
        raise UserError(missing) from exc
    if sub:
        _check_contained(source, sub, init, key)
        source = f"{source.rstrip('/')}/{sub}"
    return source, f"models:/{name}/{mv.version}/{sub}"


def redact_uri(cfg: TransferLabConfig) -> str:
    from pipelines.tracking.runs import redact, tracking_uri

    return redact(tracking_uri(cfg))


def _download_mlflow(cfg: TransferLabConfig, init: str, key: str = "model.init") -> Path:
    """Download once into ``$home/cache/init/<digest>/model`` (atomic; a finished copy is reused)."""
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    from pipelines.tracking.runs import tracking_uri

    source, cache_key = _mlflow_source(cfg, init, key)
    digest = hashlib.sha256(f"{tracking_uri(cfg)}\n{cache_key}".encode()).hexdigest()[:16]
    final = Path(cfg.paths.home) / "cache" / "init" / digest
    if not (final / RECORD).is_file():
        log.info("model.init: downloading %s into %s", init, final)
        with atomic_dir(final) as tmp:
            try:
                # Lands at dst/<last path part>; moved to a fixed name so the dir layout is known.
                local = download_artifacts(artifact_uri=source, dst_path=str(tmp / "download"),
                                           tracking_uri=tracking_uri(cfg))
            except MlflowException as exc:
                raise UserError(f"model.init={init!r}: cannot download {source}: {str(exc).splitlines()[0]}") from exc
            os.rename(local, tmp / "model")
            # Checked before it is published: a copy that is not a safe checkpoint leaves nothing.
            check_checkpoint_dir(tmp / "model", init, cfg.model.trust_remote_code, key)
            write_record(tmp, {"init": init, "source": source})
    return final / "model"


# ---------------------------------------------------------------------------- public API


def check_init(cfg: TransferLabConfig) -> None:
    """Cheap pre-flight for ``model.init``: no downloads, nothing written (not even the MLflow store)."""
    model = cfg.model
    init = model.init or SCRATCH
    kind = kind_of(init)
    if kind == SCRATCH:
        return
    _check_tokenizer_kind(cfg)
    check_checkpoint_ref(cfg, init)


def _check_tokenizer_kind(cfg: TransferLabConfig) -> None:
    kind = cfg.tokenizer.kind
    if kind not in ("auto", "pretrained"):
        raise UserError(f"bad value for 'tokenizer.kind': {kind!r} with model.init={cfg.model.init!r}: a "
                        "checkpoint's embeddings fit only its own tokenizer (use tokenizer.kind=auto or pretrained)")


def locate_checkpoint(cfg: TransferLabConfig, init: str, key: str = "model.init") -> Path:
    """A checkpoint reference (local dir, hub id, runs:/, models:/) -> a checked local dir;
    downloads go to the content-addressed init cache. Also used for the extra checkpoints
    that ``finetune.inits`` may list next to pretrained and scratch."""
    kind = kind_of(init)
    if kind == "local":
        path = Path(init).expanduser().resolve()
    elif kind == "hub":
        path = _hub_download(init, local_only=False)
    else:
        path = _download_mlflow(cfg, init, key)
    check_checkpoint_dir(path, init, cfg.model.trust_remote_code, key)
    return path


def check_checkpoint_ref(cfg: TransferLabConfig, init: str, key: str = "model.init") -> None:
    """Cheap pre-flight of one checkpoint reference: no downloads, nothing written."""
    kind = kind_of(init)
    if kind == "local":
        check_checkpoint_dir(Path(init).expanduser().resolve(), init, cfg.model.trust_remote_code, key)
    elif kind == "hub":
        if _hub_offline():
            _hub_download(init, local_only=True)  # fine if the HF cache has it; one line if not
    elif kind in ("runs", "models"):
        _mlflow_source(cfg, init, key)


def resolve_init(cfg: TransferLabConfig) -> TransferLabConfig:
    """Resolve ``model.init`` in place and return ``cfg``.

    Sets ``model.init_path`` (a local dir with config.json + safetensors), takes
    ``model.arch``/``family``/sizes from the checkpoint, and with ``tokenizer.kind=auto``
    switches to ``kind=pretrained`` with ``tokenizer.path`` = the checkpoint dir.
    Idempotent: a cfg already resolved is left as it is.
    """
    model = cfg.model
    init = model.init or SCRATCH
    kind = kind_of(init)
    if kind == SCRATCH or model.init_path:
        return cfg
    _check_tokenizer_kind(cfg)
    path = locate_checkpoint(cfg, init)
    config = read_config(path)
    family = family_of(config, init)
    before = (model.arch, model.family)
    model.init_path = str(path)
    model.arch, model.family = config["model_type"], family
    for key, value in size_keys(path, model.trust_remote_code).items():
        setattr(model, key, value)
    log.info("model.init: %s -> %s; architecture from the checkpoint: arch=%s family=%s (preset said %s/%s)",
             init, path, model.arch, family, *before)
    if cfg.tokenizer.kind == "auto":
        cfg.tokenizer.kind = "pretrained"
        cfg.tokenizer.path = str(path)
        log.info("model.init: tokenizer.kind=auto -> pretrained (the checkpoint's own tokenizer)")
    if cfg.pretrain.lr is None:
        cfg.pretrain.lr = default_pretrain_lr(family, continued=True)  # adapt a trained model gently
        log.info("model.init: pretrain.lr=null -> %g for continued pretraining", cfg.pretrain.lr)
    for key in ("pretrain.block_size", "finetune.max_length"):
        group, name = key.split(".")
        value = getattr(getattr(cfg, group), name)
        if value > model.max_positions:
            raise UserError(f"bad value for '{key}': {value} exceeds the checkpoint's "
                            f"{model.max_positions} positions (model.init={init!r})")
    return cfg


def passthrough(cfg: TransferLabConfig) -> bool:
    """pretrain.max_steps=0 with a checkpoint: the checkpoint itself is the pretrained export."""
    return not cfg.model.from_scratch and cfg.pretrain.max_steps == 0


def model_identity(model_cfg: ModelConfig) -> dict[str, Any]:
    """The model config as a fingerprint should see it: a checkpoint by its content digest,
    not by its URI or local path. Scratch configs are returned unchanged (stable fingerprints)."""
    if model_cfg.from_scratch:
        return asdict(model_cfg)
    if not model_cfg.init_path:
        raise ValueError("model.init is not resolved; call pipelines.checkpoint_refs.resolve_init(cfg) first")
    out = {k: v for k, v in asdict(model_cfg).items() if k not in ("init", "init_path")}
    out["init_digest"] = content_digest(model_cfg.init_path)
    return out


def source_label(init: str) -> str:
    """``model.init`` safe to show (no credentials in URLs)."""
    return re.sub(r"(://)([^/@:]+):([^/@]+)@", r"\1***@", init)
