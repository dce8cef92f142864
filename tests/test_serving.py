"""Fine-tuned models as MLflow models: each trained init logs one (the ``transformers``
flavor), the best is registered under ``finetune.register_as``, and what is registered
predicts through pyfunc and answers HTTP through ``mlflow models serve``."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_overrides

from pipelines import stages
from pipelines.checkpoint_refs import resolve_init
from pipelines.config.compose import compose
from pipelines.stages.common import StageContext
from pipelines.stages.finetune import register_best
from pipelines.tracking.runs import tracking_uri

NAME = "quickstart-classification"  # finetune.register_as defaults to ${experiment_name}-${finetune.task}
TEXTS = ["the first text to label", "and a second one"]


def _tune(home: Path, *extra: str) -> dict[str, Any]:
    cfg = resolve_init(compose(tiny_overrides(home, "finetune.inits=[pretrained,tfidf]", *extra)))
    ctx = StageContext.create(cfg)
    parent = ctx.tracker.start_run("pipeline", {})
    ctx = StageContext(cfg, ctx.tracker, parent)
    prep = stages.prep(ctx)
    pre = stages.pretrain(ctx, prep)
    tuned = [stages.finetune(ctx, prep, pre, init) for init in cfg.finetune.inits]
    return {"ctx": ctx, "prep": prep, "pre": pre, "tuned": tuned, "parent": parent,
            "registered": register_best(ctx, prep, pre, tuned)}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serving")


@pytest.fixture(scope="module")
def first(home: Path) -> dict[str, Any]:
    return _tune(home)


@pytest.fixture(scope="module")
def pyfunc(first: dict[str, Any]) -> Iterator[Any]:
    """``mlflow.pyfunc`` reading this module's store (models:/ resolves through the global URI)."""
    import mlflow
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    with _use_tracking_uri(tracking_uri(first["ctx"].cfg)):
        yield mlflow.pyfunc


def test_trained_init_logs_an_mlflow_model_next_to_hf_model(first: dict[str, Any]) -> None:
    pretrained, tfidf = first["tuned"]
    client = first["ctx"].tracker.client
    assert pretrained.mlflow_model and pretrained.mlflow_model.startswith("models:/m-")
    assert tfidf.mlflow_model is None  # no network to serve
    logged = client.get_logged_model(pretrained.mlflow_model.removeprefix("models:/"))
    assert logged.source_run_id == pretrained.run_id and logged.name == "model"
    assert logged.tags["transferlab.fingerprint"] == pretrained.fingerprint
    run = client.get_run(pretrained.run_id)
    assert run.data.tags["transferlab.mlflow_model"] == pretrained.mlflow_model
    assert "hf_model" in [a.path for a in client.list_artifacts(pretrained.run_id)]  # today's files stay


def test_pyfunc_predicts_label_and_score(first: dict[str, Any], pyfunc: Any) -> None:
    import pandas as pd

    pretrained = first["tuned"][0]
    model = pyfunc.load_model(pretrained.mlflow_model)
    assert model.metadata.get_output_schema().input_names() == ["label", "score"]
    out = model.predict(pd.DataFrame({"text": TEXTS}))
    assert list(out.columns) == ["label", "score"] and len(out) == len(TEXTS)
    assert set(out["label"]) <= set(first["prep"].label_names)  # the dataset's names, not LABEL_<i>
    assert all(0.0 < s <= 1.0 for s in out["score"])
    # runs:/<fine-tune run>/model is the same model
    again = pyfunc.load_model(f"runs:/{pretrained.run_id}/model").predict(pd.DataFrame({"text": TEXTS}))
    assert list(again["label"]) == list(out["label"])


