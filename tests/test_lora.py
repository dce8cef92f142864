"""finetune.strategy=lora: which parameters train per architecture, its config checks, and
stage runs per task that save an adapter which, applied over the init, equals the merged export."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_overrides
from safetensors.torch import load_file
from tiny_exports import HEAD

from modules.config import FinetuneConfig
from modules.models.factory import build_classifier
from modules.models.freeze import StrategyError, apply_strategy
from modules.models.lora import LoraSettings, apply_lora, default_targets
from pipelines.config.compose import compose
from pipelines.errors import ConfigError

TARGETS = {"gpt2": ("c_attn",), "bert": ("query", "value"), "bart": ("q_proj", "v_proj")}


def test_auto_targets_the_attention_projections_and_the_head_trains(exported: tuple[str, Path]) -> None:
    arch, path = exported
    assert default_targets(arch) == TARGETS[arch]
    plain = build_classifier(path, "pretrained", 3)
    projections = [n for n, _ in plain.named_modules() if n.rsplit(".", 1)[-1] in TARGETS[arch]]
    full = apply_strategy(plain, "full")
    model, report = apply_lora(build_classifier(path, "pretrained", 3), LoraSettings(rank=4))
    trainable = {n.removeprefix("base_model.model.") for n, p in model.named_parameters() if p.requires_grad}
    adapters = {n for n in trainable if ".lora_" in n}
    head = trainable - adapters
    # One A and one B on every projection so named (BART's decoder: self and cross attention), and on no other.
    assert {n.split(".lora_")[0] for n in adapters} == set(projections)
    assert len(adapters) == 2 * len(projections) >= 2 * len(TARGETS[arch]) * 2
    assert head and all(n.startswith(HEAD[arch]) and ".modules_to_save." in n for n in head)
    assert report.strategy == "lora" and report.total_parameters == full.total_parameters
    assert report.trainable_parameters == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert report.trainable_parameters < full.trainable_parameters / 5


def test_an_lm_head_tied_to_the_embeddings_stays_frozen_and_tied(exported: tuple[str, Path]) -> None:
    """seq2seq tunes the LM itself: its head is the embedding matrix, so only adapters train."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    arch, path = exported
    if arch == "bert":
        pytest.skip("masked LMs do not serve seq2seq")
    lm = (AutoModelForCausalLM if arch == "gpt2" else AutoModelForSeq2SeqLM).from_pretrained(str(path))
    model, report = apply_lora(lm, LoraSettings(rank=2))
    assert all(".lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    merged = model.merge_and_unload()  # type: ignore[operator]
    assert merged.get_output_embeddings().weight is merged.get_input_embeddings().weight
    assert report.total_parameters == sum(p.numel() for p in merged.parameters())


def test_unknown_target_module_names_the_key(exported: tuple[str, Path]) -> None:
    _, path = exported
    with pytest.raises(StrategyError, match=r"^bad value for 'finetune.lora_target_modules': 'qkv' names no linear"
                                            r" layer") as err:
        apply_lora(build_classifier(path, "pretrained", 3), LoraSettings(target_modules=("qkv",)))
    assert "\n" not in str(err.value)


def test_settings_read_the_finetune_keys() -> None:
    ft = FinetuneConfig(strategy="lora", lora_rank=4, lora_alpha=8, lora_dropout=0.0, lora_target_modules="c_attn")
    assert LoraSettings.from_config(ft) == LoraSettings(4, 8, 0.0, ("c_attn",))
    assert LoraSettings.from_config(replace(ft, lora_target_modules=["a", "b"])).target_modules == ("a", "b")
    assert LoraSettings.from_config(FinetuneConfig()).target_modules == "auto"


@pytest.mark.parametrize("overrides,key", [
    (["finetune.strategy=lora", "finetune.lora_rank=0"], "finetune.lora_rank"),
    (["finetune.lora_alpha=0"], "finetune.lora_alpha"),
    (["finetune.lora_dropout=1.0"], "finetune.lora_dropout"),
    (["finetune.lora_target_modules=[]"], "finetune.lora_target_modules"),
])
def test_lora_config_errors_name_the_key(tmp_path: Path, overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}'") as err:
        compose(tiny_overrides(tmp_path, *overrides))
    assert "\n" not in str(err.value)


def test_lora_keys_enter_the_fingerprint_only_with_strategy_lora(tmp_path: Path) -> None:
    from pipelines.stages.finetune import finetune_fingerprint

    prep = SimpleNamespace(fingerprint="p")  # all a fine-tune's fingerprint reads of the prep record

    def fp(*extra: str) -> str:
        cfg = compose(tiny_overrides(tmp_path, *extra))
        return finetune_fingerprint(cfg, prep, {"pretrain": "x"}, "pretrained")  # type: ignore[arg-type]

    assert fp() == fp("finetune.lora_rank=4")
    assert fp("finetune.strategy=lora") != fp("finetune.strategy=lora", "finetune.lora_rank=4")
    assert fp("finetune.strategy=lora") != fp()


def _logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**batch).logits


