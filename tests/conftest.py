"""Shared fixtures: the real Hydra config, shrunk; all state redirected to tmp dirs.

Environment is set at import time, before any test module imports Prefect or the hub
clients, so nothing leaks into the user's ~/.prefect or reaches for the network.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pipelines.config.schema import TransferLabConfig

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="transferlab-test-prefect-")
atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)
# The user's own MLflow/transferlab settings must not steer tests (conf reads these env vars).
for _name in ("TRANSFERLAB_HOME", "MLFLOW_TRACKING_URI", "TRANSFERLAB_TRACKING_URI", "TRANSFERLAB_MLFLOW_UI_URL",
              "TRANSFERLAB_SERVER_OVERRIDES", "TRANSFERLAB_DATA_DIRS", "TRANSFERLAB_LIMITS", "PREFECT_API_URL"):
    os.environ.pop(_name, None)

# Small enough that every stage finishes in seconds on 2 cores, yet every code path
# (tokenizer training, packing, validation, early stopping, export) still runs.
TINY = [
    "data.corpus_documents=240",
    "data.words_per_topic=8",
    "data.neutral_words=40",
    "data.labeled_train=120",
    "data.labeled_val=40",
    "data.labeled_test=80",
    "tokenizer.vocab_size=300",
    "model.n_layer=1",
    "model.n_embd=32",
    "model.n_head=2",
    "model.n_inner=64",
    "model.max_positions=64",
    "pretrain.block_size=32",
    "pretrain.batch_size=8",
    "pretrain.max_steps=6",
    "pretrain.warmup_steps=2",
    "pretrain.val_every_n_steps=3",
    "pretrain.val_batches=2",
    "finetune.train_examples=16",
    "finetune.batch_size=8",
    "finetune.max_epochs=2",
    "finetune.max_length=32",
    "evaluate.perplexity_batches=2",
    "evaluate.inference_examples=16",
    "evaluate.inference_batch1_examples=4",
    "trainer.log_every_n_steps=2",
    "trainer.progress_every_n_steps=2",
    "carbon.measure_power_secs=1",
]


def tiny_overrides(home: Path, *extra: str) -> list[str]:
    return [*TINY, f"paths.home={home}", *extra]


@pytest.fixture
def tiny_cfg(tmp_path: Path) -> TransferLabConfig:
    from pipelines.config.compose import compose

    return compose(tiny_overrides(tmp_path))


@pytest.fixture(scope="module", params=["bart", "bert", "gpt2"])
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """(arch, folder): a tiny LM of each architecture saved as a pretrained export, once per
    arch and test module (tests/tiny_exports.py), for the fine-tuning strategy tests."""
    from tiny_exports import export_tiny_lm

    arch = request.param
    return arch, export_tiny_lm(arch, tmp_path_factory.mktemp(arch))


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect server and database for the whole test session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
