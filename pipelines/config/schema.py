"""Typed schema of the composed config.

Registered in Hydra's ConfigStore as the base of ``conf/config.yaml`` so that composition
rejects unknown keys and ill-typed values before any work starts (struct mode + types).
Every group of ``conf/`` has one dataclass; the YAML files only fill values. The ML groups'
types live in modules/config.py (modules/ takes them as typed arguments); the pipeline's own
groups (sweep, tracking, carbon, cache, paths) and the root are here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from modules.config import (
    DataConfig,
    EvaluateConfig,
    FinetuneConfig,
    ModelConfig,
    PretrainConfig,
    TokenizerConfig,
    TrainerConfig,
)


@dataclass
class SweepConfig:
    # The data_efficiency sweep (`transferlab sweep`, or experiment=data_efficiency): one
    # pretrain, then one fine-tune per label budget x finetune.inits x seed.
    enabled: bool = False
    budgets: list[Any] = field(default_factory=lambda: [16, 64, 256])  # labeled examples per point, or "all"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    parallel: int | None = None  # fine-tunes side by side (processes); null: from the CPU count
    retries: int = 1  # a failed point is retried this often, then reported, not fatal


@dataclass
class TrackingConfig:
    uri: str | None = None  # null: sqlite store under paths.home
    experiment: str = "transferlab"
    run_name: str | None = None
    ui_url: str | None = None  # MLflow UI address for links; null: uri when it is http(s)


@dataclass
class CarbonConfig:
    enabled: bool = True
    country_iso_code: str = "USA"
    measure_power_secs: float = 5.0
    tracking_mode: str = "machine"


@dataclass
class CacheConfig:
    # Two runs that need the same stage output (prep, pretrain, a fine-tune or sweep point)
    # build it once: the later one waits for the builder, then reuses the output as a cache
    # hit; if the builder fails or dies, the waiter builds it. The wait gives up after this
    # many seconds (0: do not wait, fail at once). The default (6 h) outlasts a long
    # pretraining on one machine; the value lives here only.
    wait_timeout_s: float = 21600.0


@dataclass
class PathsConfig:
    home: str = ".transferlab"


@dataclass
class TransferLabConfig:
    seed: int = 0
    experiment_name: str = "quickstart"
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    carbon: CarbonConfig = field(default_factory=CarbonConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)


SCHEMA_NAME = "transferlab_schema"


def register_schema() -> None:
    ConfigStore.instance().store(name=SCHEMA_NAME, node=TransferLabConfig)
