"""What using a fine-tuned model costs: latency, throughput and emissions of a fixed prediction run.

A fine-tune is chosen for deployment on more than its test score: a model a few points
worse but ten times faster, or a thousandth of the CO2 per prediction, can be the better
choice. So every fine-tuned model is timed the way it will be used (the served predictor
of modules/models/inference.py: tokenization, forward pass and post-processing, in the
dtype ``transferlab predict`` uses):

- **batch 1**: one text per call, as an interactive request arrives (``batch1_examples``
  calls, after one warm-up call);
- **batched**: ``examples`` texts in batches of ``batch_size``, as a batch job runs them;
  the caller's ``around`` context (the pipeline's codecarbon tracker) wraps exactly this
  pass, so its emissions divide into a per-1k-predictions figure.

The texts are the test split's, repeated to reach ``examples``: the same inputs for every
init of a run, so their figures compare. Timings are wall clock on a machine that may be
shared; treat differences under ~20% as noise (docs/BENCHMARKS.md measures on an idle one).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from typing import Any

Predict = Callable[[list[str]], list[Any]]


@dataclass(frozen=True)
class InferenceCost:
    parameters: int  # all of the served model's parameters
    dtype: str  # what the weights ran in: bfloat16 | float32
    batch_size: int
    examples: int  # texts predicted in the batched pass
    ms_per_example_batch1: float
    ms_per_example_batched: float
    examples_per_sec: float  # batched
    emissions_g_per_1k: float | None = None  # filled in by the caller from its carbon tracker

    def metrics(self) -> dict[str, float]:
        """MLflow metrics (``inference/*``); a missing emissions figure is left out, not zero."""
        out = {"inference/parameters": float(self.parameters), "inference/batch_size": float(self.batch_size),
               "inference/ms_per_example_batch1": self.ms_per_example_batch1,
               "inference/ms_per_example_batched": self.ms_per_example_batched,
               "inference/examples_per_sec": self.examples_per_sec}
        if self.emissions_g_per_1k is not None:
            out["inference/emissions_g_per_1k"] = self.emissions_g_per_1k
        return out

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def cycled(texts: list[str], n: int) -> list[str]:
    """``n`` texts: ``texts`` repeated in order (a fixed workload for any test split size)."""
    if not texts:
        raise ValueError("inference cost: no texts to predict")
    return list(itertools.islice(itertools.cycle(texts), n))


def _batches(texts: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(texts), size):
        yield texts[start:start + size]


def measure_inference(predict: Predict, texts: list[str], parameters: int, dtype: str, batch_size: int,
                      examples: int, batch1_examples: int,
                      around: Callable[[], AbstractContextManager[Any]] = nullcontext) -> InferenceCost:
    """Time ``predict`` on ``texts`` (cycled) one at a time and in batches; see the module docstring."""
    if examples <= 0 or batch1_examples <= 0 or batch_size <= 0:
        raise ValueError("inference cost: examples, batch1_examples and batch_size must be positive")
    workload = cycled(texts, examples)
    predict(workload[:batch_size])  # warm-up: lazy inits, allocator, kernel selection
    singles = workload[:batch1_examples]
    t0 = time.perf_counter()
    for text in singles:
        predict([text])
    batch1 = (time.perf_counter() - t0) / len(singles)
    with around():
        t0 = time.perf_counter()
        answered = sum(len(predict(batch)) for batch in _batches(workload, batch_size))
        batched = time.perf_counter() - t0
    if answered != len(workload):
        raise RuntimeError(f"inference cost: {answered} answers for {len(workload)} texts")
    return InferenceCost(parameters, dtype, batch_size, len(workload), batch1 * 1000, batched * 1000 / len(workload),
                         len(workload) / batched)
