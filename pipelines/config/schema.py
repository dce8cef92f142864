"""Typed schema of the composed config.

Registered in Hydra's ConfigStore as the base of ``conf/config.yaml`` so that composition
rejects unknown keys and ill-typed values before any work starts (struct mode + types).
Every group of ``conf/`` has one dataclass, and its defaults are the one home of every
default value: a YAML file in ``conf/`` sets only what its option changes
(tests/test_config_defaults.py keeps it so). The ML groups' types live in modules/config.py
(modules/ takes them as typed arguments); the pipeline's own groups (sweep, tracking,
carbon, cache, paths) and the root are here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from modules.config import (
    DataConfig,
    DistillConfig,
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
    # Labeled training examples per point, or "all"; larger than the pool: clamped, with a warning.
    budgets: list[Any] = field(default_factory=lambda: [16, 64, 256])
    # One fine-tune per seed (model init, data order and the labeled subset).
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    parallel: int | None = None  # fine-tunes side by side (processes); null: CPU cores // 2, at least 1
    retries: int = 1  # a failed point is retried this often, then reported, not fatal
    # A Dask scheduler (tcp://host:8786): the points run on that cluster's workers, any number
    # of machines, instead of local processes (sweep.parallel unused). The workers need
    # transferlab[cluster] and the same state dir and tracking store (docs/sweep.md).
    cluster: str | None = None


@dataclass
class TrackingConfig:
    # null: a sqlite store at ${paths.home}/mlflow.db with artifacts in ${paths.home}/mlartifacts.
    # Point at a server with tracking.uri=http://host:5000, or the env var TRANSFERLAB_TRACKING_URI
    # (`transferlab up`/`serve` set it for the runs they serve). Not MLFLOW_TRACKING_URI: MLflow
    # itself sets that variable in-process whenever a logger picks a store.
    uri: str | None = "${oc.env:TRANSFERLAB_TRACKING_URI,null}"
    experiment: str = "transferlab"
    run_name: str | None = None
    # The MLflow UI address people open, for the links in the runs' Prefect summary artifacts.
    # null: the tracking URI when it is http(s). Set it when the pipeline reaches MLflow by an
    # internal name (docker compose: http://mlflow:5000) that a browser cannot.
    ui_url: str | None = "${oc.env:TRANSFERLAB_MLFLOW_UI_URL,null}"


@dataclass
class CarbonConfig:
    enabled: bool = True
    country_iso_code: str = "USA"  # ISO-3166 alpha-3 code of the grid the machine draws from
    measure_power_secs: float = 5.0
    tracking_mode: str = "machine"  # machine | process


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
    # All state (MLflow store, artifacts, Prefect home, stage cache) lives under one directory.
    home: str = "${oc.env:TRANSFERLAB_HOME,.transferlab}"


@dataclass
class TransferLabConfig:
    # Global seed: model init, data order and the labeled subset. The synthetic corpus has
    # its own data.seed so that changing this does not change the data.
    seed: int = 0
    experiment_name: str = "quickstart"
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
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
