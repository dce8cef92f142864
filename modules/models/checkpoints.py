"""What a local Hugging Face checkpoint directory is: its family, sizes, positions and content.

Pure functions on a directory with ``config.json`` (+ safetensors weights), such as
``pipelines.checkpoint_refs`` leaves once it has resolved and safety-checked a reference.
transformers is imported only inside the functions that need it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from modules.data.errors import DataError

log = logging.getLogger("transferlab")


class CheckpointError(DataError):
    """A checkpoint transferlab cannot use as it is (user input: exit 2)."""


def read_config(path: str | Path) -> dict[str, Any]:
    """The checkpoint's ``config.json`` as a dict."""
    return json.loads((Path(path) / "config.json").read_text())


def family_of(config: dict[str, Any], init: str = "") -> str:
    """causal | masked | seq2seq, from ``architectures`` (the head it was saved with), else
    from what transformers offers for its ``model_type`` (a bare encoder like BertModel -> masked)."""
    for arch in config.get("architectures") or []:
        if arch.endswith(("ForCausalLM", "LMHeadModel")):
            return "causal"
        if arch.endswith(("ForMaskedLM", "ForPreTraining")):
            return "masked"
        if arch.endswith("ForConditionalGeneration") or config.get("is_encoder_decoder"):
            return "seq2seq"
    # Only now transformers (seconds to import; a cached rerun's checkpoints name their head).
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
    )

    model_type = config["model_type"]
    if config.get("is_encoder_decoder") or model_type in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
        return "seq2seq"
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "masked"
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "causal"
    raise CheckpointError(f"model.init={init!r}: cannot tell whether model_type {model_type!r} is a causal, masked "
                          "or seq2seq LM")


def checkpoint_family(path: str | Path) -> str:
    """:func:`family_of` the checkpoint directory at ``path``."""
    return family_of(read_config(path), str(path))


def size_keys(path: str | Path, trust_remote_code: bool) -> dict[str, Any]:
    """Size keys as the checkpoint has them (they feed MFU and the block-size checks)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    out: dict[str, Any] = {}
    for key, attr in (("n_layer", "num_hidden_layers"), ("n_embd", "hidden_size"), ("n_head", "num_attention_heads"),
                      ("max_positions", "max_position_embeddings")):
        value = getattr(config, attr, None)
        if isinstance(value, int):
            out[key] = value
    inner = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None)
    if isinstance(inner, int):
        out["n_inner"] = inner
    return out


def max_positions(path: str | Path) -> int | None:
    """The longest input the checkpoint has position embeddings for (None: it does not say)."""
    config = read_config(path)
    return config.get("max_position_embeddings") or config.get("n_positions")


def clamp_max_length(max_length: int, path: str | Path, name: str) -> int:
    """``finetune.max_length`` cut to the checkpoint's positions: a longer input has no
    position embedding to look up. ``name`` labels the log line (e.g. ``checkpoint:org/model``)."""
    positions = max_positions(path)
    if positions and max_length > positions:
        log.info("finetune[%s]: max_length %d -> %d (the checkpoint's positions)", name, max_length, positions)
        return positions
    return max_length


@lru_cache(maxsize=16)
def _digest(path: str, signature: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    for name, _, _ in signature:
        h.update(name.encode())
        with open(Path(path) / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def content_digest(path: str | Path) -> str:
    """sha256 over config.json and the safetensors files: what the weights *are*, not where they
    came from (an alias can move; a local dir can be overwritten). Memoised on the files' sizes
    and mtimes, so a fingerprint computed in several places hashes the weights once."""
    path = Path(path)
    files = sorted([path / "config.json", *path.glob("*.safetensors")])
    signature = tuple((f.name, (st := os.stat(f)).st_size, st.st_mtime_ns) for f in files)
    return _digest(str(path), signature)
