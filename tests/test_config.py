"""Config composition and validation, through the real conf/ tree and the real CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.cli import main
from pipelines.config.compose import compose, group_options
from pipelines.errors import ConfigError


def test_default_config_is_the_quickstart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSFERLAB_HOME", str(tmp_path / "state"))
    cfg = compose([])
    assert cfg.experiment_name == "quickstart"
    assert cfg.model.name == "gpt2_tiny" and cfg.model.family == "causal"
    assert cfg.finetune.inits == ["pretrained", "scratch", "tfidf"]
    assert cfg.paths.home == str((tmp_path / "state").resolve())


def test_groups_from_design_exist() -> None:
    for group in ("data", "tokenizer", "model", "pretrain", "finetune", "evaluate", "trainer", "tracking",
                  "carbon", "experiment", "paths"):
        assert group_options(group), group
    assert {"gpt2_tiny", "bert_tiny"} <= set(group_options("model"))


def test_bert_quickstart_preset_switches_the_model_group() -> None:
    cfg = compose(["experiment=quickstart_bert"])
    assert cfg.model.name == "bert_tiny" and cfg.experiment_name == "quickstart_bert"
    assert cfg.pretrain.mlm_probability == 0.4 and cfg.pretrain.max_steps == 2000
    assert compose(["experiment=quickstart_bert", "pretrain.max_steps=5"]).pretrain.max_steps == 5


def test_overrides_apply_and_types_coerce() -> None:
    cfg = compose(["model=bert_tiny", "pretrain.max_steps=7", "seed=3"])
    assert cfg.model.arch == "bert" and cfg.model.family == "masked"
    assert cfg.pretrain.max_steps == 7 and isinstance(cfg.pretrain.max_steps, int)
    assert cfg.seed == 3


@pytest.mark.parametrize(
    ("override", "must_mention"),
    [
        ("no_such_key=1", ["no_such_key"]),
        ("pretrain.nope=1", ["pretrain.nope"]),
        ("+brand_new=1", ["brand_new"]),
        ("model=nope", ["nope", "model", "bert_tiny", "gpt2_tiny"]),
        ("pretrain.max_steps=abc", ["pretrain.max_steps"]),
        ("seed=1.5", ["seed"]),
        ("model.family=masked", ["model.family"]),
        ("model.n_head=3", ["model.n_head"]),
        ("finetune.max_length=4096", ["finetune.max_length", "max_positions"]),
        ("pretrain.block_size=256", ["pretrain.block_size", "model.max_positions=128"]),
        ("finetune.inits=[pretrained,pretrained]", ["finetune.inits"]),
        ("hydra.run.dir=/tmp/elsewhere", ["hydra.run.dir", "not accepted"]),
        ("+hydra.job.chdir=true", ["hydra.job.chdir", "not accepted"]),
        ("pretrain.max_steps=0", ["pretrain.max_steps"]),
    ],
)
def test_bad_config_exits_2_with_one_line(override: str, must_mention: list[str],
                                          capsys: pytest.CaptureFixture) -> None:
    assert main(["config", override]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for word in must_mention:
        assert word in err


def test_task_the_family_cannot_serve_names_the_families_that_can(capsys: pytest.CaptureFixture) -> None:
    assert main(["config", "model=bart_tiny", "finetune.task=token_classification"]) == 2
    err = capsys.readouterr().err.strip()
    assert "finetune.task" in err and "seq2seq" in err and "causal, masked" in err
    assert main(["config", "model=bert_tiny", "finetune.task=seq2seq"]) == 2
    assert "causal, seq2seq" in capsys.readouterr().err


def test_compose_raises_config_error_not_hydra_internals() -> None:
    with pytest.raises(ConfigError, match="unknown config key 'no_such_key'"):
        compose(["no_such_key=1"])


def test_config_command_prints_resolved_yaml(capsys: pytest.CaptureFixture) -> None:
    assert main(["config", "model=bert_tiny", "finetune.train_examples=32"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["name"] == "bert_tiny"
    assert printed["finetune"]["train_examples"] == 32
    assert "${" not in str(printed)  # interpolations resolved


def test_console_script_reports_bad_group_option(tmp_path: Path) -> None:
    """The installed entry point, as a user runs it: exit 2, one line on stderr."""
    exe = Path(sys.executable).with_name("transferlab")
    proc = subprocess.run([str(exe), "run", "model=nope"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "transferlab: error: unknown option 'nope' for config group 'model' "
        "(choices: bart_small, bart_tiny, bert_small, bert_tiny, gpt2_mini, gpt2_small, gpt2_tiny)"
    ]
    assert not (tmp_path / ".transferlab").exists()  # rejected before any state was written


@pytest.mark.parametrize(("overrides", "lr"), [
    ([], 3e-3),
    (["model=bert_tiny"], 3e-3),
    (["model=bart_tiny"], 1e-3),
    (["model=bart_tiny", "pretrain.lr=5e-4"], 5e-4),
])
def test_pretrain_lr_defaults_by_family_unless_set(tmp_path: Path, overrides: list[str], lr: float) -> None:
    from pipelines.config.compose import compose

    assert compose([f"paths.home={tmp_path}", *overrides]).pretrain.lr == lr
