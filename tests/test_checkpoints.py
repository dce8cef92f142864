"""modules/models/checkpoints.py: what a local HF checkpoint dir is (family, sizes, positions, content)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from modules.data.errors import DataError
from modules.models.checkpoints import (
    CheckpointError,
    checkpoint_family,
    clamp_max_length,
    content_digest,
    family_of,
    max_positions,
    size_keys,
)


def _checkpoint(path: Path, config: dict, weights: bytes = b"weights") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    (path / "model.safetensors").write_bytes(weights)
    return path


GPT2 = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": 2, "n_embd": 32, "n_head": 4,
        "n_positions": 64, "n_inner": 96, "vocab_size": 100}
BERT = {"model_type": "bert", "architectures": ["BertModel"], "num_hidden_layers": 3, "hidden_size": 48,
        "num_attention_heads": 4, "intermediate_size": 80, "max_position_embeddings": 128, "vocab_size": 100}


def test_bare_encoder_is_a_masked_lm() -> None:
    assert family_of({"model_type": "bert", "architectures": ["BertModel"]}) == "masked"
    assert family_of({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}) == "causal"
    assert family_of({"model_type": "bart", "architectures": ["BartForConditionalGeneration"]}) == "seq2seq"
    assert family_of({"model_type": "t5", "is_encoder_decoder": True}) == "seq2seq"


def test_family_from_model_type_when_no_head_is_saved() -> None:
    assert family_of({"model_type": "gpt2"}) == "causal"
    assert family_of({"model_type": "bert"}) == "masked"
    assert family_of({"model_type": "bart"}) == "seq2seq"


def test_unknown_family_is_a_one_line_user_error() -> None:
    with pytest.raises(CheckpointError) as err:
        family_of({"model_type": "resnet"}, "my/vision-model")
    assert isinstance(err.value, DataError)  # the CLI reports it in one line with exit 2
    assert str(err.value) == ("model.init='my/vision-model': cannot tell whether model_type 'resnet' is a causal, "
                              "masked or seq2seq LM")


def test_checkpoint_family_reads_the_dir(tmp_path: Path) -> None:
    assert checkpoint_family(_checkpoint(tmp_path / "gpt2", GPT2)) == "causal"
    assert checkpoint_family(_checkpoint(tmp_path / "bert", BERT)) == "masked"


def test_size_keys_in_transferlab_names(tmp_path: Path) -> None:
    assert size_keys(_checkpoint(tmp_path / "gpt2", GPT2), trust_remote_code=False) == {
        "n_layer": 2, "n_embd": 32, "n_head": 4, "max_positions": 64, "n_inner": 96}
    assert size_keys(_checkpoint(tmp_path / "bert", BERT), trust_remote_code=False) == {
        "n_layer": 3, "n_embd": 48, "n_head": 4, "max_positions": 128, "n_inner": 80}


def test_max_positions_under_either_name(tmp_path: Path) -> None:
    assert max_positions(_checkpoint(tmp_path / "gpt2", GPT2)) == 64
    assert max_positions(_checkpoint(tmp_path / "bert", BERT)) == 128
    assert max_positions(_checkpoint(tmp_path / "none", {"model_type": "gpt2"})) is None


def test_max_length_is_clamped_to_the_positions(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _checkpoint(tmp_path / "gpt2", GPT2)
    with caplog.at_level(logging.INFO, logger="transferlab"):
        assert clamp_max_length(512, path, "checkpoint:org/gpt2") == 64
    assert "finetune[checkpoint:org/gpt2]: max_length 512 -> 64 (the checkpoint's positions)" in caplog.messages
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="transferlab"):
        assert clamp_max_length(32, path, "x") == 32
        assert clamp_max_length(512, _checkpoint(tmp_path / "none", {"model_type": "gpt2"}), "x") == 512
    assert caplog.messages == []


def test_content_digest_is_the_content_not_the_path(tmp_path: Path) -> None:
    a = content_digest(_checkpoint(tmp_path / "a", GPT2))
    assert content_digest(_checkpoint(tmp_path / "b", GPT2)) == a  # same files elsewhere: same digest
    assert len(a) == 16 and int(a, 16) >= 0
    assert content_digest(_checkpoint(tmp_path / "c", GPT2, b"other weights")) != a
    assert content_digest(_checkpoint(tmp_path / "d", {**GPT2, "n_layer": 3})) != a
    (tmp_path / "a" / "model-00002.safetensors").write_bytes(b"a second shard")
    assert content_digest(tmp_path / "a") != a  # every safetensors file counts
    (tmp_path / "a" / "README.md").write_text("not weights")
    (tmp_path / "a" / "model-00002.safetensors").unlink()
    assert content_digest(tmp_path / "a") == a  # other files do not
