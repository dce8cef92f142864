"""Compose and validate the Hydra config once, then hand the typed config onward.

Hydra's global state is not thread-safe and its errors are multi-line; this module is the
one place that talks to Hydra, and it turns every composition failure into a
``ConfigError`` with a single line that names the bad key, value or group option.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Light modules (no torch), so validation stays instant.
from modules.config import DataConfig, DistillConfig, FinetuneConfig, TrainerConfig
from modules.data.tokenizer_kinds import ALPHABET, SPECIAL_TOKENS, TOKENIZER_KINDS, min_vocab_size, trained_kind
from modules.models.choices import ARCHS, BUILTIN_INITS, FAMILIES, INFERENCE_PRECISIONS, STRATEGIES
from modules.models.sizes import layer_count
from modules.tasks import (
    TASKS,
    VAL_METRIC,
    family_error,
)
from modules.training.learning_rates import default_finetune_lr, default_pretrain_lr
from pipelines.config.schema import SweepConfig, TransferLabConfig
from pipelines.errors import ConfigError, UserError

CONF_DIR = Path(os.environ.get("TRANSFERLAB_CONF", Path(__file__).resolve().parents[2] / "conf"))

DATA_SOURCES = {"synthetic", "local_text", "local_labeled", "hub"}
# Data file keys: a path, a glob, or a list of them; made absolute at compose time.
DATA_PATH_KEYS = ("path", "labeled_path", "validation_path", "test_path")
DATA_FORMATS = {"auto", "text", "jsonl", "csv", "tsv", "parquet", "conll"}
# What Lightning's Trainer accepts (tests/test_bad_input.py checks these against the installed
# Lightning), checked at compose time so a typo fails in a second, not after MLflow runs exist.
# precision: Lightning's names and aliases, plus transferlab's ``auto`` (modules/training/hardware.py).
PRECISIONS = {"auto", "64", "32", "16", "bf16", "64-true", "32-true", "16-true", "16-mixed", "bf16-true",
              "bf16-mixed", "transformer-engine", "transformer-engine-float16"}
ACCELERATORS = {"auto", "gpu", "cpu", "cuda", "mps", "tpu"}
STRATEGIES_LIGHTNING = {
    "auto", "ddp", "ddp_find_unused_parameters_false", "ddp_find_unused_parameters_true", "ddp_fork",
    "ddp_fork_find_unused_parameters_false", "ddp_fork_find_unused_parameters_true", "ddp_notebook",
    "ddp_notebook_find_unused_parameters_false", "ddp_notebook_find_unused_parameters_true", "ddp_spawn",
    "ddp_spawn_find_unused_parameters_false", "ddp_spawn_find_unused_parameters_true", "deepspeed",
    "deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_2_offload", "deepspeed_stage_3",
    "deepspeed_stage_3_offload", "deepspeed_stage_3_offload_nvme", "fsdp", "fsdp_cpu_offload", "single_device",
    "single_tpu", "single_xla", "xla", "xla_debug",
}
# (key, lowest, lowest allowed?, highest, highest allowed?): ranges the schema's types cannot say.
# None as a value is checked only where the schema allows null (then: the default applies).
RANGES = [
    ("pretrain.lr", 0, False, None, False), ("pretrain.weight_decay", 0, True, None, False),
    ("pretrain.warmup_steps", 0, True, None, False), ("pretrain.grad_clip", 0, True, None, False),
    ("pretrain.val_every_n_steps", 1, True, None, False), ("pretrain.val_batches", 1, True, None, False),
    ("pretrain.mlm_probability", 0, False, 1, False), ("pretrain.checkpoint_every_n_steps", 1, True, None, False),
    ("pretrain.keep_checkpoints", 1, True, None, False),
    ("finetune.weight_decay", 0, True, None, False), ("finetune.warmup_ratio", 0, True, 1, False),
    ("finetune.patience", 0, True, None, False), ("finetune.dropout", 0, True, 1, False),
    ("finetune.max_length", 1, True, None, False), ("finetune.search_trials", 0, True, None, False),
    ("finetune.search_lr_min", 0, False, None, False), ("finetune.search_lr_max", 0, False, None, False),
    ("model.dropout", 0, True, 1, False), ("model.n_inner", 1, True, None, False),
    ("model.max_positions", 1, True, None, False),
    ("tokenizer.min_frequency", 0, True, None, False),
    ("evaluate.batch_size", 1, True, None, False), ("evaluate.perplexity_batches", 1, True, None, False),
    ("evaluate.inference_examples", 0, True, None, False), ("evaluate.inference_batch1_examples", 1, True, None, False),
    ("trainer.num_nodes", 1, True, None, False), ("trainer.num_workers", 0, True, None, False),
    ("trainer.num_threads", 1, True, None, False), ("trainer.log_every_n_steps", 1, True, None, False),
    ("trainer.progress_every_n_steps", 1, True, None, False), ("trainer.peak_flops", 0, False, None, False),
    ("trainer.compile_min_steps", 1, True, None, False),
    ("carbon.measure_power_secs", 0, False, None, False),
    ("data.words_per_topic", 1, True, None, False), ("data.neutral_words", 0, True, None, False),
    ("data.labeled_train", 1, True, None, False), ("data.labeled_val", 1, True, None, False),
    ("data.labeled_test", 1, True, None, False), ("data.cue_rate", 0, True, 1, True),
]


def group_options(group: str) -> list[str]:
    """The options a config group offers: the YAML files in ``conf/<group>/``."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def config_groups() -> list[str]:
    return sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())


