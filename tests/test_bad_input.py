"""Bad input anywhere keeps the contract: one line naming the key/file/value, exit code 2,
no MLflow run and no cache entry.

Every case runs ``transferlab run`` on a fresh state dir. Most run in-process through
``pipelines.cli.main`` (the CLI's import costs seconds per process); the cases marked
``cli`` run the installed ``transferlab`` script in a subprocess, as a user would.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.cli import main
from tests.conftest import TINY

# Placeholders filled per test: @DATA (the data-file dir), @STORE (a registered model exists).
L = ["data=local_labeled"]
CASES = [
    # The three of issue 11: each used to start work (runs, a traceback, or no end at all).
    ("precision-fp8", ["trainer.precision=fp8"], "'trainer.precision': 'fp8'", "cli"),
    ("vocab-too-small", ["tokenizer.vocab_size=10"], "'tokenizer.vocab_size': 10", "cli"),
    ("budget-below-classes", ["finetune.train_examples=2"], "'finetune.train_examples': 2", "cli"),
    ("vocab-wordpiece", ["model=bert_tiny", "tokenizer.vocab_size=20"], "'tokenizer.vocab_size': 20", "main"),
    ("budget-below-classes-file", [*L, "data.path=@DATA/good.csv", "finetune.train_examples=1"],
     "'finetune.train_examples': 1", "main"),
    ("sweep-budget-below-classes", ["sweep.enabled=true", "sweep.budgets=[3,64]"], "'sweep.budgets': 3", "main"),
    # Unknown keys, groups and options.
    ("unknown-group-option", ["model=gpt5_huge"], "'gpt5_huge'", "main"),
    ("unknown-key-typo", ["pretrain.max_step=5"], "pretrain.max_step", "main"),
    ("unknown-key-added", ["+finetune.extra=1"], "finetune.extra", "main"),
    ("unknown-top-level", ["nonsense=1"], "nonsense", "main"),
    ("hydra-key", ["hydra.run.dir=/tmp/x"], "hydra.run.dir", "main"),
    # Bad types.
    ("type-int", ["pretrain.max_steps=abc"], "pretrain.max_steps", "main"),
    ("type-float-for-int", ["seed=1.5"], "'seed'", "main"),
    ("type-bool", ["carbon.enabled=maybe"], "carbon.enabled", "main"),
    ("devices-word", ["trainer.devices=abc"], "'trainer.devices': 'abc'", "main"),
    # Choices Lightning or transferlab would only refuse after work started.
    ("accelerator", ["trainer.accelerator=quantum"], "'trainer.accelerator': 'quantum'", "main"),
    ("strategy", ["trainer.strategy=nonsense"], "'trainer.strategy': 'nonsense'", "main"),
    ("task", ["finetune.task=regression"], "'finetune.task': 'regression'", "main"),
    ("tokenizer-kind", ["tokenizer.kind=sentencepiece"], "'tokenizer.kind': 'sentencepiece'", "main"),
    ("finetune-strategy", ["finetune.strategy=half"], "'finetune.strategy': 'half'", "main"),
    ("lora-rank-zero", ["finetune.strategy=lora", "finetune.lora_rank=0"], "'finetune.lora_rank': 0", "main"),
    ("lora-unknown-target", ["finetune.strategy=lora", "finetune.lora_target_modules=[c_attn,qkv]"],
     "'finetune.lora_target_modules': 'qkv'", "cli"),
    ("duplicate-inits", ["finetune.inits=[pretrained,pretrained]"], "finetune.inits", "main"),
    ("register-name", ["pretrain.register_as=a/b"], "pretrain.register_as", "main"),
    ("finetune-register-name", ["finetune.register_as=a:b"], "finetune.register_as", "main"),
    # Numeric ranges.
    ("devices-zero", ["trainer.devices=0"], "'trainer.devices': 0", "main"),
    ("num-nodes", ["trainer.num_nodes=0"], "'trainer.num_nodes': 0", "main"),
    ("negative-steps", ["pretrain.max_steps=-5"], "'pretrain.max_steps': -5", "main"),
    ("zero-batch", ["finetune.batch_size=0"], "'finetune.batch_size': 0", "main"),
    ("negative-lr", ["pretrain.lr=-1"], "'pretrain.lr': -1", "main"),
    ("dropout", ["model.dropout=1.5"], "'model.dropout': 1.5", "main"),
    ("val-fraction", ["data.val_fraction=1.5"], "'data.val_fraction': 1.5", "main"),
    ("mlm-probability", ["pretrain.mlm_probability=0"], "'pretrain.mlm_probability': 0", "main"),
    ("heads-do-not-divide", ["model.n_head=3"], "'model.n_head': 3", "main"),
    ("block-over-positions", ["pretrain.block_size=4096"], "'pretrain.block_size': 4096", "main"),
    ("one-topic", ["data.num_topics=1"], "data.num_topics", "main"),
    ("keep-checkpoints", ["pretrain.keep_checkpoints=0"], "'pretrain.keep_checkpoints': 0", "main"),
    ("carbon-interval", ["carbon.measure_power_secs=0"], "'carbon.measure_power_secs': 0", "main"),
    ("inference-examples", ["evaluate.inference_examples=-1"], "'evaluate.inference_examples': -1", "main"),
    ("inference-precision", ["evaluate.inference_precision=fp16"], "'evaluate.inference_precision': 'fp16'", "main"),
    # Data files.
    ("file-missing", [*L, "data.path=@DATA/missing.csv"], "missing.csv", "cli"),
    ("file-empty", [*L, "data.path=@DATA/empty.csv"], "empty.csv", "main"),
    ("file-binary", [*L, "data.path=@DATA/binary.csv"], "binary.csv", "main"),
    ("file-wrong-column", [*L, "data.path=@DATA/good.csv", "data.text_column=body"], "data.text_column", "main"),
    ("file-one-class", [*L, "data.path=@DATA/one_class.csv"], "data.label_column", "main"),
    ("glob-matches-nothing", [*L, "data.path=@DATA/*.nomatch"], "*.nomatch", "main"),
    ("corpus-without-labels", ["data=local_text", "data.path=@DATA/corpus.txt"], "data=local_text", "main"),
    ("no-path", L, "data.path", "main"),
    # Checkpoint URIs and dirs.
    ("models-uri-no-model", ["model.init=models:/nope/1"], "models:/nope/1", "main"),
    ("models-uri-no-version", ["model.init=models:/tiny/7", "@STORE"], "models:/tiny/7", "cli"),
    ("models-uri-malformed", ["model.init=models:/tiny", "@STORE"], "models:/tiny", "main"),
    ("runs-uri-bad", ["model.init=runs:/0123456789abcdef/hf_model", "@STORE"], "runs:/0123456789abcdef", "main"),
    ("inits-runs-uri-bad", ["finetune.inits=[pretrained,runs:/feedface/hf_model]", "@STORE"], "runs:/feedface",
     "main"),
    ("init-dir-missing", ["model.init=/nonexistent/model_dir"], "/nonexistent/model_dir", "main"),
    ("init-dir-without-config", ["model.init=@DATA"], "config.json", "main"),
    ("hub-id-offline", ["model.init=someone/no-such-model"], "someone/no-such-model", "main"),
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("data")
    rows = ["text,label"] + [f"some words here number {i},{'pos' if i % 2 else 'neg'}" for i in range(60)]
    (d / "good.csv").write_text("\n".join(rows) + "\n")
    (d / "empty.csv").write_text("")
    (d / "binary.csv").write_bytes(bytes(range(256)) * 20)
    (d / "one_class.csv").write_text("\n".join(["text,label"] + [f"text {i},pos" for i in range(40)]) + "\n")
    (d / "corpus.txt").write_text("\n".join(f"document {i} has words" for i in range(50)) + "\n")
    return d


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow store with a registered model ``tiny`` (version 1) and no runs."""
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}", registry_uri=f"sqlite:///{db}")
    client.create_registered_model("tiny")
    client.create_model_version("tiny", source=str(db.parent))
    return db


