"""Each trained fine-tune as an MLflow model (the ``transformers`` flavor), next to ``hf_model/``.

``hf_model/`` is what ``model.init`` and ``finetune.inits`` read back; the MLflow model is
what a user serves: ``mlflow models serve -m models:/<name>/<version>``,
``mlflow.pyfunc.load_model(...).predict(df)``. It is a pipeline of the task
(``modules.models.inference``: text-classification answers ``label`` and ``score``,
token-classification the tag of each token of a sentence, comma-joined; seq2seq, which
no transformers 5 pipeline serves, a pyfunc wrapper answering the target text:
``seq2seq_pyfunc.py``), with a signature and an input example.

MLflow 3 keeps it as a *logged model* (``models:/m-<id>``) whose source run is the
fine-tune's run, so ``runs:/<run id>/model`` finds it as well. It is logged through an
explicit model id in this run's experiment: MLflow's fluent default would put it in
experiment 0, because our runs are never the fluent "active run" (tracking/runs.py).
A logged model carries its fine-tune's fingerprint (tag ``transferlab.fingerprint``): a
cache hit reuses the model this experiment holds of the entry, and logs one itself only
when there is none (another store, or an entry built before models were logged).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from pipelines.tracking.runs import TAG_FINGERPRINT, TAG_TASK, Tracker

log = logging.getLogger("transferlab")

ARTIFACT_NAME = "model"  # runs:/<fine-tune run id>/model
TAG_MODEL = "transferlab.mlflow_model"  # on the fine-tune run: models:/m-<id>
TAG_MODEL_ERROR = "transferlab.mlflow_model_error"  # why a trained fine-tune has no MLflow model
INPUT_EXAMPLE = ["a sentence to label"]  # the pyfunc input: one text per row


def _signature(pipeline_task: str):
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    text = Schema([ColSpec("string")])
    if pipeline_task == "text-classification":
        return ModelSignature(inputs=text, outputs=Schema([ColSpec("string", name="label"),
                                                           ColSpec("double", name="score")]))
    # token-classification: comma-joined tags per token; seq2seq: the target text
    return ModelSignature(inputs=text, outputs=Schema([ColSpec("string")]))


def _requirements() -> list[str]:
    """The serving environment: pinned from the installed distributions. MLflow's own
    inference would import torchvision, which this project does not install."""
    return [f"{name}=={metadata.version(name)}" for name in ("transformers", "torch", "tokenizers")]


def log_finetuned_model(tracker: Tracker, run_id: str, fp: str, hf_model: Path, task: str,
                        label_names: list[str], card: str, trust_remote_code: bool = False,
                        generation: dict[str, int] | None = None) -> str:
    """Log ``hf_model`` (the cache entry with fingerprint ``fp``) as run ``run_id``'s MLflow
    model; its ``models:/m-<id>`` URI. Tags the run with it. ``generation`` (seq2seq):
    ``max_length``, ``max_target_length`` and ``num_beams`` of the fine-tune."""
    import mlflow
    from huggingface_hub import ModelCard
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    from modules.models.inference import call_options, inference_pipeline, pipeline_task

    name = pipeline_task(task)
    model = tracker.client.create_logged_model(tracker.experiment_id, name=ARTIFACT_NAME, source_run_id=run_id,
                                               tags={TAG_TASK: task, TAG_FINGERPRINT: fp})
    # log_model resolves its client from the global tracking URI: ours for the call only.
    with _use_tracking_uri(tracker.uri), _failed_unless_logged(tracker, model.model_id):
        if name is None:  # seq2seq: no transformers pipeline serves it, a pyfunc wrapper does
            from pipelines.tracking.seq2seq_pyfunc import HF_MODEL, Seq2SeqModel

            assert generation is not None, "seq2seq needs its generation settings"
            info = mlflow.pyfunc.log_model(name=ARTIFACT_NAME, python_model=Seq2SeqModel(**generation,
                                           trust_remote_code=trust_remote_code),
                                           artifacts={HF_MODEL: str(hf_model)}, model_id=model.model_id,
                                           signature=_signature("text2text-generation"),
                                           input_example=INPUT_EXAMPLE, pip_requirements=_requirements())
            link_model(tracker, run_id, str(info.model_uri))  # pyfunc's log_model takes no run id
        else:
            pipe = inference_pipeline(hf_model, task, label_names, trust_remote_code)
            info = mlflow.transformers.log_model(pipe, name=ARTIFACT_NAME, task=name, model_id=model.model_id,
                                                 run_id=run_id, signature=_signature(name),
                                                 input_example=INPUT_EXAMPLE, pip_requirements=_requirements(),
                                                 model_card=ModelCard(card), model_config=call_options(task) or None)
    tracker.set_tags(run_id, {TAG_MODEL: info.model_uri})
    return str(info.model_uri)


@contextmanager
def _failed_unless_logged(tracker: Tracker, model_id: str) -> Iterator[None]:
    """A logged model whose files did not make it is marked FAILED, not left PENDING."""
    try:
        yield
    except BaseException:
        from mlflow.entities import LoggedModelStatus

        try:
            tracker.client.finalize_logged_model(model_id, LoggedModelStatus.FAILED)
        except Exception as exc:  # the store itself may be what failed
            log.debug("logged model %s not marked FAILED: %s", model_id, exc)
        raise


def logged_model(tracker: Tracker, fp: str) -> str | None:
    """The ``models:/m-<id>`` URI of an MLflow model this experiment holds of the fine-tune
    with fingerprint ``fp`` (logged by the run that built it, or by an earlier hit)."""
    from mlflow.exceptions import MlflowException

    try:
        found = tracker.client.search_logged_models(
            [tracker.experiment_id], filter_string=f"tags.`{TAG_FINGERPRINT}` = '{fp}'")
    except MlflowException:
        return None
    ready = [m for m in found if m.name == ARTIFACT_NAME and str(m.status) == "READY"]
    return f"models:/{ready[0].model_id}" if ready else None


def link_model(tracker: Tracker, run_id: str, model_uri: str) -> None:
    """Show an existing MLflow model (a cache hit's) among ``run_id``'s outputs, and tag it."""
    from mlflow.entities import LoggedModelOutput

    tracker.client.log_outputs(run_id, [LoggedModelOutput(model_uri.removeprefix("models:/"), step=0)])
    tracker.set_tags(run_id, {TAG_MODEL: model_uri})