def _check_group_choices(overrides: list[str]) -> None:
    """Reject ``group=option`` where the option does not exist, listing the choices.

    Hydra reports this too, but only after composing and in several lines; checking here
    gives the one-line error the CLI contract asks for.
    """
    groups = set(config_groups())
    for ov in overrides:
        key, sep, value = ov.partition("=")
        key = key.lstrip("+~")
        if not sep or key not in groups:
            continue
        if value not in group_options(key):
            raise ConfigError(
                f"unknown option '{value}' for config group '{key}' "
                f"(choices: {', '.join(group_options(key))})"
            )


def _one_line(exc: BaseException) -> str:
    """The clearest single line from a Hydra/OmegaConf exception chain."""
    from omegaconf.errors import ConfigKeyError, ValidationError

    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    for err in chain:
        full_key = getattr(err, "full_key", None)
        if isinstance(err, ConfigKeyError) or "not in struct" in str(err):
            key = full_key or _first_quoted(str(err))
            return f"unknown config key '{key}' (see `transferlab config` for the valid keys)"
        if isinstance(err, ValidationError):
            msg = str(err).splitlines()[0]
            return f"bad value for '{full_key}': {msg}" if full_key else msg
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    m = re.search(r"Could not override '([^']+)'", first)
    if m:
        return f"unknown config key '{m.group(1)}' (see `transferlab config` for the valid keys)"
    return first


def _first_quoted(text: str) -> str:
    m = re.search(r"'([^']+)'", text)
    return m.group(1) if m else text


def _reject_hydra_overrides(overrides: list[str]) -> None:
    """``hydra.*`` keys configure Hydra's own runtime (output dirs, logging, launchers), which
    transferlab never runs: under compose they would be silently ignored, and from a UI they
    are a way in. Refuse them, naming the override."""
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+~").strip()
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            raise ConfigError(f"override {item!r} is not accepted: hydra.* configures Hydra's runtime, which "
                              "transferlab does not use (set transferlab keys, e.g. paths.home=...)")


