"""What using a model costs: the timing protocol (modules/evaluation/inference_cost.py), the
served predictor it times (modules/models/inference.py) and the report's table of it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from modules.evaluation.inference_cost import InferenceCost, cycled, measure_inference
from modules.evaluation.report import inference_table


class Recorder:
    """A predictor that remembers its calls, and whether the carbon context was open for each."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], bool]] = []
        self.tracking = False

    def __call__(self, texts: list[str]) -> list[dict[str, Any]]:
        self.calls.append((list(texts), self.tracking))
        return [{"label": t.upper(), "score": 1.0} for t in texts]

    @contextmanager
    def around(self) -> Iterator[None]:
        self.tracking = True
        try:
            yield
        finally:
            self.tracking = False


def test_batch1_and_batched_passes_cover_the_cycled_workload_and_only_the_batched_one_is_tracked() -> None:
    rec = Recorder()
    cost = measure_inference(rec, ["a", "b", "c"], parameters=1234, dtype="float32", batch_size=4, examples=10,
                             batch1_examples=3, around=rec.around)
    warmup, singles, batched = rec.calls[0], rec.calls[1:4], rec.calls[4:]
    assert warmup == (["a", "b", "c", "a"], False)
    assert singles == [(["a"], False), (["b"], False), (["c"], False)]  # one text per call, not tracked
    assert [texts for texts, _ in batched] == [["a", "b", "c", "a"], ["b", "c", "a", "b"], ["c", "a"]]
    assert all(tracked for _, tracked in batched)  # carbon covers exactly the batched pass
    assert cost.examples == 10 and cost.batch_size == 4 and cost.parameters == 1234
    assert cost.ms_per_example_batch1 > 0 and cost.ms_per_example_batched > 0
    # examples/s and ms/example are the same measurement, two ways up
    assert cost.examples_per_sec * cost.ms_per_example_batched / 1000 == pytest.approx(1.0)


def test_a_predictor_that_drops_answers_is_refused() -> None:
    def lossy(texts: list[str]) -> list[str]:
        return texts[:-1]

    with pytest.raises(RuntimeError, match="answers for 8 texts"):
        measure_inference(lossy, ["x"], 1, "float32", batch_size=4, examples=8, batch1_examples=1)


@pytest.mark.parametrize("bad", [{"examples": 0}, {"batch1_examples": 0}, {"batch_size": 0}])
def test_non_positive_sizes_are_refused(bad: dict[str, int]) -> None:
    args = {"batch_size": 2, "examples": 4, "batch1_examples": 1, **bad}
    with pytest.raises(ValueError, match="must be positive"):
        measure_inference(Recorder(), ["x"], 1, "float32", **args)
    with pytest.raises(ValueError, match="no texts"):
        cycled([], 3)


def test_metrics_leave_missing_emissions_out_rather_than_zero() -> None:
    cost = InferenceCost(10, "bfloat16", 16, 64, 2.0, 0.5, 2000.0)
    assert "inference/emissions_g_per_1k" not in cost.metrics()
    with_carbon = InferenceCost(**{**cost.as_dict(), "emissions_g_per_1k": 0.01}).metrics()
    assert with_carbon["inference/emissions_g_per_1k"] == 0.01
    assert with_carbon["inference/ms_per_example_batch1"] == 2.0 and with_carbon["inference/parameters"] == 10


def test_report_table_lists_timed_inits_in_result_order_and_names_the_untimed() -> None:
    timed = InferenceCost(4_000_000, "float32", 16, 256, 3.25, 0.75, 1333.3, 0.0042).as_dict()
    small = InferenceCost(400_000, "float32", 16, 256, 1.0, 0.25, 4000.0).as_dict()
    results = {"pretrained": {}, "scratch": {}, "tfidf": {}, "distilled": {}}
    text = "\n".join(inference_table({"distilled": small, "pretrained": timed}, results))
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows == ["| pretrained | 4,000,000 | 3.25 | 0.75 | 1,333 | 0.0042 |",
                    "| distilled | 400,000 | 1.00 | 0.25 | 4,000 | missing |"]
    assert "Not timed: `scratch`, `tfidf`" in text and "batches of 16" in text
    assert "logistic-regression coefficients" not in text  # said only when tfidf is in the table
    assert inference_table({}, results) == []
    # tfidf listed first: the header still names the networks' dtype; tfidf's float64 has its own line
    tfidf = InferenceCost(2_728, "float64", 16, 256, 2.3, 0.09, 11_309.0).as_dict()
    text = "\n".join(inference_table({"tfidf": tfidf, "pretrained": timed}, {"tfidf": {}, "pretrained": {}}))
    assert "post-processing; float32)" in text and "float64 whatever the device" in text
