"""prep: generate or read data, train the tokenizer, tokenize and pack; cached by fingerprint."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipelines.cache.store import fingerprint
from pipelines.config.schema import TransferLabConfig
from pipelines.stages.cached import CachedStage, CacheEntry, cached_stage
from pipelines.stages.common import StageContext, StageRun
from pipelines.stages.records import PrepRecord

log = logging.getLogger("transferlab")

# MLflow dataset source types: hub data is a Hugging Face source, synthetic data is made by code.
SOURCE_TYPES = {"hub": "hugging_face", "synthetic": "code", "local_text": "local", "local_labeled": "local"}


def lm_fingerprint(cfg: TransferLabConfig) -> str:
    """What the tokenizer and the packed LM blocks depend on: config subset + the content of
    any input files (a path alone says nothing). Pretraining is keyed on this, so switching
    the downstream task of generated data reuses the pretrained model."""
    from modules.data.sources import inputs

    return fingerprint("prep-lm", {
        "data": asdict(cfg.data),
        "data_files": inputs(cfg.data),
        "tokenizer": _tokenizer_identity(cfg),
        "family": cfg.model.family,
        "block_size": cfg.pretrain.block_size,
        # A local labeled file is also the corpus, read the way the task reads it.
        "task": None if cfg.data.source == "synthetic" else cfg.finetune.task,
    })


def prep_fingerprint(cfg: TransferLabConfig, lm_fp: str | None = None) -> str:
    """The LM data (``lm_fp`` if the caller has it already) plus the task's labeled rows."""
    return fingerprint("prep", {"lm": lm_fp or lm_fingerprint(cfg), "task": cfg.finetune.task})


def _tokenizer_identity(cfg: TransferLabConfig) -> dict[str, Any]:
    """The tokenizer config with ``auto`` resolved; for a reused (pretrained) tokenizer, the
    content of its local files too, since a directory's name says nothing of what is in it."""
    from modules.data.files import digest
    from modules.data.tokenizer_kinds import pretrained_tokenizer_path, tokenizer_kind_for

    family, model = cfg.model.family, cfg.model
    kind = tokenizer_kind_for(family, cfg.tokenizer.kind, model.init)
    ident: dict[str, Any] = {**asdict(cfg.tokenizer), "kind": kind}
    if ident["kind"] == "pretrained":
        path = pretrained_tokenizer_path(cfg.tokenizer, model)
        ident["path"] = path
        if Path(path).is_dir():
            files = sorted(p for p in Path(path).iterdir()
                           if p.is_file() and (p.name.startswith(("tokenizer", "special_tokens", "vocab", "merges"))
                                               or p.suffix == ".model"))
            ident["files"] = {p.name: digest(p) for p in files}
    return ident


def _stats_metrics(stats: dict[str, Any]) -> dict[str, float]:
    out = {"data/vocab_size": stats["vocab_size"]}
    for group in ("lm_blocks", "lm_tokens", "labeled_rows", "corpus_documents"):
        for split, n in stats[group].items():
            out[f"data/{group}_{split}"] = n
    return out


def _log_inputs(run: StageRun, stats: dict[str, Any]) -> None:
    """The prepared datasets as MLflow dataset inputs: digest = the data fingerprint."""
    source = stats["sources"] or [f"transferlab:{stats['data_source']}"]
    kind = SOURCE_TYPES.get(stats["data_source"], "local")
    profile = {"documents": stats["corpus_documents"], "blocks": stats["lm_blocks"], "tokens": stats["lm_tokens"]}
    run.tracker.log_input(run.run_id, f"{stats['data_name']}-lm", stats["data_fingerprint"], source, profile,
                          source_type=kind, context="pretrain")
    if stats["has_labels"]:
        profile = {"rows": stats["labeled_rows"], "classes": len(stats["label_names"])}
        run.tracker.log_input(run.run_id, f"{stats['data_name']}-labeled", stats["data_fingerprint"], source,
                              profile, source_type=kind, context="finetune")


def prep(ctx: StageContext) -> PrepRecord:
    cfg = ctx.cfg
    lm_fp = lm_fingerprint(cfg)  # hashes the input files once for both fingerprints

    def build(run: StageRun, out: Path) -> dict[str, Any]:
        from modules.data import prepare  # datasets, tokenizers, transformers: seconds a cache hit does not spend
        from modules.data.sources import data_fingerprint

        stats = prepare.prepare_data(out, cfg.data, cfg.tokenizer, cfg.model.family,
                                     cfg.pretrain.block_size, model_cfg=cfg.model,
                                     task=cfg.finetune.task)
        stats.update(data_name=cfg.data.name, data_source=cfg.data.source,
                     data_fingerprint=data_fingerprint(cfg.data))
        if not stats["has_labels"]:
            log.info("prep: data=%s has no labels; wrote the LM data only (no labeled/)", cfg.data.name)
        (out / "stats.json").write_text(json.dumps(stats, indent=2))
        return {"stats": stats}

    def log_entry(run: StageRun, entry: CacheEntry) -> None:
        stats = entry.record["stats"]
        if not entry.hit:
            run.log_artifact(entry.path / "tokenizer")
            log.info("prep: %d LM blocks of %d tokens, %s labeled rows, vocab %d", stats["lm_blocks"]["train"],
                     cfg.pretrain.block_size, stats["labeled_rows"] or "no", stats["vocab_size"])
        run.log_metrics(_stats_metrics(stats))
        _log_inputs(run, stats)
        run.log_artifact(entry.path / "stats.json")

    def make_record(run: StageRun, entry: CacheEntry) -> PrepRecord:
        stats = entry.record["stats"]
        return PrepRecord(**entry.record_fields(run), label_names=stats["label_names"],
                          has_labels=stats["has_labels"], lm_fingerprint=lm_fp, task=cfg.finetune.task,
                          labeled_rows=stats["labeled_rows"])

    return cached_stage(ctx, CachedStage("prep", prep_fingerprint(cfg, lm_fp), build, make_record, log_entry))