def compose(overrides: list[str] | None = None) -> TransferLabConfig:
    """Compose ``conf/config.yaml`` with ``overrides``, validate, and return the typed config
    with the derived values (default LRs, absolute paths) filled in."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from pipelines.config.schema import register_schema

    overrides = list(overrides or [])
    _reject_hydra_overrides(overrides)
    _check_group_choices(overrides)
    register_schema()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            composed: DictConfig = hydra_compose(config_name="config", overrides=overrides)
        container = OmegaConf.to_container(composed, resolve=True, throw_on_missing=True)
        assert isinstance(container, dict)
        _reject_unknown_keys(container)  # before to_object, which would fail on them less clearly
        cfg = OmegaConf.to_object(composed)
    except ConfigError:
        raise
    except Exception as exc:  # Hydra/OmegaConf raise many types; all mean bad config
        raise ConfigError(_one_line(exc)) from exc
    finally:
        GlobalHydra.instance().clear()
    assert isinstance(cfg, TransferLabConfig)
    validate(cfg)
    scratch_model = cfg.model.from_scratch
    if cfg.pretrain.lr is None and scratch_model:  # a checkpoint's: pipelines.checkpoint_refs
        cfg.pretrain.lr = default_pretrain_lr(cfg.model.family)
    strategy = cfg.finetune.strategy
    if cfg.finetune.lr is None:
        cfg.finetune.lr = default_finetune_lr(strategy, checkpoint=not scratch_model)
    if cfg.finetune.checkpoint_lr is None:
        cfg.finetune.checkpoint_lr = default_finetune_lr(strategy, checkpoint=True)
    # Absolute paths from here on: stages may run with another cwd (Prefect workers).
    cfg.paths.home = str(Path(cfg.paths.home).expanduser().resolve())
    for key in DATA_PATH_KEYS:
        setattr(cfg.data, key, _absolute_paths(getattr(cfg.data, key)))
    return cfg


def _absolute_paths(value: Any) -> Any:
    """Absolute form of a path, glob or list of them (``os.path.abspath`` keeps glob characters)."""
    if not value:
        return value
    if isinstance(value, list):
        return [os.path.abspath(os.path.expanduser(str(v))) for v in value]
    return os.path.abspath(os.path.expanduser(str(value)))


def _value(cfg: Any, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def _choice(cfg: Any, dotted: str, allowed: Collection[str], prefix: str = "") -> None:
    """``dotted`` under ``cfg`` must be one of ``allowed``; named ``prefix + dotted`` in the error."""
    value = _value(cfg, dotted)
    if value not in allowed:
        raise ConfigError(f"bad value for '{prefix}{dotted}': {value!r} (choices: {', '.join(sorted(allowed))})")


def _positive(cfg: TransferLabConfig, *dotted: str) -> None:
    for key in dotted:
        if _value(cfg, key) <= 0:
            raise ConfigError(f"bad value for '{key}': {_value(cfg, key)!r} (must be > 0)")


def _unknown_keys(cfg: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> list[str]:
    """Keys added with ``+key=value`` that the schema does not know."""
    out: list[str] = []
    for key, value in cfg.items():
        if key not in schema:
            out.append(f"{prefix}{key}")
        elif isinstance(value, dict) and isinstance(schema[key], dict):
            out.extend(_unknown_keys(value, schema[key], f"{prefix}{key}."))
    return out


def check_register_as(name: str | None, key: str = "pretrain.register_as") -> None:
    """``pretrain.register_as`` (or ``finetune.register_as``) must be a valid registered-model
    name (no '/' or ':').

    Checked when composing, and again by the registry before registering (the stage may get
    a config that did not come through :func:`validate`)."""
    if name is not None and (not str(name).strip() or any(c in str(name) for c in "/:")):
        raise UserError(f"bad value for '{key}': {name!r} (a registered-model name cannot be "
                        "empty or contain '/' or ':'; null disables registration)")


def _reject_unknown_keys(cfg: dict[Any, Any]) -> None:
    schema = OmegaConf.to_container(OmegaConf.structured(TransferLabConfig))
    unknown = _unknown_keys(cfg, schema)  # type: ignore[arg-type]
    if unknown:
        raise ConfigError(
            f"unknown config key '{unknown[0]}' (see `transferlab config` for the valid keys)"
        )


def validate(cfg: TransferLabConfig) -> None:
    """Checks the schema's types cannot express: choices, ranges, cross-key consistency."""
    _choice(cfg, "data.source", DATA_SOURCES)
    model, ft, pre = cfg.model, cfg.finetune, cfg.pretrain
    scratch = model.from_scratch
    if scratch:  # otherwise the checkpoint's config decides (pipelines.checkpoint_refs)
        _choice(cfg, "model.arch", ARCHS)
        _choice(cfg, "model.family", FAMILIES)
    _choice(cfg, "tokenizer.kind", TOKENIZER_KINDS)
    _choice(cfg, "finetune.task", TASKS)
    _choice(cfg, "evaluate.inference_precision", INFERENCE_PRECISIONS)
    _check_strategy(cfg, scratch)
    _check_monitor(cfg.finetune)
    if scratch and ARCHS[model.arch] != model.family:
        raise ConfigError(
            f"bad value for 'model.family': {model.family!r} "
            f"(arch {model.arch!r} is a {ARCHS[model.arch]} LM)"
        )
    if cfg.tokenizer.kind == "pretrained" and not cfg.tokenizer.path and model.init == "scratch":
        raise ConfigError("missing value for 'tokenizer.path' (tokenizer.kind=pretrained needs a local tokenizer dir "
                          "or hub id, or a model.init checkpoint)")
    n_dec = model.n_decoder_layer
    if n_dec is not None and (model.family != "seq2seq" or n_dec <= 0):
        raise ConfigError(f"bad value for 'model.n_decoder_layer': {n_dec!r} "
                          "(a positive decoder depth, for family=seq2seq only; null: as n_layer)")
    if not 0.0 < cfg.pretrain.mask_ratio < 1.0:
        raise ConfigError(f"bad value for 'pretrain.mask_ratio': {cfg.pretrain.mask_ratio!r} (must be in (0, 1))")
    if cfg.pretrain.poisson_lambda <= 0:
        raise ConfigError(f"bad value for 'pretrain.poisson_lambda': {cfg.pretrain.poisson_lambda!r} "
                          "(must be > 0)")
    inits = cfg.finetune.inits
    if not inits or len(set(inits)) != len(inits) or any(not isinstance(i, str) or not i.strip() for i in inits):
        raise ConfigError(
            f"bad value for 'finetune.inits': {inits!r} (a list of distinct entries from: "
            f"{', '.join(sorted(BUILTIN_INITS))}, or a checkpoint: a local dir, hub id, runs:/ or models:/ URI)"
        )
    if scratch:  # a checkpoint's family is known once model.init resolved: the flow checks it then
        check_zero_shot(ft, model.family)
        check_task(ft, model.family)
    if "{text}" not in ft.zero_shot_template:
        raise ConfigError(f"bad value for 'finetune.zero_shot_template': {ft.zero_shot_template!r} "
                          "(must contain the placeholder {text})")
    _positive(
        cfg,
        "pretrain.block_size", "pretrain.batch_size",
        "finetune.train_examples", "finetune.batch_size", "finetune.max_epochs",
        "finetune.max_target_length", "finetune.num_beams",
        "tokenizer.vocab_size", "model.n_layer", "model.n_embd", "model.n_head",
        "data.num_topics", "data.corpus_documents",
    )
    _check_data(cfg.data)
    _check_sweep(cfg.sweep)
    _check_ranges(cfg)
    if ft.search_lr_min >= ft.search_lr_max:
        raise ConfigError(f"bad value for 'finetune.search_lr_min': {ft.search_lr_min!r} must be below "
                          f"finetune.search_lr_max={ft.search_lr_max!r} (the learning-rate range searched)")
    _check_trainer(cfg.trainer)
    check_distill(cfg.distill, cfg.finetune, cfg.sweep.enabled)
    if scratch:
        _check_vocab(cfg)
    if cfg.cache.wait_timeout_s < 0:
        raise ConfigError(f"bad value for 'cache.wait_timeout_s': {cfg.cache.wait_timeout_s!r} "
                          "(seconds >= 0; 0: do not wait for another run's build)")
    if pre.max_steps < 0 or (scratch and pre.max_steps == 0):
        raise ConfigError(f"bad value for 'pretrain.max_steps': {pre.max_steps!r} (must be > 0; "
                          "0 only with model.init=<checkpoint>, to fine-tune it without pretraining)")
    check_register_as(cfg.pretrain.register_as)
    check_register_as(cfg.finetune.register_as, "finetune.register_as")
    if cfg.data.num_topics < 2:
        raise ConfigError("bad value for 'data.num_topics': needs at least 2 classes")
    if model.n_embd % model.n_head:
        raise ConfigError(
            f"bad value for 'model.n_head': {model.n_head} does not divide "
            f"model.n_embd={model.n_embd}"
        )
    for key in ("pretrain.block_size", "finetune.max_length"):
        if scratch and _value(cfg, key) > model.max_positions:  # checkpoints: checkpoint_refs checks
            raise ConfigError(
                f"bad value for '{key}': {_value(cfg, key)} exceeds "
                f"model.max_positions={model.max_positions}"
            )


