"""modules.training.lr_search on fake objectives: which rates it tries, which it keeps."""

from __future__ import annotations

import math

import pytest

from modules.training.lr_search import GRID_POINTS, log_grid, search_lr


def _bowl(best_lr: float):  # noqa: ANN202
    """A val loss with its minimum at ``best_lr``, smooth in log(lr); records the rates tried."""
    tried: list[float] = []

    def objective(number: int, lr: float) -> tuple[float, int]:
        tried.append(lr)
        return (math.log10(lr) - math.log10(best_lr)) ** 2, number

    return objective, tried


def test_the_grid_is_the_log_centres_of_equal_bins() -> None:
    assert log_grid(3, 1e-5, 1e-2) == pytest.approx([10 ** -4.5, 10 ** -3.5, 10 ** -2.5])
    assert log_grid(1, 1e-4, 1e-2) == pytest.approx([1e-3])  # the geometric mean


def test_few_trials_are_the_grid_and_the_lowest_loss_wins() -> None:
    objective, tried = _bowl(4e-4)
    found = search_lr(objective, 3, 1e-5, 1e-2)
    assert sorted(tried) == pytest.approx(log_grid(3, 1e-5, 1e-2))
    assert found.best.lr == pytest.approx(10 ** -3.5)  # the grid point nearest 4e-4 in log space
    assert found.best.val_loss == min(t.val_loss for t in found.trials)
    assert [t.number for t in found.trials] == [0, 1, 2] and found.best.result == found.best.number


def test_more_trials_than_the_grid_close_in_on_the_minimum_and_repeat_for_a_seed() -> None:
    target = 1.5e-4  # between two grid points: only the trials after the grid can get nearer
    objective, tried = _bowl(target)
    found = search_lr(objective, GRID_POINTS + 15, 1e-5, 1e-2, seed=7)
    grid_best = min(abs(math.log10(lr / target)) for lr in log_grid(GRID_POINTS, 1e-5, 1e-2))
    assert len(found.trials) == GRID_POINTS + 15
    assert abs(math.log10(found.best.lr / target)) < grid_best / 2
    assert all(1e-5 <= lr <= 1e-2 for lr in tried)
    again, tried_again = _bowl(target)
    assert [t.lr for t in search_lr(again, GRID_POINTS + 15, 1e-5, 1e-2, seed=7).trials] == tried
    assert tried_again == tried


def test_a_diverged_trial_is_never_chosen() -> None:
    def objective(number: int, lr: float) -> tuple[float | None, None]:
        return (math.nan if number == 0 else None if number == 1 else 1.0 + lr), None

    found = search_lr(objective, 3, 1e-5, 1e-2)
    assert found.best.number == 2
    assert [t.val_loss for t in found.trials[:2]] == [math.inf, math.inf]


@pytest.mark.parametrize("trials, lo, hi", [(0, 1e-5, 1e-2), (2, 1e-2, 1e-5), (2, 0.0, 1e-2)])
def test_bad_arguments_are_refused(trials: int, lo: float, hi: float) -> None:
    with pytest.raises(ValueError):
        search_lr(lambda n, lr: (1.0, None), trials, lo, hi)
