"""model.init: resolving a checkpoint (local dir, hub id, MLflow URI) and its bad-input cases."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import tiny_overrides

from modules.models.checkpoints import content_digest, family_of
from pipelines.checkpoint_refs import (
    check_init,
    model_identity,
    parse_models_uri,
    resolve_init,
)
from pipelines.cli import main
from pipelines.config.compose import compose
from pipelines.errors import ConfigError, UserError

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "birds sing at dawn"] * 20


def _tokenizer():
    from modules.data.tokenization import train_tokenizer

    return train_tokenizer(TEXTS, "bpe", 120, 1)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 + tokenizer saved the way the hub and transferlab save them."""
    from transformers import GPT2Config, GPT2LMHeadModel

    out = tmp_path_factory.mktemp("ckpt") / "tiny-gpt2"
    tok = _tokenizer()
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=1, n_head=2,
                                       n_inner=64, pad_token_id=tok.pad_token_id))
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_local_dir_fills_arch_family_tokenizer(tmp_path: Path, gpt2_dir: Path) -> None:
    cfg = compose(tiny_overrides(tmp_path, f"model.init={gpt2_dir}", "model=bert_tiny"))
    assert cfg.model.arch == "bert"  # the preset, until the checkpoint speaks
    resolve_init(cfg)
    m = cfg.model
    assert (m.arch, m.family, m.init_path) == ("gpt2", "causal", str(gpt2_dir))
    assert (m.n_layer, m.n_embd, m.n_head, m.max_positions) == (1, 32, 2, 64)
    assert (cfg.tokenizer.kind, cfg.tokenizer.path) == ("pretrained", str(gpt2_dir))
    assert cfg.pretrain.lr == 1e-4  # lr=null continues a trained model gently
    assert list(tmp_path.iterdir()) == []  # a local dir needs no state


def test_fingerprint_identity_is_the_content_not_the_path(tmp_path: Path, gpt2_dir: Path) -> None:
    copy = _copy(gpt2_dir, tmp_path / "copy")
    a = resolve_init(compose(tiny_overrides(tmp_path, f"model.init={gpt2_dir}")))
    b = resolve_init(compose(tiny_overrides(tmp_path, f"model.init={copy}")))
    assert model_identity(a.model) == model_identity(b.model)
    before = content_digest(copy)
    cfg = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**cfg, "resid_pdrop": 0.3}))
    assert content_digest(copy) != before


def test_models_uri_accepts_versions_and_aliases() -> None:
    assert parse_models_uri("models:/m/3") == ("m", "3", None, "")
    assert parse_models_uri("models:/m/champion") == ("m", None, "champion", "")
    assert parse_models_uri("models:/m@champion") == ("m", None, "champion", "")


@pytest.mark.parametrize("case,needle", [
    ("no_config", "has no config.json"),
    ("pickle_only", r"only pickle weights \(pytorch_model.bin\)"),
    ("auto_map", "auto_map"),
    ("missing", "no such directory"),
])
def test_bad_local_dirs_fail_with_one_line(tmp_path: Path, gpt2_dir: Path, case: str, needle: str) -> None:
    bad = _copy(gpt2_dir, tmp_path / case)
    if case == "no_config":
        (bad / "config.json").unlink()
    elif case == "pickle_only":
        (bad / "model.safetensors").rename(bad / "pytorch_model.bin")
    elif case == "auto_map":
        cfg = json.loads((bad / "config.json").read_text())
        (bad / "config.json").write_text(json.dumps({**cfg, "auto_map": {"AutoModel": "modeling_x.XModel"}}))
    else:
        shutil.rmtree(bad)
    cfg = compose(tiny_overrides(tmp_path / "home", f"model.init={bad}"))
    with pytest.raises(UserError, match=needle) as err:
        check_init(cfg)
    assert "\n" not in str(err.value) and str(bad) in str(err.value)
    if case == "pickle_only":
        assert "safetensors" in str(err.value) and "arbitrary code" in str(err.value)