# Inits that train no network classifier: nothing to distill from, nothing to distill into.
UNTRAINED_INITS = ("zero_shot", "tfidf")


def check_distill(distill: DistillConfig, ft: FinetuneConfig, sweep: bool = False) -> None:
    """The distill keys: ranges always; teacher and student once a teacher turns distillation on."""
    if not 0.0 <= distill.alpha <= 1.0:
        raise ConfigError(f"bad value for 'distill.alpha': {distill.alpha!r} (must be in [0, 1]: the KL term's "
                          "share on labeled rows)")
    if distill.temperature <= 0:
        raise ConfigError(f"bad value for 'distill.temperature': {distill.temperature!r} (must be > 0)")
    if distill.unlabeled is not None and distill.unlabeled < 0:
        raise ConfigError(f"bad value for 'distill.unlabeled': {distill.unlabeled!r} (a count >= 0 of unlabeled "
                          "texts; null: all of the labeled pool outside finetune.train_examples)")
    teacher, student = distill.teacher, distill.student
    if teacher is None:
        return
    if not str(teacher).strip():
        raise ConfigError("bad value for 'distill.teacher': '' (an entry of finetune.inits, or a fine-tuned "
                          "checkpoint: a local dir, runs:/ or models:/ URI; null: no distillation)")
    if ft.task != "classification":
        raise ConfigError(f"bad value for 'distill.teacher': distillation serves finetune.task=classification only "
                          f"(task is {ft.task!r}); set distill.teacher=null")
    if sweep:
        raise ConfigError("bad value for 'distill.teacher': the sweep does not distill (yet); run distillation "
                          "with `transferlab run`, or set distill.teacher=null")
    if teacher in UNTRAINED_INITS:
        raise ConfigError(f"bad value for 'distill.teacher': {teacher!r} trains no network classifier to distill "
                          "from (use a fine-tuned init such as pretrained, or a fine-tuned checkpoint)")
    if teacher in BUILTIN_INITS and teacher not in ft.inits:
        raise ConfigError(f"bad value for 'distill.teacher': {teacher!r} is not in finetune.inits {ft.inits!r} "
                          "(a teacher from this run must be one of its fine-tunes)")
    if not str(student).strip() or student in ("scratch", *UNTRAINED_INITS):
        raise ConfigError(f"bad value for 'distill.student': {student!r} (pretrained: this pipeline's pretrained "
                          "model, or a model.init-style checkpoint: a local dir, hub id, runs:/ or models:/ URI)")


