"""Learning-rate selection on the validation split: a few fine-tunes at different rates, the
one with the lowest validation loss wins.

Why: a single fixed rate favours whichever init it was tuned for. The tiny presets' rate
(1e-3) was chosen for the pretrained model; a scratch baseline early-stopped near chance at
that rate is a straw man (issue 13). Giving every init the same small search makes the
comparison fair. Epochs need no search of their own: each trial early-stops on
finetune.monitor (val/loss by default) and keeps its best epoch's weights, so a trial's score
is already its best epoch's.

How the rates are chosen (Optuna, not a home-made loop): the first ``min(trials,
GRID_POINTS)`` trials are an even log-spaced grid over ``[lr_min, lr_max]`` (the centres of
equal-width bins in log space, enqueued into the study); any further trials are proposed by
Optuna's TPE sampler, seeded, using the grid as its startup history. With the handful of
trials a fine-tune can afford, TPE would only sample at random (its startup phase is 10
random trials by default), and 3-6 random log-uniform draws can bunch together and leave
half the range untried; the grid covers it evenly, gives the same rates for every init and
seed (so trials compare across a sweep), and needs no seed. Selection is by validation loss
only: the test split never steers it.

No MLflow, Lightning or files here: the caller's objective trains one trial and returns its
validation loss with whatever result it wants kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

R = TypeVar("R")

# Trials spent on the even log grid before TPE proposes rates: TPE's own default number of
# (random) startup trials, which the grid replaces.
GRID_POINTS = 10


@dataclass(frozen=True)
class Trial(Generic[R]):
    number: int  # 0-based, in the order the trials ran
    lr: float
    val_loss: float  # the trial's best validation loss; inf when it had none (diverged: NaN)
    result: R


@dataclass(frozen=True)
class LRSearch(Generic[R]):
    trials: list[Trial[R]]  # in the order they ran
    best: Trial[R]  # lowest val_loss; the earliest of equals


def log_grid(n: int, lr_min: float, lr_max: float) -> list[float]:
    """``n`` rates evenly spaced in log space: the centres of ``n`` equal bins of
    ``[lr_min, lr_max]`` (so neither extreme of the range is spent on a trial of its own;
    n=1 gives the geometric mean)."""
    lo, hi = math.log(lr_min), math.log(lr_max)
    return [math.exp(lo + (i + 0.5) * (hi - lo) / n) for i in range(n)]


def search_lr(objective: Callable[[int, float], tuple[float | None, R]], trials: int, lr_min: float, lr_max: float,
              seed: int = 0) -> LRSearch[R]:
    """Run ``trials`` calls ``objective(trial_number, lr) -> (val_loss, result)`` and return them
    all with the one of lowest validation loss. A NaN or missing loss counts as +inf (never
    chosen over a finite one). ``seed`` steers TPE's proposals after the grid."""
    import optuna

    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    if not 0 < lr_min < lr_max:
        raise ValueError(f"need 0 < lr_min < lr_max, got {lr_min}, {lr_max}")
    grid = log_grid(min(trials, GRID_POINTS), lr_min, lr_max)
    done: list[Trial[R]] = []

    def run(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", lr_min, lr_max, log=True)
        loss, result = objective(trial.number, lr)
        loss = math.inf if loss is None or math.isnan(loss) else float(loss)
        done.append(Trial(trial.number, lr, loss, result))
        return loss

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one INFO line per trial otherwise
    try:
        study = optuna.create_study(direction="minimize",
                                    sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=len(grid)))
        for lr in grid:
            study.enqueue_trial({"lr": lr})
        study.optimize(run, n_trials=trials)
    finally:
        optuna.logging.set_verbosity(verbosity)
    best = min(done, key=lambda t: (t.val_loss, t.number))
    return LRSearch(done, best)
