"""Stage records: small, typed, and passed by value (pickled to sweep workers and back)."""

from __future__ import annotations

import pickle

import cloudpickle

from pipelines.stages.records import Carbon, EvaluateRecord, FinetuneRecord, PrepRecord, PretrainRecord

SPENT = Carbon(emissions_kg=2e-6, energy_kwh=5e-6, duration_s=1.5)
CACHED = {"fingerprint": "fp", "path": "/cache/x/fp", "source_run_id": "builder"}


def _finetune(cache_hit: bool) -> FinetuneRecord:
    return FinetuneRecord(run_id="r3", carbon=SPENT, cache_hit=cache_hit, avoided_kg=7e-6 if cache_hit else None,
                          avoided_kwh=9e-6 if cache_hit else None, **CACHED, init="checkpoint:org/model",
                          task="classification", strategy="full", predictions="/cache/x/fp/predictions.csv",
                          metrics={"val/loss": 1.2, "test/accuracy": 0.5, "test/f1/a": 0.25}, train_examples=16,
                          requested_examples=32, label_names=["a", "b"])


RECORDS = [
    PrepRecord(run_id="r1", carbon=SPENT, cache_hit=False, **CACHED, lm_fingerprint="lm", task="classification",
               label_names=["a", "b"], has_labels=True, labeled_rows={"train": 120}),
    PretrainRecord(run_id="r2", cache_hit=True, **CACHED, hf_model="/cache/x/fp/hf_model",
                   metrics={"val/loss": 5.4}, registered_model={"name": "m", "version": "1", "new": False}),
    _finetune(cache_hit=False),
    EvaluateRecord(run_id="r4", carbon=SPENT, path="/runs/r4", report="/runs/r4/report.md",
                   metrics={"test/accuracy/pretrained": 0.5}, artifacts=["report.md"]),
]


def test_records_pickle_by_value() -> None:
    for rec in RECORDS:
        assert pickle.loads(pickle.dumps(rec)) == rec
        assert cloudpickle.loads(cloudpickle.dumps(rec)) == rec  # Prefect's process pool


def test_names_and_what_building_the_output_cost() -> None:
    assert [r.label for r in RECORDS] == ["prep", "pretrain", "finetune[checkpoint:org/model]", "evaluate"]
    assert RECORDS[0].produced() == (2e-6, 5e-6)  # built here: this run's figures
    assert RECORDS[1].produced() == (None, None)  # reused, source cost unknown: missing, not 0
    assert _finetune(cache_hit=True).produced() == (7e-6, 9e-6)  # reused: what the source run spent
    assert RECORDS[3].cache_hit is False and RECORDS[3].produced() == (2e-6, 5e-6)


def test_test_scores_are_the_task_metrics_without_prefix() -> None:
    assert _finetune(cache_hit=False).test_scores() == {"accuracy": 0.5, "f1/a": 0.25}