def _check_ranges(cfg: TransferLabConfig) -> None:
    for key, lo, lo_ok, hi, hi_ok in RANGES:
        value = _value(cfg, key)
        if value is None:
            continue
        bad = (value < lo or (value == lo and not lo_ok)
               or (hi is not None and (value > hi or (value == hi and not hi_ok))))
        if bad:
            low = f"{'>=' if lo_ok else '>'} {lo}"
            high = f" and {'<=' if hi_ok else '<'} {hi}" if hi is not None else ""
            raise ConfigError(f"bad value for '{key}': {value!r} (must be {low}{high})")


def _check_trainer(trainer: TrainerConfig) -> None:
    """The values Lightning's Trainer would refuse only after the MLflow runs exist."""
    trainer.precision = str(trainer.precision)  # 16 and 32 arrive as ints from the override parser
    for key, allowed in (("precision", PRECISIONS), ("accelerator", ACCELERATORS), ("strategy", STRATEGIES_LIGHTNING)):
        _choice(trainer, key, allowed, "trainer.")
    compile_ = trainer.compile
    if isinstance(compile_, str):  # "true"/"false" from a YAML string or the Prefect UI
        compile_ = {"true": True, "false": False, "auto": "auto"}.get(compile_.strip().lower(), compile_)
    if not (isinstance(compile_, bool) or compile_ == "auto"):
        raise ConfigError(f"bad value for 'trainer.compile': {trainer.compile!r} (must be true, false or auto)")
    trainer.compile = compile_
    devices = trainer.devices
    ok = (devices == "auto"
          or (isinstance(devices, int) and not isinstance(devices, bool) and (devices >= 1 or devices == -1))
          or (isinstance(devices, str) and re.fullmatch(r"-1|[1-9]\d*|\d+(,\d+)*,?", devices.strip()) is not None)
          or (isinstance(devices, list) and devices and len(set(devices)) == len(devices)
              and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in devices)))
    if not ok:
        raise ConfigError(f"bad value for 'trainer.devices': {devices!r} (a count >= 1, -1 or auto for all, "
                          "or a list of device indices such as [0,1])")


