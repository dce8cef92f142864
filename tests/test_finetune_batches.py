"""Fine-tuning batches: validation and test run longest-first and their outputs return to row
order; finetune.group_by_length groups training rows by length and still reshuffles."""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch
from datasets import Dataset

from modules.data.datamodules import FineTuneData


def pad_collate(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    width = max(len(r["input_ids"]) for r in rows)
    return {"input_ids": torch.tensor([r["input_ids"] + [0] * (width - len(r["input_ids"])) for r in rows]),  # (B, T)
            "row": torch.tensor([r["row"] for r in rows])}  # (B,)


def rows_of_random_length(n: int, longest: int = 64, seed: int = 0) -> Dataset:
    rng = random.Random(seed)
    return Dataset.from_dict({"input_ids": [[1] * rng.randint(1, longest) for _ in range(n)], "row": list(range(n))})


def data(n: int = 300, batch_size: int = 16, group_by_length: bool = False) -> FineTuneData:
    split = rows_of_random_length(n)
    return FineTuneData({"train": split, "validation": split, "test": split}, pad_collate, batch_size,
                        eval_batch_size=32, group_by_length=group_by_length)


def padded_cells(loader: Any) -> tuple[int, list[list[int]]]:
    """(sum over batches of batch rows x batch width, the rows of each batch)"""
    cells, batches = 0, []
    for batch in loader:
        cells += batch["input_ids"].numel()
        batches.append(batch["row"].tolist())
    return cells, batches


def test_test_batches_run_longest_first_and_outputs_return_to_row_order() -> None:
    dm = data()
    widths, outputs = [], []
    for batch in dm.test_dataloader():
        widths.append(batch["input_ids"].shape[1])
        outputs.extend(batch["row"].tolist())  # a "prediction" that names its row
    assert widths == sorted(widths, reverse=True) and widths[0] > widths[-1]
    assert outputs != list(range(300))  # the loader really reorders ...
    assert dm.in_row_order("test", outputs) == list(range(300))  # ... and every output finds its row again
    lengths = dm.lengths("test")
    assert [lengths[i] for i in dm.eval_order("test")] == sorted(lengths, reverse=True)
    with pytest.raises(ValueError, match="299 outputs for the 300 rows of split 'test'"):
        dm.in_row_order("test", outputs[:-1])


def test_validation_sees_every_row_once_with_less_padding_than_row_order() -> None:
    dm = data()
    cells, batches = padded_cells(dm.val_dataloader())
    assert sorted(r for b in batches for r in b) == list(range(300))
    lengths = dm.lengths("validation")
    in_row_order = sum(len(chunk) * max(chunk) for chunk in (lengths[i:i + 32] for i in range(0, 300, 32)))
    assert cells < 0.75 * in_row_order


def test_grouped_training_batches_pad_less_and_change_between_epochs() -> None:
    torch.manual_seed(0)
    grouped, shuffled = data(group_by_length=True), data(group_by_length=False)
    loader = grouped.train_dataloader()
    cells_1, epoch_1 = padded_cells(loader)
    cells_2, epoch_2 = padded_cells(loader)
    for epoch in (epoch_1, epoch_2):
        assert sorted(r for b in epoch for r in b) == list(range(300))  # each row once per epoch
        assert all(len(b) == 16 for b in epoch[:-1])
    assert {frozenset(b) for b in epoch_1} != {frozenset(b) for b in epoch_2}  # not the same batches each epoch
    plain_cells, _ = padded_cells(shuffled.train_dataloader())
    assert max(cells_1, cells_2) < 0.75 * plain_cells


def test_grouping_is_reproducible_under_a_seed() -> None:
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append(padded_cells(data(group_by_length=True).train_dataloader())[1])
    assert runs[0] == runs[1]