def test_best_trained_init_is_registered_with_tags(first: dict[str, Any], pyfunc: Any) -> None:
    import pandas as pd

    pretrained = first["tuned"][0]
    client = first["ctx"].tracker.client
    assert first["registered"] == {"name": NAME, "version": "1", "new": True, "uri": f"models:/{NAME}/1"}
    mv = client.get_model_version(NAME, "1")
    assert mv.run_id == pretrained.run_id and mv.source == pretrained.mlflow_model
    tags = mv.tags
    assert tags["transferlab.task"] == "classification" and tags["transferlab.init"] == "pretrained"
    assert tags["transferlab.strategy"] == "full"
    assert tags["transferlab.labels"].split(",") == first["prep"].label_names
    assert tags["transferlab.test_metric"] == "test/accuracy"
    assert float(tags["test/accuracy"]) == pytest.approx(pretrained.metrics["test/accuracy"], rel=1e-5)
    assert tags["transferlab.data_fingerprint"] == first["prep"].fingerprint
    assert tags["transferlab.fingerprint"] == pretrained.fingerprint
    assert tags["transferlab.source_pipeline_run"] == first["parent"]
    assert tags["transferlab.finetune_run"] == pretrained.run_id
    tune, pre = float(tags["carbon/finetune_kg"]), float(tags["carbon/pretrain_kg"])
    assert tune > 0 and pre > 0 and float(tags["carbon/emissions_kg"]) == pytest.approx(tune + pre, rel=1e-4)
    assert client.get_run(pretrained.run_id).data.tags["transferlab.registered_model"] == f"{NAME}/1"
    out = pyfunc.load_model(f"models:/{NAME}/1").predict(pd.DataFrame({"text": TEXTS}))
    assert list(out.columns) == ["label", "score"] and len(out) == len(TEXTS)


def test_cache_hit_reuses_the_model_and_the_version(home: Path, first: dict[str, Any]) -> None:
    again = _tune(home)
    pretrained = again["tuned"][0]
    assert pretrained.cache_hit is True
    assert pretrained.mlflow_model == first["tuned"][0].mlflow_model  # linked, not logged again
    client = again["ctx"].tracker.client
    outputs = client.get_run(pretrained.run_id).outputs.model_outputs
    assert [o.model_id for o in outputs] == [pretrained.mlflow_model.removeprefix("models:/")]
    assert again["registered"]["version"] == "1" and again["registered"]["new"] is False
    assert len(client.search_model_versions(f"name='{NAME}'")) == 1