def _check_vocab(cfg: TransferLabConfig) -> None:
    tok, family = cfg.tokenizer, cfg.model.family
    least = min_vocab_size(tok.kind, family)
    if least is not None and tok.vocab_size < least:
        kind = trained_kind(tok.kind, family)
        alphabet = "256 bytes" if kind == "bpe" else f"{ALPHABET[kind]} characters"
        raise ConfigError(f"bad value for 'tokenizer.vocab_size': {tok.vocab_size} is below {least}, the least a "
                          f"{kind} tokenizer for a {family} model needs ({alphabet} + "
                          f"{SPECIAL_TOKENS[family]} special tokens)")


def check_task(finetune_cfg: FinetuneConfig, family: str) -> None:
    """The model family must have a head for finetune.task (e.g. no token head on BART)."""
    why = family_error(finetune_cfg.task, family, "model.family")
    if why:
        raise ConfigError(f"bad value for 'finetune.task': {why}")
    if "zero_shot" in finetune_cfg.inits and finetune_cfg.task != "classification":
        raise ConfigError(f"bad value for 'finetune.inits': zero_shot scores label words, so it serves "
                          f"finetune.task=classification only (task is {finetune_cfg.task!r})")


def check_zero_shot(finetune_cfg: FinetuneConfig, family: str) -> None:
    """init=zero_shot scores label words as an LM continuation: only a causal LM has one."""
    if "zero_shot" in finetune_cfg.inits and family != "causal":
        raise ConfigError(f"bad value for 'finetune.inits': zero_shot needs a causal LM, and model.family is "
                          f"{family!r} (drop zero_shot, or use a causal model such as model=gpt2_tiny)")


def _check_monitor(ft: FinetuneConfig) -> None:
    """finetune.monitor: val/loss, or the validation accuracy the task logs every epoch."""
    allowed = ["val/loss", *([VAL_METRIC[ft.task]] if ft.task in VAL_METRIC else [])]
    if ft.monitor not in allowed:
        raise ConfigError(f"bad value for 'finetune.monitor': {ft.monitor!r} (finetune.task={ft.task} validates "
                          f"on: {', '.join(allowed)})")


def _check_strategy(cfg: TransferLabConfig, scratch: bool) -> None:
    """finetune.strategy and its knobs; a checkpoint's depth is checked when it is split."""
    ft = cfg.finetune
    _choice(cfg, "finetune.strategy", STRATEGIES)
    if ft.trainable_layers < 1:
        raise ConfigError(f"bad value for 'finetune.trainable_layers': {ft.trainable_layers!r} (must be >= 1)")
    if ft.task == "seq2seq" and ft.strategy not in ("full", "lora"):  # the LM head is tied to the embeddings
        raise ConfigError(f"bad value for 'finetune.strategy': {ft.strategy!r} is not defined for "
                          "finetune.task=seq2seq (no separate head to train); use finetune.strategy=full or lora")
    _check_lora(ft)
    for key in ("lr", "checkpoint_lr"):
        if getattr(ft, key) is not None and getattr(ft, key) <= 0:
            raise ConfigError(f"bad value for 'finetune.{key}': {getattr(ft, key)!r} "
                              "(must be > 0; null: the strategy's default)")
    model = cfg.model
    if scratch and ft.strategy == "partial" and model.n_layer > 0:
        depth = layer_count(model)
        if ft.trainable_layers > depth:
            raise ConfigError(f"bad value for 'finetune.trainable_layers': {ft.trainable_layers} exceeds the "
                              f"model's {depth} transformer layers (finetune.strategy=full trains them all)")


def _check_lora(ft: FinetuneConfig) -> None:
    """finetune.lora_*: checked whatever the strategy, so a typo fails before a run that later
    switches to lora; whether each target names a layer is checked on the model (modules/models/lora.py)."""
    if isinstance(ft.lora_rank, bool) or ft.lora_rank < 1:
        raise ConfigError(f"bad value for 'finetune.lora_rank': {ft.lora_rank!r} (must be >= 1)")
    if isinstance(ft.lora_alpha, bool) or ft.lora_alpha < 1:
        raise ConfigError(f"bad value for 'finetune.lora_alpha': {ft.lora_alpha!r} (must be >= 1)")
    if not 0 <= ft.lora_dropout < 1:
        raise ConfigError(f"bad value for 'finetune.lora_dropout': {ft.lora_dropout!r} (must be in [0, 1))")
    targets = [ft.lora_target_modules] if isinstance(ft.lora_target_modules, str) else ft.lora_target_modules
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) and t.strip() for t in targets):
        raise ConfigError(f"bad value for 'finetune.lora_target_modules': {ft.lora_target_modules!r} (auto, or "
                          "linear layer names such as [c_attn,c_proj])")


