"""Operator-set limits for served runs: how big a run the Prefect UI may start.

Whoever reaches the UI of ``transferlab up``/``serve`` can start runs on the server's
machine, so every served run is checked against upper bounds before any work: optimizer
steps, epochs, model size, batch sizes, the sweep's size, devices and processes. The
defaults fit the machine the service runs on (devices: its GPUs; processes and DataLoader
workers: its cores; model parameters: its memory); the operator raises or lowers any of
them on the ``up``/``serve`` command line with ``--max KEY=N`` (repeatable). The service
hands the limits to its flow-run processes in ``TRANSFERLAB_LIMITS`` (a JSON object): the
UI has no way to set an environment variable, so the limits are the operator's alone.

The CLI (``transferlab run``) is not limited: whoever types it owns the machine.
"""

from __future__ import annotations

import json
import os
from typing import Any

from modules.models.sizes import estimated_parameters
from pipelines.config.schema import TransferLabConfig
from pipelines.errors import ConfigError, UserError

LIMITS_ENV = "TRANSFERLAB_LIMITS"
# Limits on derived figures rather than single keys.
PARAMETERS = "model.parameters"  # estimated weights of a model built from scratch
SWEEP_POINTS = "sweep.points"  # len(sweep.budgets) x len(finetune.inits) x len(sweep.seeds)

# Fixed defaults: generous for real work on one machine, far below what takes it over.
_FIXED: dict[str, int] = {
    "pretrain.max_steps": 100_000,
    "pretrain.batch_size": 512,
    "pretrain.block_size": 2048,
    "pretrain.val_batches": 1_000,
    "pretrain.keep_checkpoints": 10,
    "finetune.max_epochs": 100,
    "finetune.batch_size": 512,
    "finetune.max_length": 2048,
    "finetune.max_target_length": 1024,
    "finetune.num_beams": 16,
    "finetune.train_examples": 1_000_000,
    "finetune.patience": 100,
    "finetune.search_trials": 20,  # each trial is a whole fine-tune
    "evaluate.batch_size": 1024,
    "evaluate.perplexity_batches": 10_000,
    "model.n_layer": 48,
    "model.n_decoder_layer": 48,
    "model.n_embd": 4096,
    "model.n_head": 64,
    "model.n_inner": 16384,
    "model.max_positions": 8192,
    "tokenizer.vocab_size": 262_144,
    "trainer.num_nodes": 1,  # a served run runs on the server's machine
    "sweep.points": 100,
    "sweep.retries": 3,
    "data.corpus_documents": 1_000_000,
    "data.labeled_train": 1_000_000,
    "data.labeled_val": 1_000_000,
    "data.labeled_test": 1_000_000,
    "data.max_documents": 10_000_000,
    "data.num_topics": 1_000,
    "data.words_per_topic": 10_000,
    "data.neutral_words": 100_000,
}


def gpu_count() -> int:
    """NVIDIA GPUs this machine shows (without importing torch: ``up`` starts in seconds)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        found = len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        found = 0
    if visible is not None and found:
        return min(found, len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"]))
    return found


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def default_limits() -> dict[str, int]:
    """The limits of a service started without ``--max``, sized for this machine."""
    cpus = os.cpu_count() or 1
    return {
        **_FIXED,
        # Training in fp32 with Adam holds ~16 bytes per weight plus activations: a model of
        # memory/32 weights still leaves room for the rest of the machine.
        PARAMETERS: max(50_000_000, _memory_bytes() // 32),
        "trainer.devices": max(1, gpu_count()),
        "trainer.num_workers": cpus,
        "trainer.num_threads": cpus,
        "sweep.parallel": cpus,
    }


def parse_operator_limits(entries: list[str]) -> dict[str, int]:
    """``--max KEY=N`` entries from the command line over the defaults; one line if bad."""
    limits = default_limits()
    for entry in entries:
        key, sep, raw = entry.partition("=")
        key = key.strip()
        if not sep or key not in limits:
            raise UserError(f"bad value for --max: {entry!r} (KEY=N with KEY one of: {', '.join(sorted(limits))})")
        try:
            value = int(raw.strip().replace("_", ""))
        except ValueError:
            value = -1
        if value < 0:
            raise UserError(f"bad value for --max {key}: {raw!r} (a whole number >= 0)")
        limits[key] = value
    return limits


def limits_from_env() -> dict[str, int]:
    """The limits the service handed to this flow-run process; the defaults if none."""
    raw = os.environ.get(LIMITS_ENV)
    if not raw:
        return default_limits()
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not all(isinstance(v, int) for v in value.values()):
        raise ConfigError(f"bad value for {LIMITS_ENV} (a JSON object of limits, set by transferlab up/serve)")
    return {**default_limits(), **value}


def refusal(what: str, value: Any, key: str, limit: int) -> ConfigError:
    """``what``: the key(s) at fault, quoted; ``value``: a number, or a phrase ending in one."""
    shown = int(value) if isinstance(value, float) and value.is_integer() else value
    return ConfigError(f"rejected value for {what}: {shown} exceeds this service's limit {limit} "
                       f"(the operator raises it with transferlab up/serve --max {key}=N)")


def check_value(key: str, value: Any, limits: dict[str, int]) -> None:
    """One key's value (a number from an override, before composing) against its limit."""
    limit = limits.get(key)
    if limit is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if value > limit:
        raise refusal(f"'{key}'", value, key, limit)


def device_count(devices: Any, gpus: int) -> int:
    """How many devices Lightning would use for ``trainer.devices`` (-1 and auto: all)."""
    if isinstance(devices, list):
        return len(devices)
    text = str(devices).strip()
    if text in ("-1", "auto"):
        return max(1, gpus)
    if "," in text:
        return len([d for d in text.split(",") if d.strip()])
    try:
        return int(text)
    except ValueError:
        return 1


def check_limits(cfg: TransferLabConfig, limits: dict[str, int]) -> None:
    """The composed config against the limits; ``ConfigError`` naming the first one exceeded."""
    for key in limits:
        group, _, name = key.partition(".")
        node = getattr(cfg, group, None)
        if key in (PARAMETERS, SWEEP_POINTS, "trainer.devices") or not hasattr(node, name):
            continue
        check_value(key, getattr(node, name), limits)
    trainer = cfg.trainer
    if "trainer.devices" in limits:
        n = device_count(trainer.devices, gpu_count())
        if n > limits["trainer.devices"]:
            raise refusal("'trainer.devices'", n, "trainer.devices", limits["trainer.devices"])
    sweep = cfg.sweep
    points = len(sweep.budgets) * len(cfg.finetune.inits) * len(sweep.seeds)
    if sweep.enabled and SWEEP_POINTS in limits and points > limits[SWEEP_POINTS]:
        raise refusal("'sweep.budgets' x 'finetune.inits' x 'sweep.seeds'", f"a sweep of {points} points",
                      SWEEP_POINTS, limits[SWEEP_POINTS])
    model = cfg.model
    if PARAMETERS in limits and model.from_scratch:
        n = estimated_parameters(model, cfg.tokenizer.vocab_size)
        if n > limits[PARAMETERS]:
            raise refusal("'model.n_layer'/'n_embd'/'n_inner'/'tokenizer.vocab_size'", f"a model of about {n} "
                          "parameters", PARAMETERS, limits[PARAMETERS])
