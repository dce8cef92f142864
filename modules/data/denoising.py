"""BART text infilling (Lewis et al. 2020, section 2.2) as a DataLoader collator.

transformers 5.23 ships collators for causal/masked LM, permutation LM and seq2seq
padding, but none that corrupts text for BART-style denoising (the Flax example script
``run_bart_dlm_flax.py`` has one, outside the library), so it lives here.

Per example (a packed block of T tokens):

1. ``m = round(mask_ratio * T)`` tokens are to be masked.
2. Span lengths are drawn from Poisson(``poisson_lambda``) until they sum to at least ``m``;
   the last one is cut so they sum to exactly ``m``. Length-0 spans are kept: each one
   *inserts* a mask token (the paper: "a 0-length span corresponds to the insertion of a
   [MASK] token"), so the model must also learn how many tokens a span hides.
3. The spans are placed at random, never touching each other (at least one kept token
   between two spans), so every span becomes exactly ONE mask token and the count of
   masked tokens is exactly ``m``. Stars and bars: the ``T - m`` kept tokens are split
   into ``k + 1`` gaps uniformly at random, inner gaps at least one token wide.
4. Encoder input = the corrupted sequence (shorter than T; right-padded with pad in the
   batch, ``attention_mask`` 0 there). ``labels`` = the original block, -100 on padding.
   The model builds ``decoder_input_ids`` by shifting ``labels`` right
   (``decoder_start_token_id`` first), so nothing else is needed in the batch.

Every token of the block may be masked, special ones (<s>, </s> between documents)
included: blocks are cut from a stream, so their first/last token is not special in
general, and reconstructing a document boundary is part of the task. Unlike fairseq's
implementation there is no random-token replacement and no sentence permutation (the
paper's best configuration, "text infilling" alone, is what is reproduced here).

Randomness: with ``seed`` set, each batch's corruption is a pure function of ``seed`` and
the batch's tokens, so a validation pass is identical at every check, in every worker
process and after a resume. Without a seed the per-batch seed is drawn from torch's global
generator, which Lightning's ``seed_everything(workers=True)`` seeds per worker, so
training is reproducible under a fixed global seed as with the transformers collators.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def infill_spans(n: int, mask_ratio: float, poisson_lambda: float, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Non-touching spans ``(start, length)`` over a sequence of ``n`` tokens, ordered by
    start; lengths sum to ``round(mask_ratio * n)``; a length-0 span is an insertion
    before ``start``."""
    m = int(round(mask_ratio * n))
    if m <= 0:
        return []
    lengths: list[int] = []
    total = 0
    while total < m:
        draw = rng.poisson(poisson_lambda, size=max(4, int(2 * m / max(poisson_lambda, 1e-3))))
        for x in draw:
            lengths.append(int(x))
            total += int(x)
            if total >= m:
                break
    lengths[-1] -= total - m  # now sum(lengths) == m
    rng.shuffle(lengths)  # the cut span and the insertions are not always last
    kept = n - m
    # k spans need k - 1 separating kept tokens; drop insertions, then spans, until they fit.
    while len(lengths) - 1 > kept:
        zero = next((i for i, x in enumerate(lengths) if x == 0), None)
        if zero is not None:
            lengths.pop(zero)
        else:  # only possible for mask_ratio close to 1: merge two spans into one
            lengths[-2] += lengths.pop()
    k = len(lengths)
    free = kept - (k - 1)  # kept tokens left after one between every two spans
    # Stars and bars: k cut points in [0, free] give k + 1 gaps that sum to `free`.
    cuts = np.sort(rng.integers(0, free + 1, size=k))
    gaps = np.diff(np.concatenate([[0], cuts]))  # (k,) the gap before each span
    spans: list[tuple[int, int]] = []
    pos = 0
    for i, (gap, length) in enumerate(zip(gaps.tolist(), lengths, strict=True)):
        pos += gap + (1 if i > 0 else 0)
        spans.append((pos, length))
        pos += length
    return spans


def infill(ids: Sequence[int], spans: list[tuple[int, int]], mask_id: int) -> list[int]:
    """``ids`` with every span replaced by one ``mask_id`` (length 0: inserted)."""
    out: list[int] = []
    pos = 0
    for start, length in spans:
        out.extend(ids[pos:start])
        out.append(mask_id)
        pos = start + length
    out.extend(ids[pos:])
    return out


class DataCollatorForTextInfilling:
    """Batches of packed blocks -> BART text-infilling inputs; see the module docstring.

    Returns ``input_ids``/``attention_mask`` (B, S) with S = the longest corrupted
    example, and ``labels`` (B, T) = the original blocks, -100 where padded.
    """

    def __init__(self, tokenizer: Any, mask_ratio: float = 0.3, poisson_lambda: float = 3.0,
                 seed: int | None = None) -> None:
        if tokenizer.mask_token_id is None or tokenizer.pad_token_id is None:
            raise ValueError("text infilling needs a tokenizer with a mask and a pad token")
        if not 0.0 <= mask_ratio < 1.0 or poisson_lambda <= 0:
            raise ValueError(f"need 0 <= mask_ratio < 1 and poisson_lambda > 0 (got {mask_ratio}, {poisson_lambda})")
        self.mask_id, self.pad_id = int(tokenizer.mask_token_id), int(tokenizer.pad_token_id)
        self.mask_ratio, self.poisson_lambda, self.seed = mask_ratio, poisson_lambda, seed

    def _rng(self, examples: list[list[int]]) -> np.random.Generator:
        if self.seed is None:
            return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        digest = zlib.crc32(np.asarray([t for ids in examples for t in ids] or [0], dtype=np.int64).tobytes())
        return np.random.default_rng([self.seed, digest])

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        originals = [list(map(int, f["input_ids"])) for f in features]
        rng = self._rng(originals)
        corrupted = [infill(ids, infill_spans(len(ids), self.mask_ratio, self.poisson_lambda, rng), self.mask_id)
                     for ids in originals]
        b, s, t = len(originals), max(map(len, corrupted)), max(map(len, originals))
        input_ids = torch.full((b, s), self.pad_id, dtype=torch.long)  # (B, S)
        attention_mask = torch.zeros((b, s), dtype=torch.long)  # (B, S)
        labels = torch.full((b, t), -100, dtype=torch.long)  # (B, T)
        for i, (src, tgt) in enumerate(zip(corrupted, originals, strict=True)):
            input_ids[i, : len(src)] = torch.tensor(src)
            attention_mask[i, : len(src)] = 1
            labels[i, : len(tgt)] = torch.tensor(tgt)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