# A Dask scheduler address: protocol://host:port (tcp, tls, ws, wss) or host:port.
CLUSTER_ADDRESS = re.compile(r"(?:(?:tcp|tls|ws|wss)://)?(?:[A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9A-Fa-f:]+\]):[0-9]{1,5}")


def _check_sweep(sweep: SweepConfig) -> None:
    budgets = sweep.budgets
    if not budgets or any(b != "all" and (isinstance(b, bool) or not isinstance(b, int) or b <= 0) for b in budgets):
        raise ConfigError(f"bad value for 'sweep.budgets': {budgets!r} (a list of positive label counts, or 'all')")
    seeds = sweep.seeds
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"bad value for 'sweep.seeds': {seeds!r} (a non-empty list of distinct seeds)")
    if sweep.parallel is not None and sweep.parallel < 1:
        raise ConfigError(f"bad value for 'sweep.parallel': {sweep.parallel!r} (>= 1; null: from the CPU count)")
    if sweep.retries < 0:
        raise ConfigError(f"bad value for 'sweep.retries': {sweep.retries!r} (must be >= 0)")
    if sweep.cluster is not None and not CLUSTER_ADDRESS.fullmatch(str(sweep.cluster)):
        raise ConfigError(f"bad value for 'sweep.cluster': {sweep.cluster!r} (a Dask scheduler address, "
                          "e.g. tcp://10.0.0.5:8786; null: points run on this machine)")


def _check_data(data: DataConfig) -> None:
    """Data keys that must agree with ``data.source`` (files themselves are checked in pre-flight)."""
    source = data.source
    _choice(data, "format", DATA_FORMATS, "data.")
    if source in ("local_text", "local_labeled") and not data.path:
        raise ConfigError(f"missing value for 'data.path' (data={data.name} needs data.path=<file, glob or list>)")
    if source == "local_text" and not data.labeled_path:
        for key in ("validation_path", "test_path"):
            if getattr(data, key):
                raise ConfigError(f"bad value for 'data.{key}': a labeled split needs data.labeled_path "
                                  "(the labeled train file) with data=local_text")
    if source == "hub":
        if not data.hub_path:
            raise ConfigError(f"missing value for 'data.hub_path' (data={data.name} needs a dataset id, "
                              "e.g. data.hub_path=wikitext)")
        if data.streaming and not data.max_documents:
            raise ConfigError("missing value for 'data.max_documents' (data.streaming=true reads a stream: "
                              "say how many documents, e.g. data.max_documents=100000)")
    if data.max_documents is not None and data.max_documents <= 0:
        raise ConfigError(f"bad value for 'data.max_documents': {data.max_documents!r} (must be > 0)")
    if not 0 < data.val_fraction < 1:
        raise ConfigError(f"bad value for 'data.val_fraction': {data.val_fraction!r} (must be in (0, 1))")
    fractions = (data.labeled_val_fraction, data.labeled_test_fraction)
    if not all(0 < f < 1 for f in fractions) or sum(fractions) >= 1:
        raise ConfigError(f"bad value for 'data.labeled_val_fraction'/'data.labeled_test_fraction': {fractions} "
                          "(each in (0, 1), together < 1)")
    for key in ("text_column", "label_column"):
        value = getattr(data, key)
        if value is not None and not isinstance(value, (str, int)) or isinstance(value, bool):
            raise ConfigError(f"bad value for 'data.{key}': {value!r} (a column name or a 0-based position)")
    if data.text_column is None:
        raise ConfigError("missing value for 'data.text_column' (a column name or a 0-based position)")


def to_yaml(cfg: TransferLabConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(asdict(cfg)))


def flatten(cfg: TransferLabConfig | dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Dotted key -> string value, as MLflow params want them (keys in the schema's order)."""
    out: dict[str, str] = {}
    for key, value in (cfg if isinstance(cfg, dict) else asdict(cfg)).items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{dotted}."))
        else:
            out[dotted] = str(value)
    return out