def test_registering_does_not_depend_on_the_process_global_store(first: dict[str, Any], tmp_path: Path) -> None:
    """A run whose fine-tunes were all cache hits trained nothing, so no Lightning logger pointed
    MLflow's global store at ours; registering must still find the logged model (it failed so
    when four pipelines shared a fresh store)."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    from pipelines.tracking import registry

    pretrained, tracker = first["tuned"][0], first["ctx"].tracker
    with _use_tracking_uri(f"sqlite:///{tmp_path / 'elsewhere.db'}"):
        got = registry.register_finetuned(tracker, "global-store-elsewhere", pretrained.mlflow_model,
                                          pretrained.run_id, pretrained.fingerprint, {}, "a test version")
    assert got == {"name": "global-store-elsewhere", "version": "1", "new": True,
                   "uri": "models:/global-store-elsewhere/1"}
    assert tracker.client.get_model_version("global-store-elsewhere", "1").source == pretrained.mlflow_model


def _tuned_for(home: Path, task: str) -> tuple[Any, StageContext, Any, Any]:
    """One epoch of the ``pretrained`` init on ``task``: the fine-tune has an MLflow model and
    was timed as it will be served (the generator for seq2seq, the tagger's pipeline)."""
    cfg = resolve_init(compose(tiny_overrides(home, f"finetune={task}", "finetune.max_epochs=1",
                                              "finetune.inits=[pretrained]")))
    ctx = StageContext.create(cfg)
    prep = stages.prep(ctx)
    tuned = stages.finetune(ctx, prep, stages.pretrain(ctx, prep), "pretrained")
    assert tuned.mlflow_model
    assert tuned.inference is not None and tuned.inference["examples"] == 16
    return cfg, ctx, prep, tuned


def test_token_classification_model_answers_tags(tmp_path: Path) -> None:
    import mlflow
    import pandas as pd
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    cfg, ctx, prep, tuned = _tuned_for(tmp_path, "token_classification")
    with _use_tracking_uri(tracking_uri(cfg)):
        model = mlflow.pyfunc.load_model(tuned.mlflow_model)
        out = model.predict(pd.DataFrame({"text": TEXTS}))
        # One tag per token, O included: a sentence without entities answers too.
        single = model.predict(pd.DataFrame({"text": ["zzz"]}))
    assert len(out) == len(TEXTS) and len(single) == 1
    tags = [tag for text in [*out, *single] for tag in text.split(",")]
    assert tags and set(tags) <= set(prep.label_names)


def test_seq2seq_model_is_a_pyfunc_wrapper_answering_text(tmp_path: Path) -> None:
    """No transformers 5 pipeline serves seq2seq: the MLflow model is a python_function wrapper."""
    import mlflow
    import pandas as pd
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    cfg, ctx, _, tuned = _tuned_for(tmp_path, "seq2seq")
    outputs = ctx.tracker.client.get_run(tuned.run_id).outputs.model_outputs
    assert [o.model_id for o in outputs] == [tuned.mlflow_model.removeprefix("models:/")]
    with _use_tracking_uri(tracking_uri(cfg)):
        model = mlflow.pyfunc.load_model(tuned.mlflow_model)
        assert model.metadata.flavors.keys() == {"python_function"}
        out = model.predict(pd.DataFrame({"text": TEXTS}))
    assert len(out) == len(TEXTS) and all(isinstance(t, str) for t in out)


def _predict(*argv: str) -> int:
    from pipelines.cli import main

    return main(["predict", *argv])


def test_predict_writes_label_and_score_per_row(first: dict[str, Any], tmp_path: Path) -> None:
    data = tmp_path / "texts.csv"
    data.write_text("id,body\n1,the first text to label\n2,\n3,\"and a second, with a comma\"\n")
    out = tmp_path / "labels.jsonl"
    home = f"paths.home={first['ctx'].cfg.paths.home}"
    assert _predict(f"models:/{NAME}/1", str(data), "--output", str(out), "--text-column", "body", home) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in rows] == ["the first text to label", "and a second, with a comma"]  # no empty row
    assert all(r["label"] in first["prep"].label_names and 0.0 < r["score"] <= 1.0 for r in rows)
    # A fine-tune folder answers the same, with the dataset's label names from its cache entry.
    folder = Path(first["tuned"][0].path) / "hf_model"
    csv_out = tmp_path / "labels.csv"
    assert _predict(str(folder), str(data), "--output", str(csv_out), "--text-column", "1", "--batch-size", "1") == 0
    lines = csv_out.read_text().splitlines()
    assert lines[0] == "text,label,score" and len(lines) == 3
    assert [line.rsplit(",", 2)[1] for line in lines[1:]] == [r["label"] for r in rows]


@pytest.mark.parametrize(("args", "message"), [
    (["missing.csv"], "INPUT: file not found"),
    (["texts.csv", "--text-column", "body"], "--text-column: column 'body' not in"),
    (["texts.csv", "--output", "out.parquet"], "--output: "),
    (["texts.csv", "--precision", "fp16"], "--precision: 'fp16' is not one of auto, bf16, fp32"),
])
def test_predict_bad_input_is_one_line_and_writes_nothing(first: dict[str, Any], tmp_path: Path, args: list[str],
                                                          message: str, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "texts.csv").write_text("text\nsomething\n")
    argv = [str(tmp_path / a) if a.endswith((".csv", ".parquet")) else a for a in args]
    assert _predict(f"models:/{NAME}/1", *argv, f"paths.home={first['ctx'].cfg.paths.home}") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"transferlab: error: {message}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["texts.csv"]


def test_predict_unknown_model_is_one_line(first: dict[str, Any], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "texts.csv").write_text("text\nsomething\n")
    assert _predict("models:/no-such-model/1", str(tmp_path / "texts.csv"),
                    f"paths.home={first['ctx'].cfg.paths.home}") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("transferlab: error: MODEL_URI: cannot load models:/no-such-model/1")


