"""Zero-shot classification by prompt scoring with a causal LM (as GPT-3 is evaluated).

No training: each label gets a verbalisation (a word or phrase, e.g. ``" sports"``), and a
text is assigned the label whose verbalisation the LM finds most likely as the
continuation of a prompt built from the text (``prompt.format(text=...)``):

    score(text, label) = sum_t log p(v_t | prompt, v_<t)      (v = the label's tokens)

optionally divided by the number of label tokens (``normalize=True``), so that a
multi-token label is not penalised just for being long. The predicted class is the argmax.

Every (text, label) pair is one sequence ``[start] + prompt + verbalisation``; pairs are
right-padded into batches and scored in one forward pass each. ``start`` is the
tokenizer's BOS (else EOS) token: this pipeline's causal LMs were pretrained on documents
separated by EOS, so a text following one is exactly the "start of a document" they know.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from modules.models.factory import load_lm

DEFAULT_TEMPLATE = "{text}\nLabel:"


@dataclass
class ZeroShotResult:
    scores: list[list[float]]  # [n_texts][n_labels]: summed (or mean) label log-likelihoods
    predictions: list[int]  # argmax over labels, per text
    label_tokens: list[int]  # tokens per verbalisation, in label order


def verbalize(label_names: Sequence[str], verbalizers: Sequence[str] | None) -> list[str]:
    """The continuation scored for each label: the given list, else ``" " + name`` (the
    leading space makes a BPE tokenizer see the label as a new word after the prompt)."""
    if verbalizers is None:
        return [f" {name}" for name in label_names]
    if len(verbalizers) != len(label_names):
        raise ValueError(f"{len(verbalizers)} verbalizers for {len(label_names)} labels "
                         f"({', '.join(label_names)}); give one per label, in label-id order")
    return [str(v) for v in verbalizers]


def _start_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return [] if start is None else [start]


@torch.no_grad()
def zero_shot_classify(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    verbalizers: Sequence[str],
    template: str = DEFAULT_TEMPLATE,
    normalize: bool = False,
    batch_size: int = 32,
    max_length: int | None = None,
) -> ZeroShotResult:
    """Score every verbalisation after every prompt; see the module docstring.

    ``max_length`` caps a sequence (default: the model's context size); a long prompt loses
    its *beginning*, so the template's tail ("Label:") stays next to the label.
    """
    if "{text}" not in template:
        raise ValueError(f"zero-shot template {template!r} has no '{{text}}' placeholder")
    label_ids = [tokenizer(v, add_special_tokens=False)["input_ids"] for v in verbalizers]
    empty = [v for v, ids in zip(verbalizers, label_ids, strict=True) if not ids]
    if empty:
        raise ValueError(f"zero-shot verbalizer {empty[0]!r} tokenizes to nothing")
    limit = max_length or getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
    start = _start_ids(tokenizer)
    longest_label = max(len(ids) for ids in label_ids)

    # One sequence per (text, label) pair, and where in it the label's tokens sit.
    seqs: list[list[int]] = []
    spans: list[tuple[int, int]] = []  # [first label position, end) within the sequence
    for text in texts:
        prompt = tokenizer(template.format(text=text), add_special_tokens=False)["input_ids"]
        prompt = (start + prompt)[-(limit - longest_label):]
        if not prompt:
            raise ValueError("zero-shot prompt is empty and the tokenizer has no BOS/EOS to condition on")
        for ids in label_ids:
            seqs.append(prompt + ids)
            spans.append((len(prompt), len(prompt) + len(ids)))

    model.eval()
    device = next(model.parameters()).device
    pair_scores: list[float] = []
    for lo in range(0, len(seqs), batch_size):
        batch, batch_spans = seqs[lo : lo + batch_size], spans[lo : lo + batch_size]
        width = max(len(s) for s in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)  # [B, T], right-padded
        attention = torch.zeros(len(batch), width, dtype=torch.long)  # [B, T]
        target = torch.zeros(len(batch), width, dtype=torch.bool)  # [B, T]: label token positions
        for i, (seq, (a, b)) in enumerate(zip(batch, batch_spans, strict=True)):
            ids[i, : len(seq)] = torch.tensor(seq)
            attention[i, : len(seq)] = 1
            target[i, a:b] = True
        logits = model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits  # [B, T, V]
        # Position t predicts token t+1, so the label tokens ids[:, 1:][mask] are scored by
        # logits[:, :-1][mask]; the softmax runs over those M rows only, not all B*T.
        mask = target[:, 1:].to(device)  # [B, T-1]: the label's tokens (never position 0: prompt is non-empty)
        picked = logits[:, :-1][mask].float().log_softmax(-1)  # [M, V]
        token_lp = picked.gather(-1, ids[:, 1:].to(device)[mask][:, None]).squeeze(-1)  # [M]
        rows = torch.arange(len(batch), device=device)[:, None].expand_as(mask)[mask]  # [M]: row of each token
        summed = torch.zeros(len(batch), device=device).index_add_(0, rows, token_lp)  # [B]
        if normalize:
            summed = summed / mask.sum(-1)
        pair_scores.extend(summed.cpu().tolist())

    n_labels = len(verbalizers)
    scores = [pair_scores[i : i + n_labels] for i in range(0, len(pair_scores), n_labels)]  # [N][L]
    predictions = [max(range(n_labels), key=row.__getitem__) for row in scores]
    return ZeroShotResult(scores, predictions, [len(ids) for ids in label_ids])


@dataclass
class ZeroShotTest:
    rows: list[dict[str, Any]]  # one per test text: index, text, label, prediction (the classification task's rows)
    metrics: dict[str, float]  # test/accuracy, test/f1_macro, test/f1/<class>: the classification task's score
    verbalizers: list[str]


def zero_shot_test(prep_dir: str | Path, source_model: str | Path, template: str, verbalizers: Sequence[str] | None,
                   normalize: bool, batch_size: int, trust_remote_code: bool = False) -> ZeroShotTest:
    """Zero-shot predictions on the prep's labeled test split (its raw ``text`` column)
    from the causal LM exported at ``source_model``, as prediction rows and scored like a
    fine-tuned classifier's (``modules.tasks.classification``), so the report compares alike."""
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    from modules.tasks.classification import TASK

    test = load_from_disk(str(Path(prep_dir) / "labeled"))["test"]
    names = test.features["label"].names
    words = verbalize(names, verbalizers)
    tokenizer = AutoTokenizer.from_pretrained(str(source_model))
    model = load_lm(source_model, "causal", trust_remote_code)
    result = zero_shot_classify(model, tokenizer, test["text"], words, template, normalize, batch_size)
    rows = [{"index": i, "text": t, "label": y, "prediction": p}
            for i, (t, y, p) in enumerate(zip(test["text"], test["label"], result.predictions, strict=True))]
    metrics = {f"test/{k}": v for k, v in TASK.score(rows, names).items()}
    return ZeroShotTest(rows, metrics, words)
