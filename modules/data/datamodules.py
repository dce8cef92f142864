"""Lightning DataModules over datasets that the prep stage saved to disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from datasets import Dataset, load_from_disk
from torch.utils.data import DataLoader
from transformers import (
    DataCollatorForLanguageModeling,
    DataCollatorWithPadding,
    PreTrainedTokenizerBase,
)

from modules.data.denoising import DataCollatorForTextInfilling


class SeededLanguageModelingCollator(DataCollatorForLanguageModeling):
    """transformers' collator, seeded without its process-name check.

    With a seed, transformers tells "main process" from "DataLoader worker" by the process
    *name* and raises in any other process. A deployed Prefect flow run executes in a spawned
    process (not named MainProcess) with num_workers=0, so the seeded validation collator
    failed there. Here a DataLoader worker still gets seed + worker id, anything else the seed.
    """

    def create_rng(self) -> None:
        import torch

        assert self.seed is not None  # transformers creates the generator only for a seeded collator
        info = torch.utils.data.get_worker_info()
        self.generator = self.get_generator(self.seed + (info.id if info is not None else 0))


def lm_collator(tokenizer: PreTrainedTokenizerBase, family: str, mlm_probability: float = 0.15,
                mask_ratio: float = 0.3, poisson_lambda: float = 3.0, seed: int | None = None):
    """The collator that turns packed blocks into the family's objective: causal LM
    (labels = inputs), masked LM (transformers' collator) or BART text infilling."""
    if family == "seq2seq":
        return DataCollatorForTextInfilling(tokenizer, mask_ratio, poisson_lambda, seed=seed)
    return SeededLanguageModelingCollator(tokenizer, mlm=family == "masked", mlm_probability=mlm_probability,
                                          seed=seed)


class LanguageModelingData(L.LightningDataModule):
    """Packed LM blocks; the collator builds labels for the causal, masked or denoising objective."""

    def __init__(
        self,
        path: str | Path,
        tokenizer: PreTrainedTokenizerBase,
        family: str,
        batch_size: int,
        mlm_probability: float = 0.15,
        seed: int = 0,
        num_workers: int = 0,
        mask_ratio: float = 0.3,
        poisson_lambda: float = 3.0,
    ) -> None:
        super().__init__()
        self.path, self.tokenizer, self.family = Path(path), tokenizer, family
        self.batch_size, self.num_workers = batch_size, num_workers
        objective = (mlm_probability, mask_ratio, poisson_lambda)
        self.train_collator = lm_collator(tokenizer, family, *objective)
        # A seeded collator makes the masked/denoising validation loss comparable between checks.
        self.val_collator = lm_collator(tokenizer, family, *objective, seed=seed)

    def setup(self, stage: str | None = None) -> None:
        self.splits = load_from_disk(str(self.path)).with_format("python")

    def _loader(self, ds: Dataset, collator, shuffle: bool) -> DataLoader:
        return DataLoader(ds, batch_size=self.batch_size, shuffle=shuffle, collate_fn=collator,
                          num_workers=self.num_workers, drop_last=shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.splits["train"], self.train_collator, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.splits["validation"], self.val_collator, shuffle=False)


class FineTuneData(L.LightningDataModule):
    """Tokenized train/validation/test splits and their collator.

    Every batch is padded to its longest row, so on a CPU a batch costs about its row count
    times its longest row. Hence validation and test run longest-first (nearly no padding;
    ``in_row_order`` puts test outputs back in row order for the predictions file), and with
    ``group_by_length`` training batches come from transformers' ``LengthGroupedSampler``:
    shuffled, then sorted by length within mega-batches of up to 50 batches (at most a
    quarter of the rows each), so batches still differ from epoch to epoch.
    """

    def __init__(self, splits: dict[str, Dataset], collator: Any, batch_size: int, eval_batch_size: int = 64,
                 num_workers: int = 0, group_by_length: bool = False) -> None:
        super().__init__()
        self.splits = {k: v.with_format("python") for k, v in splits.items()}
        self.collator = collator
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.group_by_length = group_by_length
        self._eval_orders: dict[str, list[int]] = {}

    def lengths(self, split: str) -> list[int]:
        return [len(ids) for ids in self.splits[split]["input_ids"]]

    def eval_order(self, split: str) -> list[int]:
        """The split's row indices, longest row first (stable, so ties keep row order)."""
        if split not in self._eval_orders:
            lengths = self.lengths(split)
            self._eval_orders[split] = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        return self._eval_orders[split]

    def in_row_order(self, split: str, outputs: list[Any]) -> list[Any]:
        """Outputs produced in ``eval_order(split)``, rearranged to the split's row order."""
        order = self.eval_order(split)
        if len(outputs) != len(order):
            raise ValueError(f"{len(outputs)} outputs for the {len(order)} rows of split {split!r}")
        restored: list[Any] = [None] * len(order)
        for position, row in enumerate(order):
            restored[row] = outputs[position]
        return restored

    def _eval_loader(self, split: str) -> DataLoader:
        return DataLoader(self.splits[split], batch_size=self.eval_batch_size, sampler=self.eval_order(split),
                          collate_fn=self.collator, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        train = self.splits["train"]
        if not self.group_by_length:
            return DataLoader(train, batch_size=self.batch_size, shuffle=True, collate_fn=self.collator,
                              num_workers=self.num_workers)
        from transformers.trainer_pt_utils import LengthGroupedSampler

        # No generator: it draws from torch's global RNG, which seed_everything seeded.
        sampler = LengthGroupedSampler(self.batch_size, lengths=self.lengths("train"))
        return DataLoader(train, batch_size=self.batch_size, sampler=sampler, collate_fn=self.collator,
                          num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("validation")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")


class ClassificationData(FineTuneData):
    """Tokenized (input_ids, label) splits with per-batch padding."""

    def __init__(
        self,
        splits: dict[str, Dataset],
        tokenizer: PreTrainedTokenizerBase,
        batch_size: int,
        eval_batch_size: int = 64,
        num_workers: int = 0,
        group_by_length: bool = False,
    ) -> None:
        super().__init__({k: v.select_columns(["input_ids", "attention_mask", "label"]).rename_column("label", "labels")
                          for k, v in splits.items()}, DataCollatorWithPadding(tokenizer), batch_size, eval_batch_size,
                         num_workers, group_by_length)
