"""``transferlab predict MODEL_URI INPUT [--output FILE]``: batch inference with a fine-tuned model.

MODEL_URI is an MLflow model (``models:/<name>/<version>``, ``runs:/<run id>/model``,
``models:/m-<id>``; docs/serving.md), loaded through pyfunc from the tracking store the
overrides name, or a local fine-tune folder (a run's ``hf_model/``), loaded as a
transformers pipeline. INPUT is read as ``data=local_*`` reads a file (modules/data/files.py):
txt (one text per non-empty line), csv/tsv with a header, or jsonl, the texts in column
``text`` (``--text-column`` for another name or a 0-based position).

Every mistake (no such file, no such column, no such model, an output suffix that is not
csv/tsv/jsonl) is one line naming the file or key, exit 2, before any output exists; the
output is written to a temp file beside it and renamed, so it is whole or absent.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from modules.data.errors import DataError
from pipelines.errors import UserError

OUTPUT_FORMATS = {".csv": ",", ".tsv": "\t", ".jsonl": None}
Predictor = Callable[[list[str]], list[dict[str, Any]]]


def read_inputs(path: str, text_column: str) -> list[str]:
    """The texts of INPUT, in file order (rows without text are skipped, as for data=local_*)."""
    from modules.data.files import expand, file_format, read_table

    (found,) = expand(path, "INPUT")
    table = read_table(found, "INPUT", "auto", True, "utf-8")
    plain = file_format(found, "auto", "INPUT") == "text"
    texts = [str(t).strip() for t in table.column(0 if plain else text_column, "--text-column")
             if t is not None and str(t).strip()]
    if not texts:
        raise DataError(f"INPUT: no text in {found}")
    return texts


def _mlflow_predictor(uri: str, tracking: str, precision: str) -> Predictor:
    """A transformers-flavor model (classification, tagging) loads as its native pipeline, so
    it runs on the inference device in ``precision``'s dtype; any other (the seq2seq pyfunc
    wrapper) through pyfunc, as ``mlflow models serve`` runs it."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    try:
        with _use_tracking_uri(tracking):
            flavors = mlflow.models.get_model_info(uri).flavors
            if "transformers" in flavors:
                from modules.models.inference import PIPELINE_TASK, inference_device, inference_dtype

                device, dtype = inference_device(), inference_dtype(precision)
                pipe = mlflow.transformers.load_model(uri, return_type="pipeline", device=device, dtype=dtype)
                task = {v: k for k, v in PIPELINE_TASK.items()}.get(pipe.task)
                if task is not None:
                    return _pipeline_predictor(pipe, task)
            model = mlflow.pyfunc.load_model(uri)
    except (MlflowException, OSError) as exc:
        raise UserError(f"MODEL_URI: cannot load {uri} from {tracking}: {str(exc).splitlines()[0]}") from exc

    def predict(texts: list[str]) -> list[dict[str, Any]]:
        import pandas as pd

        out = model.predict(pd.DataFrame({"text": texts}))
        if isinstance(out, pd.DataFrame) and {"label", "score"} <= set(out.columns):
            return [{"label": str(r.label), "score": float(r.score)} for r in out.itertuples()]
        answers: list[Any] = list(out)  # seq2seq: one generated text per input
        return [{"label": str(v), "score": None} for v in answers]

    return predict


def _pipeline_predictor(pipe: Any, task: str) -> Predictor:
    from modules.models.inference import as_rows, call_options

    options = call_options(task)
    return lambda texts: as_rows(task, pipe(texts, batch_size=len(texts), **options))


def _cached_label_names(path: Path) -> list[str]:
    """A fine-tune cache entry's label names (``record.json`` beside its ``hf_model/``): a
    sequence classifier's config knows only ``LABEL_<i>``. [] elsewhere: the config's names."""
    try:
        return list(json.loads((path.parent / "record.json").read_text()).get("label_names") or [])
    except (OSError, ValueError, AttributeError):
        return []


def _folder_predictor(path: Path, precision: str) -> Predictor:
    from modules.models.inference import checkpoint_predictor, checkpoint_task

    task = checkpoint_task(path)
    if task is None:
        raise UserError(f"MODEL_URI: {path} is not a fine-tuned classifier or tagger (config.json's architectures "
                        "name no sequence- or token-classification head)")
    return checkpoint_predictor(path, task, _cached_label_names(path), precision=precision).predict


def load_predictor(uri: str, tracking: str, precision: str = "auto") -> Predictor:
    if uri.startswith(("models:/", "runs:/")):
        return _mlflow_predictor(uri, tracking, precision)
    path = Path(uri).expanduser()
    if not (path / "config.json").is_file():
        raise UserError(f"MODEL_URI: {uri} is neither models:/..., runs:/... nor a model folder with config.json")
    return _folder_predictor(path, precision)


def _write(rows: list[dict[str, Any]], out: TextIO, suffix: str) -> None:
    delimiter = OUTPUT_FORMATS[suffix]
    if delimiter is None:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        return
    writer = csv.DictWriter(out, ["text", "label", "score"], delimiter=delimiter, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def predict_command(model_uri: str, input_path: str, output: str | None, text_column: str,
                    overrides: list[str], batch_size: int | None = None, precision: str = "auto") -> int:
    """Predict a label and a score for every text of INPUT; CSV on stdout without --output."""
    from tqdm import tqdm

    from pipelines.config.compose import compose
    from pipelines.tracking.runs import tracking_uri

    suffix = Path(output).suffix.lower() if output else ".csv"
    if suffix not in OUTPUT_FORMATS:
        raise UserError(f"--output: {output} must end in .csv, .tsv or .jsonl")
    if output and not Path(output).expanduser().resolve().parent.is_dir():
        raise UserError(f"--output: the directory of {output} does not exist")
    texts = read_inputs(input_path, text_column)
    from modules.models.choices import INFERENCE_PRECISIONS

    if precision not in INFERENCE_PRECISIONS:
        raise UserError(f"--precision: {precision!r} is not one of {', '.join(INFERENCE_PRECISIONS)}")
    predict = load_predictor(model_uri, tracking_uri(compose(overrides)), precision)
    if batch_size is None:
        from modules.models.inference import batch_size_for_device

        batch_size = batch_size_for_device()
    rows: list[dict[str, Any]] = []
    with tqdm(total=len(texts), desc="predict", unit="text", file=sys.stderr) as bar:
        for start in range(0, len(texts), batch_size):
            batch = texts[start:start + batch_size]
            rows += [{"text": t, **r} for t, r in zip(batch, predict(batch), strict=True)]
            bar.update(len(batch))
    if output is None:
        _write(rows, sys.stdout, suffix)
        return 0
    target = Path(output).expanduser()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.resolve().parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            _write(rows, f, suffix)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    print(f"transferlab: {len(rows)} predictions written to {target}", file=sys.stderr)
    return 0
