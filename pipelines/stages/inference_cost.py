"""The inference cost of a fine-tuned model, measured when the model is built (fine-tune, distill).

The figures (modules/evaluation/inference_cost.py) go into the cache entry's record.json
beside the test metrics, so a cache hit shows them without timing again, and onto the
stage's MLflow run as ``inference/*``. The CO2 of predictions comes from a codecarbon
tracker around the batched pass alone (this stage's own tracker keeps running, so the
stage's carbon includes the few seconds of measuring). Entries built before the
measurement existed have none; the report names them as not timed.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.config.schema import TransferLabConfig
from pipelines.stages.records import PrepRecord
from pipelines.tracking.carbon import CarbonResult, track_carbon

if TYPE_CHECKING:
    from modules.models.inference import ServedModel

log = logging.getLogger("transferlab")


def measure_cost(cfg: TransferLabConfig, prep_record: PrepRecord, hf_model: Path, task: str,
                 label_names: list[str], workdir: Path, label: str) -> dict[str, Any] | None:
    """``InferenceCost.as_dict()`` of the fine-tuned model in ``hf_model`` (its served
    predictor) on this run's test texts; None when ``evaluate.inference_examples`` is 0."""
    if cfg.evaluate.inference_examples <= 0:
        return None
    from modules.models.inference import checkpoint_predictor

    ft = cfg.finetune
    served = checkpoint_predictor(hf_model, task, label_names, ft.max_length, ft.max_target_length, ft.num_beams,
                                  cfg.model.trust_remote_code, cfg.evaluate.inference_precision)
    return measure_served(cfg, prep_record, served, task, workdir, label)


def measure_served(cfg: TransferLabConfig, prep_record: PrepRecord, served: ServedModel, task: str, workdir: Path,
                   label: str) -> dict[str, Any] | None:
    """``InferenceCost.as_dict()`` of any served model (a fine-tune's predictor, the tfidf
    baseline's) on this run's test texts; None when ``evaluate.inference_examples`` is 0."""
    ev = cfg.evaluate
    if ev.inference_examples <= 0:
        return None
    from datasets import load_from_disk

    from modules.evaluation.inference_cost import measure_inference
    from modules.models.inference import batch_size_for_device
    from modules.tasks import get_task

    texts = get_task(task).inputs(load_from_disk(str(Path(prep_record.path) / "labeled"))["test"])
    carbon_dir = workdir / "inference_carbon"
    carbon = CarbonResult()

    @contextmanager
    def tracked() -> Iterator[None]:
        nonlocal carbon
        with track_carbon(cfg.carbon, carbon_dir) as carbon:
            yield

    try:
        cost = measure_inference(served.predict, texts, served.parameters, served.dtype, batch_size_for_device(),
                                 ev.inference_examples, min(ev.inference_batch1_examples, ev.inference_examples),
                                 tracked)
    finally:
        shutil.rmtree(carbon_dir, ignore_errors=True)  # its figures are in the record; no csv left in the entry
    out = cost.as_dict()
    if carbon.emissions_kg is not None:
        out["emissions_g_per_1k"] = carbon.emissions_kg * 1000 * 1000 / cost.examples
    log.info("%s: inference %.2f ms/example at batch 1, %.0f examples/s at batch %d (%s)%s", label,
             cost.ms_per_example_batch1, cost.examples_per_sec, cost.batch_size, cost.dtype,
             "" if carbon.emissions_kg is None else f", {out['emissions_g_per_1k']:.3g} g CO2e per 1k predictions")
    return out


def cost_metrics(inference: dict[str, Any] | None) -> dict[str, float]:
    """``inference/*`` MLflow metrics of a record's ``inference`` entry ({} without one)."""
    if not inference:
        return {}
    from modules.evaluation.inference_cost import InferenceCost

    return InferenceCost(**inference).metrics()