def test_auto_map_is_fine_when_trusted(tmp_path: Path, gpt2_dir: Path) -> None:
    bad = _copy(gpt2_dir, tmp_path / "custom")
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "auto_map": {"AutoModel": "modeling_x.XModel"}}))
    check_init(compose(tiny_overrides(tmp_path / "home", f"model.init={bad}", "model.trust_remote_code=true")))


def test_trained_tokenizer_with_a_checkpoint_is_rejected(tmp_path: Path, gpt2_dir: Path) -> None:
    cfg = compose(tiny_overrides(tmp_path, f"model.init={gpt2_dir}", "tokenizer=bpe"))
    with pytest.raises(UserError, match="tokenizer.kind"):
        check_init(cfg)


def test_hub_id_offline_says_unreachable(tmp_path: Path) -> None:
    cfg = compose(tiny_overrides(tmp_path, "model.init=nobody-here/not-cached-model"))
    with pytest.raises(UserError, match="hub is unreachable.*local model directory or an MLflow URI"):
        check_init(cfg)
    with pytest.raises(UserError, match="unreachable"):
        resolve_init(cfg)


def test_max_steps_zero_needs_a_checkpoint(tmp_path: Path, gpt2_dir: Path) -> None:
    with pytest.raises(ConfigError, match="pretrain.max_steps"):
        compose(tiny_overrides(tmp_path, "pretrain.max_steps=0"))
    assert compose(tiny_overrides(tmp_path, f"model.init={gpt2_dir}", "pretrain.max_steps=0"))


@pytest.mark.parametrize("uri", ["runs:/0123456789abcdef0123456789abcdef/hf_model", "models:/nope/1",
                                 "models:/nope@champion"])
def test_missing_mlflow_uri_exits_2_and_leaves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       uri: str) -> None:
    home = tmp_path / "home"
    assert main(["run", *tiny_overrides(home, f"model.init={uri}")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("transferlab: error: ") and uri in err and "does not exist" in err
    assert len(err.splitlines()) == 1
    assert not home.exists()  # no store existed, so none was created to say so


def test_missing_mlflow_uri_in_an_existing_store(tmp_path: Path) -> None:
    from pipelines.tracking.runs import Tracker

    cfg = compose(tiny_overrides(tmp_path))
    tracker = Tracker.from_config(cfg)
    run_id = tracker.start_run("x", {})
    for uri in (f"runs:/{'f' * 32}/hf_model", f"runs:/{run_id}/hf_model", "models:/nope/1"):
        cfg = compose(tiny_overrides(tmp_path, f"model.init={uri}"))
        with pytest.raises(UserError, match="does not exist"):
            resolve_init(cfg)
    assert not (tmp_path / "cache").exists()  # nothing downloaded, nothing half-written
    runs = tracker.client.search_runs([tracker.experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]


def test_checkpoint_without_lm_head_gets_a_fresh_one(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A bare encoder (BertModel, as sentence-transformers ship them) loads as a masked LM."""
    import logging

    from transformers import BertConfig, BertModel

    from modules.models.factory import load_lm

    BertModel(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=32)).save_pretrained(str(tmp_path))
    assert family_of(json.loads((tmp_path / "config.json").read_text())) == "masked"
    with caplog.at_level(logging.WARNING, logger="transferlab"):
        model = load_lm(tmp_path, "masked")
    assert type(model).__name__ == "BertForMaskedLM"
    assert any("start fresh (a new LM head)" in r.message for r in caplog.records)


def test_block_size_beyond_the_checkpoints_positions_fails(tmp_path: Path, gpt2_dir: Path) -> None:
    cfg = compose(tiny_overrides(tmp_path, f"model.init={gpt2_dir}", "model.max_positions=512",
                                 "pretrain.block_size=128"))
    with pytest.raises(UserError, match=r"pretrain.block_size.*64 positions"):
        resolve_init(cfg)
