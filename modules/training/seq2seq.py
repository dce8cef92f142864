"""Text-to-text fine-tuning: batching and the LightningModule, for both LM families.

* causal (GPT-2): one sequence ``source <eos> target <eos>``; the loss covers the target
  and its closing EOS only (labels -100 on the prompt and on padding). Test generation
  continues ``source <eos>``, left-padded so every prompt ends where generation starts.
* seq2seq (BART): the encoder reads the source, the decoder is trained on the target
  (labels; transformers shifts them right behind ``decoder_start_token_id``), and test
  generation decodes from the encoder input.

Validation is teacher-forced (``val/loss``, which early stopping monitors); only the
test split is generated, greedily unless ``finetune.num_beams > 1``.
"""

from __future__ import annotations

from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from modules.data.datamodules import FineTuneData
from modules.training.finetune_module import FineTuneModule
from modules.training.optim import adamw_with_schedule

IGNORE = -100  # label id the cross-entropy loss skips


def _pad(rows: list[list[int]], value: int, left: bool = False) -> torch.Tensor:
    """Lists of ids -> a (B, T) tensor, padded with ``value`` on the right (or left)."""
    width = max(len(r) for r in rows)
    return torch.tensor([[value] * (width - len(r)) + r if left else r + [value] * (width - len(r)) for r in rows],
                        dtype=torch.long)


class PairCollator:
    """Pads tokenized pairs into a batch.

    Always: ``input_ids``/``attention_mask`` (right-padded) and ``labels`` (padded with
    -100) for the teacher-forced loss. Causal family also: ``gen_input_ids`` /
    ``gen_attention_mask``, the prompts (``source <eos>``) left-padded for ``generate``.
    """

    def __init__(self, pad_id: int, family: str) -> None:
        self.pad_id, self.family = pad_id, family

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids = [r["input_ids"] for r in rows]
        batch = {
            "input_ids": _pad(ids, self.pad_id),  # (B, T)
            "attention_mask": _pad([[1] * len(x) for x in ids], 0),  # (B, T)
            "labels": _pad([r["labels"] for r in rows], IGNORE),  # (B, T) causal, (B, T_target) seq2seq
        }
        if self.family == "causal":
            prompts = [r["input_ids"][: r["prompt_length"]] for r in rows]
            batch["gen_input_ids"] = _pad(prompts, self.pad_id, left=True)  # (B, P)
            batch["gen_attention_mask"] = _pad([[1] * len(p) for p in prompts], 0, left=True)  # (B, P)
        return batch


class PairData(FineTuneData):
    """Tokenized (source, target) splits; batching as in ``FineTuneData``."""

    COLUMNS = ("input_ids", "labels", "prompt_length")

    def __init__(self, splits: dict[str, Dataset], tokenizer: PreTrainedTokenizerBase, family: str, batch_size: int,
                 eval_batch_size: int = 64, num_workers: int = 0, group_by_length: bool = False) -> None:
        super().__init__({k: v.select_columns([c for c in self.COLUMNS if c in v.column_names])
                          for k, v in splits.items()}, PairCollator(tokenizer.pad_token_id, family), batch_size,
                         eval_batch_size, num_workers, group_by_length)


class TextToText(FineTuneModule):
    """Fine-tunes a causal or seq2seq LM on (source, target) pairs; the test step generates.

    ``test_outputs`` holds the decoded prediction strings in test order, so the caller
    scores exactly what it saves.
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, family: str, lr: float,
                 weight_decay: float, warmup_ratio: float, max_target_length: int, num_beams: int = 1) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model", "tokenizer"], logger=False)
        self.model, self.tokenizer, self.family = model, tokenizer, family
        self.test_outputs: list[str] = []

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          labels=batch["labels"]).loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train/loss", loss, on_step=True, on_epoch=False, batch_size=batch["input_ids"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.log("val/loss", self._loss(batch), on_epoch=True, batch_size=batch["input_ids"].shape[0])

    def on_test_epoch_start(self) -> None:
        self.test_outputs = []

    @torch.no_grad()
    def generate(self, batch: dict[str, torch.Tensor]) -> list[str]:
        """Decoded continuations of a batch, cut at the first EOS."""
        hp = self.hparams
        tok = self.tokenizer
        causal = self.family == "causal"
        inputs = (batch["gen_input_ids"], batch["gen_attention_mask"]) if causal else \
            (batch["input_ids"], batch["attention_mask"])
        # transformers types generate() with a Protocol self-type written for the `ty` checker
        # (transformers._typing.GenerativePreTrainedModel) that mypy cannot match to a model.
        out = self.model.generate(  # type: ignore[operator]
            input_ids=inputs[0], attention_mask=inputs[1], max_new_tokens=hp["max_target_length"],
            num_beams=hp["num_beams"], do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        # causal: (B, P + new) with the prompt first; seq2seq: (B, new) from decoder_start
        new = out[:, inputs[0].shape[1]:] if causal else out[:, 1:]
        texts = []
        for row in new.tolist():
            if tok.eos_token_id in row:
                row = row[: row.index(tok.eos_token_id)]
            text = tok.decode(row, skip_special_tokens=True)
            assert isinstance(text, str)  # one sequence of ids decodes to one string
            texts.append(text.strip())
        return texts

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.log("test/loss", self._loss(batch), on_epoch=True, batch_size=batch["input_ids"].shape[0])
        self.test_outputs.extend(self.generate(batch))

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        total = int(self.trainer.estimated_stepping_batches)
        return adamw_with_schedule(self.model, hp["lr"], hp["weight_decay"], int(hp["warmup_ratio"] * total), total,
                                   "linear")
