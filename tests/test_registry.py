"""Model Registry: a pretrain registers its export once per fingerprint; fine-tuning and
continued pretraining start from ``models:/<name>/<version>``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_overrides

from pipelines import stages
from pipelines.checkpoint_refs import resolve_init
from pipelines.config.compose import compose
from pipelines.stages.common import StageContext

NAME = "quickstart-gpt2_tiny"  # pretrain.register_as defaults to ${experiment_name}-${model.name}


def _pipeline(home: Path, *extra: str, finetune: bool = False) -> tuple[StageContext, dict[str, Any], list[dict]]:
    cfg = resolve_init(compose(tiny_overrides(home, "finetune.inits=[pretrained]", *extra)))
    ctx = StageContext.create(cfg)
    prep = stages.prep(ctx)
    pre = stages.pretrain(ctx, prep)
    tuned = [stages.finetune(ctx, prep, pre, "pretrained")] if finetune else []
    return ctx, pre, tuned


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("registry")


@pytest.fixture(scope="module")
def first(home: Path) -> tuple[StageContext, dict[str, Any]]:
    ctx, pre, _ = _pipeline(home)
    return ctx, pre


def test_pretrain_registers_version_1_with_tags(first: tuple[StageContext, dict[str, Any]]) -> None:
    ctx, pre = first
    client = ctx.tracker.client
    assert pre.registered_model == {"name": NAME, "version": "1", "new": True, "uri": f"models:/{NAME}/1"}
    mv = client.get_model_version(NAME, "1")
    assert mv.run_id == pre.run_id and mv.source == f"runs:/{pre.run_id}/hf_model"
    assert mv.tags["transferlab.fingerprint"] == pre.fingerprint
    assert len(mv.tags["transferlab.data_fingerprint"]) == 16
    assert mv.tags["transferlab.tokenizer"].startswith("bpe/")
    assert float(mv.tags["carbon/emissions_kg"]) > 0 and float(mv.tags["carbon/energy_kwh"]) > 0
    assert "gpt2_tiny" in mv.description and "6 pretraining steps" in mv.description
    assert client.get_run(pre.run_id).data.tags["transferlab.registered_model"] == f"{NAME}/1"


def test_cache_hit_registers_nothing_new(home: Path, first: tuple[StageContext, dict[str, Any]]) -> None:
    ctx, pre = first
    _, again, _ = _pipeline(home)
    assert again.cache_hit is True and again.fingerprint == pre.fingerprint
    assert again.registered_model["version"] == "1" and again.registered_model["new"] is False
    assert len(ctx.tracker.client.search_model_versions(f"name='{NAME}'")) == 1
    assert ctx.tracker.client.get_run(again.run_id).data.tags["transferlab.registered_model"] == f"{NAME}/1"


def test_register_as_null_registers_nothing(tmp_path: Path) -> None:
    ctx, pre, _ = _pipeline(tmp_path, "pretrain.register_as=null", "pretrain.max_steps=2")
    assert pre.registered_model is None
    assert ctx.tracker.client.search_registered_models() == []


def test_finetune_straight_from_the_registry(home: Path, first: tuple[StageContext, dict[str, Any]]) -> None:
    ctx, pre, tuned = _pipeline(home, f"model.init=models:/{NAME}/1", "pretrain.max_steps=0", "model=bert_tiny",
                                finetune=True)
    m = ctx.cfg.model
    assert (m.arch, m.family) == ("gpt2", "causal")  # the checkpoint's, not the bert_tiny preset's
    assert ctx.cfg.tokenizer.kind == "pretrained"
    assert Path(m.init_path).is_relative_to(home / "cache" / "init")
    # pass-through: the registered weights are this pipeline's "pretrained" model, unchanged
    from safetensors.torch import load_file

    registered = load_file(Path(m.init_path) / "model.safetensors")
    exported = load_file(Path(pre.hf_model) / "model.safetensors")
    assert registered.keys() == exported.keys()
    assert all((registered[k] == exported[k]).all() for k in registered)
    assert pre.registered_model is None  # nothing new to register
    assert 0.0 <= tuned[0].metrics["test/accuracy"] <= 1.0
    assert len(ctx.tracker.client.search_model_versions(f"name='{NAME}'")) == 1


def test_continue_pretraining_from_the_registry(home: Path, first: tuple[StageContext, dict[str, Any]]) -> None:
    ctx, pre, tuned = _pipeline(home, f"model.init=models:/{NAME}/1", "pretrain.max_steps=2", finetune=True)
    assert pre.cache_hit is False and pre.fingerprint != first[1].fingerprint
    assert "val/loss" in pre.metrics
    assert 0.0 <= tuned[0].metrics["test/accuracy"] <= 1.0
    assert pre.registered_model["version"] == "2"  # a new export: a new version
    mv = ctx.tracker.client.get_model_version(NAME, "2")
    assert mv.tags["transferlab.init"] == f"models:/{NAME}/1" and "2 pretraining steps" in mv.description


def test_alias_resolves_to_its_version(home: Path, first: tuple[StageContext, dict[str, Any]]) -> None:
    ctx, _ = first
    ctx.tracker.client.set_registered_model_alias(NAME, "champion", "1")
    paths = {resolve_init(compose(tiny_overrides(home, f"model.init={uri}"))).model.init_path
             for uri in (f"models:/{NAME}/1", f"models:/{NAME}/champion", f"models:/{NAME}@champion")}
    assert len(paths) == 1  # one download, keyed by the version the alias points at