@pytest.mark.slow
def test_mlflow_models_serve_answers_http(first: dict[str, Any], tmp_path: Path) -> None:
    """``mlflow models serve -m models:/<name>/<version> --env-manager local`` on loopback
    answers a real POST /invocations with a label and a score per text."""
    from stack import free_port, start_process, stop, wait_http

    port = free_port()
    # MLflow starts the scoring server as `uvicorn` from PATH: the venv's bin, as in an activated venv.
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri(first["ctx"].cfg),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{NAME}/1", "--env-manager", "local",
           "-p", str(port), "-h", "127.0.0.1", "--workers", "1"]
    proc = start_process(cmd, tmp_path / "serve.log", env, cwd=tmp_path)
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", timeout=180, proc=proc)
        body = json.dumps({"dataframe_split": {"columns": ["text"], "data": [[t] for t in TEXTS]}}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as resp:
            assert resp.status == 200
            answer = json.loads(resp.read())
    finally:
        stop(proc)
    predictions = answer["predictions"]
    assert len(predictions) == len(TEXTS)
    for row in predictions:
        assert row["label"] in first["prep"].label_names and 0.0 < row["score"] <= 1.0


def test_cache_hit_without_a_model_in_the_store_logs_one(home: Path, first: dict[str, Any]) -> None:
    """An entry built before models were logged (or in another store): the hit logs its own.
    Last in this module: it deletes the model the registered version points at."""
    client = first["ctx"].tracker.client
    old = first["tuned"][0].mlflow_model.removeprefix("models:/")
    client.delete_logged_model(old)
    hit = _tune(home, "finetune.register_as=null")
    pretrained = hit["tuned"][0]
    assert pretrained.cache_hit is True and hit["registered"] is None
    assert pretrained.mlflow_model not in (None, f"models:/{old}")
    assert client.get_logged_model(pretrained.mlflow_model.removeprefix("models:/")).source_run_id == pretrained.run_id


def test_predictor_runs_in_the_chosen_dtype_counts_every_parameter_and_truncates(first: dict[str, Any]) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    from modules.models.inference import checkpoint_predictor, inference_dtype

    folder = Path(first["tuned"][0].path) / "hf_model"
    expected = sum(p.numel() for p in AutoModelForSequenceClassification.from_pretrained(str(folder)).parameters())
    labels = first["prep"].label_names
    for precision, dtype in (("fp32", "float32"), ("bf16", "bfloat16")):
        served = checkpoint_predictor(folder, "classification", labels, precision=precision)
        assert (served.parameters, served.dtype) == (expected, dtype)
        # a text far longer than the model's 64 positions is cut, not an error
        answers = served.predict([TEXTS[0], "word " * 500])
        assert len(answers) == 2 and all(a["label"] in labels for a in answers)
    assert inference_dtype("auto") in (torch.float32, torch.bfloat16)
    with pytest.raises(ValueError, match="precision 'fp16'"):
        inference_dtype("fp16")


def test_trained_inits_report_what_using_them_costs(first: dict[str, Any]) -> None:
    pretrained, tfidf = first["tuned"]
    cost = pretrained.inference
    assert cost is not None and tfidf.inference is not None  # the classical baseline is timed the same way
    assert tfidf.inference["dtype"] == "float64" and tfidf.inference["examples"] == 16
    assert tfidf.inference["parameters"] == first["ctx"].tracker.client.get_run(
        tfidf.run_id).data.metrics["model/trainable_parameters"]
    assert cost["examples"] == 16 and cost["batch_size"] >= 1 and cost["parameters"] > 0
    assert cost["dtype"] in ("float32", "bfloat16")
    assert cost["ms_per_example_batch1"] > 0 and cost["examples_per_sec"] > 0
    assert cost["emissions_g_per_1k"] > 0  # codecarbon around the batched pass (carbon is on in the tiny config)
    metrics = first["ctx"].tracker.client.get_run(pretrained.run_id).data.metrics
    assert metrics["inference/examples_per_sec"] == pytest.approx(cost["examples_per_sec"])
    assert metrics["inference/parameters"] == cost["parameters"]
    assert not (Path(pretrained.path) / "inference_carbon").exists()  # no measuring leftovers in the entry
