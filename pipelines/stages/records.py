"""What each stage hands to the next and to the flows: small typed records, never models.

A record holds paths, fingerprints, run ids and metrics, so it pickles cheaply to a sweep's
worker processes and back, and a Prefect task passes it by value. It is not the cache
entry's ``record.json`` (that is the entry's own description, written by the stage that
built it and read back on a cache hit); a stage record is made from it plus this run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Carbon:
    """What a stage's own run spent; None where codecarbon measured nothing (never 0)."""

    emissions_kg: float | None = None
    energy_kwh: float | None = None
    duration_s: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class StageRecord:
    """The fields every stage returns: its MLflow child run and what that run spent."""

    stage: ClassVar[str]
    run_id: str
    carbon: Carbon = field(default_factory=Carbon)
    cache_hit: bool = False  # reused a finished output; only a cached stage can

    @property
    def label(self) -> str:
        """How the stage is named in reports and summaries."""
        return self.stage

    def produced(self) -> tuple[float | None, float | None]:
        """What building the output cost (kg, kWh): this run's figures, or on a cache hit
        the source run's (read once by the stage, ``StageRun.mark_cache``)."""
        return self.carbon.emissions_kg, self.carbon.energy_kwh


@dataclass(frozen=True, kw_only=True)
class CachedRecord(StageRecord):
    """A stage whose output is a cache entry: which entry, and whether this run reused it."""

    fingerprint: str
    path: str  # the cache entry's directory
    cache_hit: bool  # this run reused the entry and built nothing
    source_run_id: str  # the run that built the entry (this one on a miss)
    avoided_kg: float | None = None  # on a hit: what building the reused output cost
    avoided_kwh: float | None = None

    def produced(self) -> tuple[float | None, float | None]:
        return (self.avoided_kg, self.avoided_kwh) if self.cache_hit else super().produced()


@dataclass(frozen=True, kw_only=True)
class PrepRecord(CachedRecord):
    stage: ClassVar[str] = "prep"
    lm_fingerprint: str  # what pretraining is keyed on (the LM data without the task's labels)
    task: str
    label_names: list[str]
    has_labels: bool
    labeled_rows: dict[str, int]  # rows per split; {} without labels


@dataclass(frozen=True, kw_only=True)
class PretrainRecord(CachedRecord):
    stage: ClassVar[str] = "pretrain"
    hf_model: str  # the exported model (a save_pretrained dir)
    metrics: dict[str, float] = field(default_factory=dict)
    registered_model: dict[str, Any] | None = None  # tracking.registry.register_export's answer


@dataclass(frozen=True, kw_only=True)
class FinetuneRecord(CachedRecord):
    stage: ClassVar[str] = "finetune"
    init: str  # finetune.init_label: "pretrained", "scratch", "zero_shot", "checkpoint:<name>"
    task: str
    strategy: str | None  # None for zero-shot (nothing trained)
    predictions: str  # the saved test predictions file
    metrics: dict[str, float]  # test/* scored when the predictions were made, val/* of training
    train_examples: int
    requested_examples: int | None
    label_names: list[str]
    mlflow_model: str | None = None  # models:/m-<id>: the servable MLflow model (trained inits)
    # What using the model costs (pipelines/stages/inference_cost.py; InferenceCost.as_dict()):
    # None for tfidf/zero_shot and for entries built before it was measured.
    inference: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        return f"finetune[{self.init}]"

    def test_scores(self) -> dict[str, float]:
        """The task's test metrics without the ``test/`` prefix (``Task.score``'s keys)."""
        return {k.removeprefix("test/"): v for k, v in self.metrics.items() if k.startswith("test/")}


@dataclass(frozen=True, kw_only=True)
class DistillRecord(FinetuneRecord):
    """A distilled student: to the report and the summary one more init (``distilled``),
    made by its own stage."""

    stage: ClassVar[str] = "distill"
    teacher: str  # the teacher's init label ("pretrained", "checkpoint:<name>")
    unlabeled_examples: int  # unlabeled texts it trained on, beside train_examples labeled ones
    parameters: int | None = None  # the student's non-embedding parameters (record.json "parameters")
    teacher_parameters: int | None = None

    @property
    def label(self) -> str:
        return "distill"


@dataclass(frozen=True, kw_only=True)
class EvaluateRecord(StageRecord):
    stage: ClassVar[str] = "evaluate"
    path: str  # the run's work dir, holding the report and its plots
    report: str
    metrics: dict[str, float]
    artifacts: list[str]  # file names in ``path``: the report first