@pytest.mark.parametrize("model,task", [("gpt2_tiny", "classification"), ("bert_tiny", "classification"),
                                        ("bert_tiny", "token_classification"), ("bart_tiny", "seq2seq")])
def test_stage_saves_a_small_adapter_equal_to_the_merged_export(tmp_path: Path, model: str, task: str) -> None:
    from peft import PeftModel
    from transformers import (
        AutoModelForSeq2SeqLM,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )

    from pipelines import stages
    from pipelines.stages.common import StageContext

    auto = {"classification": AutoModelForSequenceClassification, "token_classification":
            AutoModelForTokenClassification, "seq2seq": AutoModelForSeq2SeqLM}[task]
    extra = ["finetune.max_target_length=8"] if task == "seq2seq" else []
    ctx = StageContext.create(compose(tiny_overrides(tmp_path, f"model={model}", f"finetune={task}",
                                                     "finetune.strategy=lora", "finetune.max_epochs=2", *extra)))
    prep = stages.prep(ctx)
    pretrain = stages.pretrain(ctx, prep)
    rec = stages.finetune(ctx, prep, pretrain, "pretrained")
    out = Path(rec.path)
    assert rec.strategy == "lora" and (out / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["peft_type"] == "LORA"

    run = ctx.tracker.client.get_run(rec.run_id)
    metrics = run.data.metrics
    assert run.data.tags["transferlab.strategy"] == "lora"
    assert run.data.params["finetune.lr"] == "0.003"
    merged = auto.from_pretrained(str(out / "hf_model"))  # a plain transformers model, as for every strategy
    total = sum(p.numel() for p in merged.parameters())
    assert 0 < metrics["model/trainable_parameters"] < total / 5
    assert metrics["model/trainable_share"] == pytest.approx(metrics["model/trainable_parameters"] / total)
    adapter_bytes = sum(f.stat().st_size for f in (out / "adapter").iterdir())
    assert metrics["model/adapter_bytes"] == adapter_bytes
    assert adapter_bytes < (out / "hf_model" / "model.safetensors").stat().st_size / 2
    artifacts = {a.path for a in ctx.tracker.client.list_artifacts(rec.run_id)}
    assert {"adapter", "hf_model"} <= artifacts

    # The adapter over the init's own weights (a fresh head: the adapter carries the trained one).
    base = auto.from_pretrained(pretrain.hf_model, **({} if task == "seq2seq" else
                                                      {"num_labels": merged.config.num_labels}))
    reloaded = PeftModel.from_pretrained(base, str(out / "adapter"))
    tok = AutoTokenizer.from_pretrained(str(out / "hf_model"))
    batch = dict(tok(["the first test sentence", "and another one"], return_tensors="pt", padding=True))
    if task == "seq2seq":
        batch["decoder_input_ids"] = batch["input_ids"][:, :4]
    assert torch.allclose(_logits(reloaded, batch), _logits(merged, batch), atol=1e-4)

    # Merging changed the targeted projections and nothing else of the pretrained body.
    before = load_file(str(Path(pretrain.hf_model) / "model.safetensors"))
    after = load_file(str(out / "hf_model" / "model.safetensors"))
    changed = {k for k in before.keys() & after.keys() if not torch.equal(before[k], after[k])}
    targets = default_targets(merged.config.model_type)
    assert changed and all(any(f".{t}." in k for t in targets) and k.endswith(".weight") for k in changed), changed