def _runs(db: Path) -> int:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT count(*) FROM runs").fetchone()[0]


@pytest.mark.parametrize("name, overrides, names, via", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(
    name: str, overrides: list[str], names: str, via: str, tmp_path: Path, data_dir: Path, store: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home = tmp_path / "home"
    args = [a.replace("@DATA", str(data_dir)) for a in overrides if a != "@STORE"]
    if "@STORE" in overrides:
        home.mkdir()
        shutil.copy(store, home / "mlflow.db")
    argv = ["run", *TINY, *args, f"paths.home={home}"]
    if via == "cli":
        proc = subprocess.run([str(Path(sys.executable).with_name("transferlab")), *argv], capture_output=True,
                              text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        code, err = proc.returncode, proc.stderr
    else:
        code = main(argv)
        err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("transferlab: error: ") and names in lines[0], lines[0]
    assert code == 2
    db = home / "mlflow.db"
    assert not db.exists() or _runs(db) == 0
    cache = home / "cache"
    assert not cache.exists() or not any(cache.iterdir())


def test_cases_cover_the_contract() -> None:
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


def test_trainer_choices_match_the_installed_lightning() -> None:
    """The compose-time lists must follow Lightning: a value it accepts is never refused."""
    from typing import get_args

    from lightning.fabric.plugins.precision.precision import _PRECISION_INPUT
    from lightning.pytorch.accelerators import AcceleratorRegistry
    from lightning.pytorch.strategies import StrategyRegistry

    from pipelines.config.compose import ACCELERATORS, PRECISIONS, STRATEGIES_LIGHTNING

    lightning = {str(v) for arg in get_args(_PRECISION_INPUT) for v in get_args(arg)}
    assert PRECISIONS == lightning | {"auto"}
    assert ACCELERATORS == set(AcceleratorRegistry.available_accelerators()) | {"auto", "gpu"}
    assert STRATEGIES_LIGHTNING == set(StrategyRegistry.available_strategies()) | {"auto"}


def test_vocab_floor_matches_the_tokenizer_specials() -> None:
    """min_vocab_size counts the special tokens modules/data/tokenization.py really adds."""
    from modules.data.tokenization import _SPECIAL_ORDER
    from modules.data.tokenizer_kinds import SPECIAL_TOKENS, min_vocab_size

    assert SPECIAL_TOKENS == {family: len(tokens) for family, tokens in _SPECIAL_ORDER.items()}
    assert min_vocab_size("auto", "causal") == 258 and min_vocab_size("pretrained", "masked") is None
