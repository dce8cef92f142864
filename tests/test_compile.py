"""trainer.compile=true: torch.compile'd pretraining still exports a plain HF model (slow: compiles)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tiny_overrides

from pipelines import stages
from pipelines.config.compose import compose
from pipelines.stages.common import StageContext

pytestmark = pytest.mark.slow


def test_compiled_pretraining_exports_uncompiled_weights(tmp_path: Path) -> None:
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    ctx = StageContext.create(compose(tiny_overrides(tmp_path, "trainer.compile=true")))
    rec = stages.pretrain(ctx, stages.prep(ctx))
    weights = Path(rec.hf_model) / "model.safetensors"
    with safe_open(str(weights), "pt") as f:
        keys = list(f.keys())
    assert keys and not any("_orig_mod" in k for k in keys)
    model = AutoModelForCausalLM.from_pretrained(rec.hf_model)
    assert model.config.n_layer == 1
    assert ctx.tracker.client.get_run(rec.run_id).data.metrics["train/loss"] > 0
