"""Validation perplexity of an exported language model."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from datasets import load_from_disk
from torch.utils.data import DataLoader
from transformers import AutoTokenizer

from modules.data.datamodules import lm_collator
from modules.models.factory import load_lm_checked


@torch.inference_mode()
def lm_perplexity(model_dir: str | Path, dataset_dir: str | Path, family: str, batch_size: int = 64,
                  max_batches: int | None = None, mlm_probability: float = 0.15, seed: int = 0,
                  mask_ratio: float = 0.3, poisson_lambda: float = 3.0,
                  trust_remote_code: bool = False) -> dict[str, float | None]:
    """Token-weighted mean loss and perplexity over the LM validation split.

    What the number means depends on the family's objective: causal, next-token
    perplexity; masked, perplexity of the masked tokens given the rest (a pseudo-
    perplexity); seq2seq, perplexity of the decoder reconstructing the whole original
    block from its text-infilled corruption (about 70% of the tokens are visible to the
    encoder, so it is far lower than a causal perplexity and not comparable with it).

    Loads the HF export (not the Lightning checkpoint), so this also proves the export is
    usable by downstream code. An export without LM-head weights (a sentence encoder passed
    through with ``pretrain.max_steps=0``) would be scored with a random head: its loss and
    perplexity are None instead.
    """
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model, missing = load_lm_checked(model_dir, family, trust_remote_code)
    if missing:
        return {"loss": None, "perplexity": None, "tokens": 0.0}
    model.eval()
    ds = load_from_disk(str(dataset_dir))["validation"].with_format("python")
    collator = lm_collator(tokenizer, family, mlm_probability, mask_ratio, poisson_lambda, seed=seed)
    total, count = 0.0, 0
    for i, batch in enumerate(DataLoader(ds, batch_size=batch_size, collate_fn=collator)):
        if max_batches is not None and i >= max_batches:
            break
        loss = model(**batch).loss
        # Causal LM loss averages over T-1 shifted positions per row; MLM over masked ones;
        # seq2seq over every label token (the decoder predicts the whole block).
        n = int((batch["labels"][:, 1:] != -100).sum()) if family == "causal" else int((batch["labels"] != -100).sum())
        total += float(loss) * n
        count += n
    mean = total / max(count, 1)
    return {"loss": mean, "perplexity": math.exp(min(mean, 50.0)), "tokens": float(count)}
