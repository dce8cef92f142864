"""trainer.compile=auto: compile only runs long enough to pay the compile time back."""

from __future__ import annotations

import pytest

from modules.training.compile_policy import DEFAULT_MIN_STEPS, decide_compile
from pipelines.config.compose import compose
from pipelines.errors import ConfigError


def test_explicit_settings_are_obeyed_whatever_the_length() -> None:
    assert decide_compile(True, 1, "cpu").compile is True
    assert decide_compile(False, 10**6, "cpu").compile is False
    assert decide_compile(True, 1, "cpu").params() == {"trainer.compiled": "true"}  # no threshold was used


def test_auto_compiles_at_the_threshold_and_not_below(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    threshold = DEFAULT_MIN_STEPS["cpu"]
    below, at = decide_compile("auto", threshold - 1, "cpu"), decide_compile("auto", threshold, "cpu")
    assert (below.compile, at.compile) == (False, True)
    assert at.params() == {"trainer.compiled": "true", "trainer.compile_min_steps_used": str(threshold)}
    assert "pay back" in below.reason
    assert decide_compile("auto", 50, "cpu", min_steps=50).compile is True  # trainer.compile_min_steps wins


def test_auto_stays_eager_without_a_cpp_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXX", "no-such-compiler++")
    decision = decide_compile("auto", 10**6, "cpu")
    assert decision.compile is False and "no-such-compiler++" in decision.reason


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("False", False), ("auto", "auto"), (True, True)])
def test_compose_normalises_the_setting(tmp_path, value: object, expected: object) -> None:
    cfg = compose([f"paths.home={tmp_path}", f"trainer.compile={value}"])
    assert cfg.trainer.compile == expected


def test_compose_default_is_auto(tmp_path) -> None:
    assert compose([f"paths.home={tmp_path}"]).trainer.compile == "auto"


@pytest.mark.parametrize(("override", "named"), [("trainer.compile=sometimes", "'trainer.compile': 'sometimes'"),
                                                 ("trainer.compile=1", "'trainer.compile': 1"),
                                                 ("trainer.compile_min_steps=0", "'trainer.compile_min_steps': 0")])
def test_bad_settings_name_the_key(tmp_path, override: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        compose([f"paths.home={tmp_path}", override])


def test_gpt2_lm_compiles_as_one_graph() -> None:
    """GPT2LMHeadModel names no loss; transformers' fallback warns inside forward, which
    torch.compile cannot trace: a graph break that left the loss uncompiled."""
    import torch
    import torch._dynamo
    from transformers import GPT2Config

    from modules.models.factory import build_lm

    model = build_lm(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100, bos_token_id=0, eos_token_id=0),
                     "causal")
    ids = torch.randint(0, 100, (2, 16))  # (B, T)
    explained = torch._dynamo.explain(model)(input_ids=ids, labels=ids)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
