"""finetune.strategy: which parameters train for each architecture, its config checks, and a
stage-level linear probe that leaves the pretrained body bit-identical."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import tiny_overrides
from safetensors.torch import load_file
from tiny_exports import HEAD

from modules.models.factory import build_classifier
from modules.models.freeze import StrategyError, apply_strategy
from modules.training.learning_rates import STRATEGY_LR
from pipelines.config.compose import compose
from pipelines.errors import ConfigError

# Per arch, for partial k=1: the top layer (+ final norm).
TOP = {"gpt2": ("transformer.h.1.", "transformer.ln_f."), "bert": ("bert.encoder.layer.1.",),
       "bart": ("model.decoder.layers.1.",)}  # BART: encoder 0-1 then decoder 0-1; the decoder is on top


def _trainable(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _under(names: set[str], prefixes: tuple[str, ...]) -> set[str]:
    return {n for n in names if n.startswith(prefixes)}


def test_full_trains_everything(exported: tuple[str, Path]) -> None:
    arch, path = exported
    model = build_classifier(path, "pretrained", 3)
    report = apply_strategy(model, "full")
    assert all(p.requires_grad for p in model.parameters())
    assert report.trainable_parameters == report.total_parameters == model.num_parameters()
    assert report.total_layers == (4 if arch == "bart" else 2)


def test_linear_probe_trains_only_the_head(exported: tuple[str, Path]) -> None:
    arch, path = exported
    model = build_classifier(path, "pretrained", 3)
    all_names = {n for n, _ in model.named_parameters()}
    report = apply_strategy(model, "linear_probe")
    head = _under(all_names, HEAD[arch])
    assert head and _trainable(model) == head
    assert report.trainable_parameters == sum(p.numel() for n, p in model.named_parameters() if n in head)
    # Frozen body runs without dropout (fixed features); the head keeps training mode.
    body_modes = {m.training for n, m in model.base_model.named_modules() if not n.startswith("pooler")}
    assert body_modes == {False}
    assert model.base_model.training is False
    assert all(model.get_submodule(h.rstrip(".")).training for h in HEAD[arch])


def test_partial_one_layer_trains_the_top_block_and_head(exported: tuple[str, Path]) -> None:
    arch, path = exported
    model = build_classifier(path, "pretrained", 3)
    all_names = {n for n, _ in model.named_parameters()}
    report = apply_strategy(model, "partial", trainable_layers=1)
    top = _under(all_names, TOP[arch])
    assert top and _trainable(model) == _under(all_names, HEAD[arch]) | top
    assert (report.trainable_layers, report.total_layers) == (1, 4 if arch == "bart" else 2)
    with pytest.raises(StrategyError, match="finetune.trainable_layers"):
        apply_strategy(build_classifier(path, "pretrained", 3), "partial", trainable_layers=5)


def test_partial_all_layers_leaves_only_embeddings_frozen(exported: tuple[str, Path]) -> None:
    arch, path = exported
    model = build_classifier(path, "pretrained", 3)
    apply_strategy(model, "partial", trainable_layers=4 if arch == "bart" else 2)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all("emb" in n or n.startswith(("transformer.wte", "transformer.wpe", "model.shared"))
                          for n in frozen), frozen


@pytest.mark.parametrize("overrides,key", [
    (["finetune.strategy=frozen"], "finetune.strategy"),
    (["finetune.trainable_layers=0"], "finetune.trainable_layers"),
    (["finetune.strategy=partial", "finetune.trainable_layers=3"], "finetune.trainable_layers"),  # tiny: 1 layer
    (["finetune.lr=0"], "finetune.lr"),
])
def test_strategy_config_errors_name_the_key(tmp_path: Path, overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}'") as err:
        compose(tiny_overrides(tmp_path, *overrides))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("strategy", sorted(STRATEGY_LR))
def test_lr_null_resolves_per_strategy_and_explicit_lr_wins(tmp_path: Path, strategy: str) -> None:
    cfg = compose(tiny_overrides(tmp_path, f"finetune.strategy={strategy}", "finetune.trainable_layers=1"))
    assert cfg.finetune.lr == {"full": 1e-3, "partial": 2e-3, "linear_probe": 5e-3, "lora": 3e-3}[strategy]
    explicit = compose(tiny_overrides(tmp_path, f"finetune.strategy={strategy}", "finetune.trainable_layers=1",
                                      "finetune.lr=3e-4"))
    assert explicit.finetune.lr == 3e-4


def test_stage_linear_probe_keeps_the_pretrained_body(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    import modules.training.recipes as recipes
    from pipelines import stages
    from pipelines.stages.common import StageContext

    head_at_start: dict[str, torch.Tensor] = {}

    def spy(model: torch.nn.Module, *args: Any, **kwargs: Any):
        report = apply_strategy(model, *args, **kwargs)
        head_at_start.update({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
        return report

    monkeypatch.setattr(recipes, "apply_strategy", spy)
    ctx = StageContext.create(compose(tiny_overrides(tmp_path, "finetune.strategy=linear_probe",
                                                     "finetune.max_epochs=3")))
    prep = stages.prep(ctx)
    pretrain = stages.pretrain(ctx, prep)
    rec = stages.finetune(ctx, prep, pretrain, "pretrained")

    before = load_file(str(Path(pretrain.hf_model) / "model.safetensors"))
    after = load_file(str(Path(rec.path) / "hf_model" / "model.safetensors"))
    body = [k for k in after if k.startswith("transformer.")]
    assert body and all(k in before for k in body)
    changed = [k for k in body if not torch.equal(before[k], after[k])]
    assert not changed, f"frozen body weights changed: {changed[:3]}"
    assert set(head_at_start) == {"score.weight"}
    assert not torch.equal(after["score.weight"], head_at_start["score.weight"]), "the head did not train"

    run = ctx.tracker.client.get_run(rec.run_id)
    assert run.data.tags["transferlab.strategy"] == "linear_probe" and rec.strategy == "linear_probe"
    assert run.data.metrics["model/trainable_parameters"] == head_at_start["score.weight"].numel()
    assert run.data.params["finetune.lr"] == str(STRATEGY_LR["linear_probe"])

    # A frozen random body is allowed, with a warning that it is a baseline only.
    with caplog.at_level("WARNING", logger="transferlab"):
        stages.finetune(ctx, prep, pretrain, "scratch")
    assert any("frozen *random* body" in r.getMessage() for r in caplog.records)
