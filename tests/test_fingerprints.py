"""Cache fingerprints are a compatibility contract: golden values.

Every cache entry under ``$TRANSFERLAB_HOME/cache/<stage>/<fingerprint>`` is found again only
if the same config hashes to the same fingerprint. A refactor of how the config is carried
(plain dicts -> typed dataclasses) or of how a fingerprint payload is assembled must not
change a single value, or every user's existing cache silently stops being reused. So these
values are fixed here on purpose (golden values for cache compatibility, computed before the
typed-config refactor). Change them only together with a deliberate cache invalidation
(``STAGE_VERSIONS`` in pipelines/cache/store.py), never to make a refactor pass.

The installed package version is part of every fingerprint (an upgrade invalidates caches on
purpose); it is pinned here so the values test the payload, not the release number. Data
files and the checkpoint live at fixed paths because a local path is part of the data config;
the variants start from the shipped defaults (conf/), not the tests' shrunk config.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

FIXED = Path("/tmp/transferlab-golden-fingerprints")
CORPUS = FIXED / "corpus.txt"
CHECKPOINT = FIXED / "gpt2-checkpoint"

VARIANTS: dict[str, list[str]] = {
    "default": [],
    "bert": ["model=bert_tiny"],
    "bart": ["model=bart_tiny"],
    "linear_probe": ["finetune.strategy=linear_probe", "seed=3"],
    "local_text": ["data=local_text", f"data.path={CORPUS}", "trainer.devices=2", "trainer.strategy=ddp"],
    "zero_shot": ["finetune.inits=[pretrained,zero_shot]", "finetune.zero_shot_normalize=true"],
    # Added with finetune.search_trials (the other variants show search off changes nothing).
    "lr_search": ["finetune.search_trials=4"],
    # Added with finetune.group_by_length: false is the batching before the key existed, so the
    # shipped default's fine-tunes keep their earlier fingerprints (old cache entries stay valid).
    "shuffled": ["finetune.group_by_length=false"],
    "checkpoint": [f"model.init={CHECKPOINT}", "pretrain.max_steps=0",
                   f"finetune.inits=[pretrained,scratch,{CHECKPOINT}]"],
}

# Values marked finetune.group_by_length=true changed deliberately with that key (default true:
# length-grouped batches train on other batches, another computation); "shuffled" keeps the old ones.
GOLDEN: dict[str, dict[str, str]] = {
    "bart": {
        "lm": "31f5979c009ff550",
        "prep": "7d07be22e1a14aed",
        "pretrain": "95864600ea46d8f9",
        "finetune[pretrained]": "4bdfaa043ea35961",  # finetune.group_by_length=true
        "finetune[scratch]": "35b42b0f14f53472",  # finetune.group_by_length=true
        "finetune[tfidf]": "ad10005e02d88d18",  # added with init=tfidf (a default init since issue 13)
    },
    "bert": {
        "lm": "d1f744a4a62a8bf4",
        "prep": "ff5f890dd4d4a5c7",
        "pretrain": "55a48a3ce4850208",
        "finetune[pretrained]": "2c2e836c5e446273",  # finetune.group_by_length=true
        "finetune[scratch]": "0b789906499374e5",  # finetune.group_by_length=true
        "finetune[tfidf]": "eac9b20c36ff9cb4",  # added with init=tfidf (a default init since issue 13)
    },
    "checkpoint": {
        "lm": "c9d04645da023340",
        "prep": "3f0adc2fb21bdede",
        "pretrain": "721152eaa3bcdcab",
        "finetune[pretrained]": "e9f0a005b30ac588",  # finetune.group_by_length=true
        "finetune[scratch]": "d6b7c98a2f84bcc1",  # finetune.group_by_length=true
        "finetune[checkpoint]": "978e9f539029d151",  # finetune.group_by_length=true
    },
    "default": {
        "lm": "f0d8e7b25c0d12ee",
        "prep": "0bddf222d0213566",
        "pretrain": "35dc388801417e06",
        "finetune[pretrained]": "edf361b5b3309d8f",  # finetune.group_by_length=true
        "finetune[scratch]": "ff4f8693c529f6b7",  # finetune.group_by_length=true
        "finetune[tfidf]": "1e737aeb5a578589",  # added with init=tfidf (a default init since issue 13)
    },
    "lr_search": {
        "lm": "f0d8e7b25c0d12ee",
        "prep": "0bddf222d0213566",
        "pretrain": "35dc388801417e06",
        "finetune[pretrained]": "743e215b461d803a",  # finetune.group_by_length=true
        "finetune[scratch]": "54af3055e0dded1b",  # finetune.group_by_length=true
        "finetune[tfidf]": "1e737aeb5a578589",  # as in "default": tfidf has no learning rate to search
    },
    "linear_probe": {
        "lm": "f0d8e7b25c0d12ee",
        "prep": "0bddf222d0213566",
        "pretrain": "cad1b35ba2c1bc22",
        "finetune[pretrained]": "3954d758bc338269",  # finetune.group_by_length=true
        "finetune[scratch]": "774de7ebff3cec42",  # finetune.group_by_length=true
        "finetune[tfidf]": "1d9603cec7cf5dd7",  # added with init=tfidf (a default init since issue 13)
    },
    "local_text": {
        "lm": "c8f9264f3525ad1a",
        "prep": "068a359c81737096",
        "pretrain": "32b1acf3163f72c9",
        "finetune[pretrained]": "b20717c69453c8cb",  # finetune.group_by_length=true
        "finetune[scratch]": "4be273686fe9bbc2",  # finetune.group_by_length=true
        "finetune[tfidf]": "43edd81e41e92f11",  # added with init=tfidf (a default init since issue 13)
    },
    "shuffled": {  # the values "default" had before finetune.group_by_length
        "lm": "f0d8e7b25c0d12ee",
        "prep": "0bddf222d0213566",
        "pretrain": "35dc388801417e06",
        "finetune[pretrained]": "8a6d0c89807eeb9a",
        "finetune[scratch]": "4d6a374936347681",
        "finetune[tfidf]": "1e737aeb5a578589",
    },
    "zero_shot": {
        "lm": "f0d8e7b25c0d12ee",
        "prep": "0bddf222d0213566",
        "pretrain": "35dc388801417e06",
        "finetune[pretrained]": "edf361b5b3309d8f",  # finetune.group_by_length=true
        "finetune[zero_shot]": "72de7618b047245b",
    },
}


def _write_inputs() -> None:
    """The fixed input files (same bytes every time; written only when missing or different)."""
    files = {
        CORPUS: "".join(f"document {i} about topic {i % 3} with some words\n" for i in range(40)),
        CHECKPOINT / "config.json": json.dumps({
            "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": 2, "n_embd": 32, "n_head": 2,
            "n_inner": 64, "n_positions": 128, "vocab_size": 300, "bos_token_id": 0,
            "eos_token_id": 0}, sort_keys=True),
        CHECKPOINT / "model.safetensors": "not real weights: only the bytes are hashed",
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text() != text:
            tmp = path.with_suffix(f".tmp{id(text)}")
            tmp.write_text(text)
            tmp.replace(path)


def fingerprints(overrides: list[str], home: Path) -> dict[str, str]:
    """Every stage fingerprint one config leads to."""
    from pipelines.checkpoint_refs import resolve_init
    from pipelines.config.compose import compose
    from pipelines.stages.finetune import _source, finetune_fingerprint
    from pipelines.stages.prep import lm_fingerprint, prep_fingerprint
    from pipelines.stages.pretrain import pretrain_fingerprint

    cfg = resolve_init(compose([f"paths.home={home}", *overrides]))
    lm_fp = lm_fingerprint(cfg)
    prep_fp = prep_fingerprint(cfg, lm_fp)
    pretrain_fp = pretrain_fingerprint(cfg, prep_fp)
    out = {"lm": lm_fp, "prep": prep_fp, "pretrain": pretrain_fp}
    # Stand-ins for the typed records: the fingerprints read only these fields.
    prep_record: Any = SimpleNamespace(fingerprint=prep_fp)
    pretrain_record: Any = SimpleNamespace(fingerprint=pretrain_fp, hf_model=str(home / "unused"))
    for init in cfg.finetune.inits:
        _, identity = _source(cfg, pretrain_record, init)
        out[f"finetune[{'checkpoint' if init == str(CHECKPOINT) else init}]"] = finetune_fingerprint(
            cfg, prep_record, identity, init)
    return out


@pytest.fixture
def pinned_version(monkeypatch: pytest.MonkeyPatch) -> None:
    import pipelines.cache.store as store

    monkeypatch.setattr(store, "code_version", lambda: "0.0.0-golden")
    _write_inputs()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_fingerprints_match_the_golden_values(variant: str, tmp_path: Path, pinned_version: None) -> None:
    assert fingerprints(VARIANTS[variant], tmp_path) == GOLDEN[variant]


if __name__ == "__main__":  # how GOLDEN was computed: run at commit f2c80af, before the typed-config refactor
    import tempfile

    import pipelines.cache.store as store

    store.code_version = lambda: "0.0.0-golden"  # type: ignore[assignment]
    _write_inputs()
    with tempfile.TemporaryDirectory() as home:
        print(json.dumps({name: fingerprints(ov, Path(home)) for name, ov in sorted(VARIANTS.items())}, indent=4))
