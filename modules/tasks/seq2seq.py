"""Sequence-to-sequence (summarisation / translation style): a target text per source text.

Two families serve it (``TASK_FAMILIES``): an encoder-decoder (BART) reads the source and
decodes the target; a decoder-only LM (GPT-2) reads ``source <eos>`` as a prompt and
continues it with ``target <eos>``. The separator is the tokenizer's EOS: it is the one
token every causal tokenizer here has, pretraining already put it between documents (so
"what follows is new text" is a learned meaning), and generation stops at the next EOS.

Metrics (``score``), all in [0, 1]: chrF and BLEU from sacrebleu's corpus scores divided
by 100 (sacrebleu reports 0-100), and exact match of the stripped strings. chrF is the
headline: character n-grams give partial credit to near-miss words and are stable on
short targets, where BLEU's 4-gram precision is often zero.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.config import FinetuneConfig, required
from modules.data.errors import DataError
from modules.tasks.base import Task

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from modules.data.datamodules import FineTuneData
    from modules.training.finetune_module import FineTuneModule

# Freeze strategies other than full would train only the LM head, which GPT-2 and BART tie
# to the input embeddings: "freeze the body, train the head" has no meaning there. lora
# trains adapters inside the body and needs no separate head.
SEQ2SEQ_STRATEGIES = ("full", "lora")


def check_strategy(strategy: str) -> None:
    if strategy not in SEQ2SEQ_STRATEGIES:
        from modules.models.freeze import StrategyError

        raise StrategyError(f"finetune.strategy={strategy} is not defined for finetune.task=seq2seq (its LM head "
                            "is tied to the input embeddings, so there is no separate head to train); "
                            "use finetune.strategy=full or lora")


def tokenize_pairs(ds: Dataset, tokenizer: PreTrainedTokenizerBase, family: str, max_length: int,
                   max_target_length: int) -> Dataset:
    """(source, target) rows -> ``input_ids``, ``labels`` and (causal) ``prompt_length``.

    causal: ``input_ids = source <eos> target <eos>`` within ``max_length`` tokens: the
    target keeps at most ``max_target_length`` tokens including its EOS, the source what
    is left; ``labels`` are -100 on the prompt (source and separator), the ids elsewhere;
    ``prompt_length`` is where generation starts. seq2seq: ``input_ids`` = the source as
    the tokenizer frames it (``<s> … </s>``, ``max_length``), ``labels`` = the target the
    same way (``max_target_length``), each ending in EOS.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DataError("finetune.task=seq2seq needs a tokenizer with an EOS token (to end targets)")
    if family == "causal":
        budget = max_length - max_target_length
        if budget < 2:
            raise DataError(f"finetune.max_length={max_length} leaves no room for the source after "
                            f"finetune.max_target_length={max_target_length} (causal LMs read both in one sequence)")

        def causal(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
            src = tokenizer(batch["source"], add_special_tokens=False)["input_ids"]
            tgt = tokenizer(batch["target"], add_special_tokens=False)["input_ids"]
            out: dict[str, list[Any]] = {"input_ids": [], "labels": [], "prompt_length": []}
            for s, t in zip(src, tgt, strict=True):
                prompt = s[: budget - 1] + [eos]
                target = t[: max_target_length - 1] + [eos]
                out["input_ids"].append(prompt + target)
                out["labels"].append([-100] * len(prompt) + target)
                out["prompt_length"].append(len(prompt))
            return out

        return ds.map(causal, batched=True, remove_columns=ds.column_names, desc="tokenize pairs")
    if family != "seq2seq":
        raise DataError(f"finetune.task=seq2seq needs a causal or seq2seq model, not a {family} one")

    def ends_in_eos(ids: list[int], limit: int) -> list[int]:
        return ids if ids and ids[-1] == eos else ids[: limit - 1] + [eos]

    def encdec(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        src = tokenizer(batch["source"], truncation=True, max_length=max_length)["input_ids"]
        tgt = tokenizer(batch["target"], truncation=True, max_length=max_target_length)["input_ids"]
        return {"input_ids": [ends_in_eos(s, max_length) for s in src],
                "labels": [ends_in_eos(t, max_target_length) for t in tgt]}

    return ds.map(encdec, batched=True, remove_columns=ds.column_names, desc="tokenize pairs")


class Seq2Seq(Task):
    name = "seq2seq"
    report_columns = (("chrf", "chrF"), ("bleu", "BLEU"), ("exact_match", "exact match"))
    predictions_file = "predictions.jsonl"

    def to_dataset(self, rows: Sequence[Any], label_names: list[str]) -> Dataset:
        from datasets import Dataset, Features, Value

        features = Features({"source": Value("string"), "target": Value("string")})
        return Dataset.from_dict({"source": [s for s, _ in rows], "target": [t for _, t in rows]}, features=features)

    def label_names(self, ds: Dataset) -> list[str]:
        return []

    def corpus_texts(self, rows: Sequence[Any]) -> list[str]:
        # Both sides: the LM should know the target language as well as the source's.
        return [s for s, _ in rows] + [t for _, t in rows]

    def inputs(self, ds: Dataset) -> list[str]:
        return list(ds["source"])

    def subset(self, pool: Dataset, n: int, seed: int) -> list[int]:
        """A seeded random sample (no classes to stratify), in pool order."""
        if len(pool) == 0:
            raise DataError("finetune.task=seq2seq: the labeled train split has no pairs")
        if n >= len(pool):
            return list(range(len(pool)))
        return sorted(random.Random(seed).sample(range(len(pool)), n))

    def tokenize(self, ds: Dataset, tokenizer: PreTrainedTokenizerBase, family: str, max_length: int,
                 finetune_cfg: FinetuneConfig) -> Dataset:
        check_strategy(finetune_cfg.strategy)  # before any model is built
        return tokenize_pairs(ds, tokenizer, family, max_length, finetune_cfg.max_target_length)

    def build_model(self, source: str | Path, weights: str, family: str, label_names: list[str],
                    dropout: float | None, trust_remote_code: bool) -> PreTrainedModel:
        """The family's LM (GPT-2 or BART with its LM head): the same network pretraining
        trained, so weights=pretrained starts from every pretrained weight, head included."""
        from modules.models.factory import LM_AUTO, build_with_head

        return build_with_head(LM_AUTO[family], source, weights, dropout, trust_remote_code)

    def datamodule(self, splits: dict[str, Dataset], tokenizer: PreTrainedTokenizerBase, family: str,
                   batch_size: int, eval_batch_size: int, group_by_length: bool = False) -> FineTuneData:
        from modules.training.seq2seq import PairData

        return PairData(splits, tokenizer, family, batch_size, eval_batch_size, group_by_length=group_by_length)

    def lightning_module(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, family: str,
                         label_names: list[str], finetune_cfg: FinetuneConfig) -> FineTuneModule:
        from modules.training.seq2seq import TextToText

        check_strategy(finetune_cfg.strategy)
        return TextToText(model, tokenizer, family, required(finetune_cfg.lr, "finetune.lr"), finetune_cfg.weight_decay,
                          finetune_cfg.warmup_ratio, finetune_cfg.max_target_length, finetune_cfg.num_beams)

    def prediction_rows(self, test: Dataset, outputs: list[Any], label_names: list[str]) -> list[dict[str, Any]]:
        return [{"index": i, "source": s, "reference": t, "prediction": p}
                for i, (s, t, p) in enumerate(zip(test["source"], test["target"], outputs, strict=True))]

    def save_predictions(self, path: Path, rows: list[dict[str, Any]]) -> None:
        with open(path, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps({k: r[k] for k in ("index", "source", "reference", "prediction")},
                                   ensure_ascii=False) + "\n")

    def load_predictions(self, path: Path) -> list[dict[str, Any]]:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def score(self, rows: list[dict[str, Any]], label_names: list[str]) -> dict[str, float]:
        """chrF, BLEU (sacrebleu corpus scores / 100) and exact match, all in [0, 1]."""
        import sacrebleu

        if not rows:
            return {"chrf": 0.0, "bleu": 0.0, "exact_match": 0.0}
        preds = [str(r["prediction"]) for r in rows]
        refs = [str(r["reference"]) for r in rows]
        return {
            "chrf": sacrebleu.corpus_chrf(preds, [refs]).score / 100,
            "bleu": sacrebleu.corpus_bleu(preds, [refs]).score / 100,
            "exact_match": sum(p.strip() == r.strip() for p, r in zip(preds, refs, strict=True)) / len(rows),
        }


TASK = Seq2Seq()
