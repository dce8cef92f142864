"""Typed schema of the composed config.

Registered in Hydra's ConfigStore as the base of ``conf/config.yaml`` so that composition
rejects unknown keys and ill-typed values before any work starts (struct mode + types).
Every group of ``conf/`` has one dataclass here; the YAML files only fill values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class DataConfig:
    # Where text comes from: "synthetic" (built in) or "local" (your files).
    source: str = "synthetic"
    name: str = "synthetic"
    # source=local (see conf/data/local.yaml); relative paths are taken from the cwd.
    corpus_path: str | None = None
    labeled_path: str | None = None
    validation_path: str | None = None
    test_path: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    encoding: str = "utf-8"
    labeled_val_fraction: float = 0.1
    labeled_test_fraction: float = 0.2
    # source=synthetic
    seed: int = 1234
    num_topics: int = 4
    words_per_topic: int = 48
    neutral_words: int = 160
    corpus_documents: int = 6000
    labeled_train: int = 2000
    labeled_val: int = 400
    labeled_test: int = 1000
    val_fraction: float = 0.05
    cue_rate: float = 0.7


@dataclass
class TokenizerConfig:
    # auto: BPE for causal LMs, WordPiece for masked LMs.
    kind: str = "auto"
    vocab_size: int = 1024
    min_frequency: int = 2


@dataclass
class ModelConfig:
    name: str = MISSING
    arch: str = MISSING  # a transformers model_type: gpt2, bert
    family: str = MISSING  # causal | masked
    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    n_inner: int = 512
    max_positions: int = 128
    dropout: float = 0.1


@dataclass
class PretrainConfig:
    block_size: int = 64
    batch_size: int = 32
    max_steps: int = 1000
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    grad_clip: float = 1.0
    val_every_n_steps: int = 200
    val_batches: int = 20
    mlm_probability: float = 0.15


@dataclass
class FinetuneConfig:
    task: str = "classification"
    train_examples: int = 64
    inits: list[str] = field(default_factory=lambda: ["pretrained", "scratch"])
    max_length: int = 64
    batch_size: int = 16
    max_epochs: int = 40
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    patience: int = 6
    dropout: float = 0.1


@dataclass
class EvaluateConfig:
    batch_size: int = 64
    perplexity_batches: int = 50


@dataclass
class TrainerConfig:
    accelerator: str = "cpu"
    devices: Any = 1
    precision: str = "32-true"
    num_threads: int | None = None
    log_every_n_steps: int = 10
    progress_every_n_steps: int = 50
    deterministic: bool = False
    peak_flops: float | None = None  # for train/mfu; null: a per-accelerator default
    compile: bool = False  # torch.compile the LM for pretraining (opt-in: compiling costs ~20-40 s)


@dataclass
class TrackingConfig:
    uri: str | None = None  # null: sqlite store under paths.home
    experiment: str = "transferlab"
    run_name: str | None = None


@dataclass
class CarbonConfig:
    enabled: bool = True
    country_iso_code: str = "USA"
    measure_power_secs: float = 5.0
    tracking_mode: str = "machine"


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
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    carbon: CarbonConfig = field(default_factory=CarbonConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)


SCHEMA_NAME = "transferlab_schema"


def register_schema() -> None:
    ConfigStore.instance().store(name=SCHEMA_NAME, node=TransferLabConfig)
