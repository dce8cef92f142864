"""Fine-tuning tasks: what each downstream task needs from data, model, training and scoring.

One module per task (``classification``, ``token_classification``, ``seq2seq``), each
exposing ``TASK``, an instance of :class:`modules.tasks.base.Task`. The names and the
tables below are importable without torch, so config validation stays instant; a task's
module (and torch with it) is imported only when :func:`get_task` asks for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modules.tasks.base import Task

# Which pretrained LM families can serve a task with a transformers head:
# token classification needs a per-token head (GPT-2 and BERT have one, BART does not);
# sequence-to-sequence needs a decoder (BART's, or a causal LM continuing the source).
TASK_FAMILIES: dict[str, tuple[str, ...]] = {
    "classification": ("causal", "masked", "seq2seq"),
    "token_classification": ("causal", "masked"),
    "seq2seq": ("causal", "seq2seq"),
}
# What early stopping, the best-epoch checkpoint and the LR search may watch besides val/loss
# (finetune.monitor): the task's per-epoch validation accuracy. Seq2seq validates on loss only
# (its headline, chrF, needs generation).
VAL_METRIC: dict[str, str] = {"classification": "val/accuracy", "token_classification": "val/token_accuracy"}
# The metric a task is judged by (learning curves, gains, sweeps), without the "test/" prefix.
HEADLINE: dict[str, str] = {
    "classification": "accuracy",
    "token_classification": "entity_f1",
    "seq2seq": "chrf",
}
TASKS = tuple(TASK_FAMILIES)


def _classification() -> Task:
    from modules.tasks.classification import TASK

    return TASK


def _token_classification() -> Task:
    from modules.tasks.token_classification import TASK

    return TASK


def _seq2seq() -> Task:
    from modules.tasks.seq2seq import TASK

    return TASK


# finetune.task -> the loader of its Task (a literal import each, so grep finds the module).
_LOADERS: dict[str, Callable[[], Task]] = {
    "classification": _classification,
    "token_classification": _token_classification,
    "seq2seq": _seq2seq,
}


def get_task(name: str) -> Task:
    if name not in _LOADERS:
        raise ValueError(f"unknown finetune.task {name!r} (choices: {', '.join(TASKS)})")
    return _LOADERS[name]()


def family_error(task: str, family: str, what: str) -> str | None:
    """The one-line reason ``what`` (a family-``family`` checkpoint) cannot serve ``task``, or None."""
    allowed = TASK_FAMILIES[task]
    if family in allowed:
        return None
    return (f"finetune.task={task} needs a {' or '.join(allowed)} model, and {what} is a {family} LM "
            f"(families that can serve {task}: {', '.join(allowed)})")
