"""The whole flow under one session-scoped Prefect harness, checked through MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_overrides
from mlflow.tracking import MlflowClient

from pipelines.errors import ConfigError

STAGE_METRICS = {
    "prep": {"data/lm_blocks_train"},
    "pretrain": {"train/loss", "val/loss", "val/perplexity", "train/tokens_per_sec", "train/mfu"},
    "finetune": {"train/loss", "val/loss", "val/accuracy", "test/accuracy", "test/f1_macro"},
    "evaluate": {"test/accuracy/pretrained", "test/accuracy/scratch", "test/accuracy/tfidf", "test/f1_macro/pretrained",
                 "test/accuracy_majority", "val/perplexity"},
    # init=tfidf trains no network: no train/loss, but validation chose its C
    "finetune[tfidf]": {"val/accuracy", "val/loss", "test/accuracy", "test/f1_macro", "test/accuracy_majority"},
}
STAGE_ARTIFACTS = {
    "prep": {"tokenizer", "stats.json"},
    "pretrain": {"hf_model", "checkpoints"},
    "finetune": {"predictions.csv", "hf_model"},
    "evaluate": {"report.md", "comparison.png", "confusion_matrix_pretrained.png", "confusion_matrix_scratch.png",
                 "confusion_matrix_tfidf.png"},
    "finetune[tfidf]": {"predictions.csv"},
}
CARBON = {"carbon/emissions_kg", "carbon/energy_kwh", "carbon/duration_s"}


def _runs(home: Path) -> tuple[MlflowClient, list[Any]]:
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("transferlab")
    return client, client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


def _children(runs: list[Any], parent_id: str) -> list[Any]:
    return [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]


@pytest.fixture(scope="module")
def flow_home(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> tuple[Path, dict[str, Any]]:
    from pipelines.flows import transfer_learning

    home = tmp_path_factory.mktemp("flow")
    summary = transfer_learning(overrides=tiny_overrides(home))
    return home, summary


def test_flow_makes_one_parent_and_a_child_per_stage(flow_home: tuple[Path, dict[str, Any]]) -> None:
    home, summary = flow_home
    client, runs = _runs(home)
    parents = [r for r in runs if r.data.tags.get("transferlab.kind") == "pipeline"]
    assert len(parents) == 1 and parents[0].info.run_id == summary["parent_run_id"]
    # MLflow 3's UI opens the experiment as model training (runs, metrics), not GenAI traces.
    assert client.get_experiment_by_name("transferlab").tags["mlflow.experimentKind"] == "custom_model_development"
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    children = _children(runs, parent.info.run_id)
    stages = sorted(r.data.tags["transferlab.stage"] for r in children)
    assert stages == ["evaluate", "finetune", "finetune", "finetune", "prep", "pretrain"]
    finetunes = [r for r in children if r.data.tags["transferlab.stage"] == "finetune"]
    assert sorted(r.data.tags.get("transferlab.init") for r in finetunes) == ["pretrained", "scratch", "tfidf"]

    for run in children:
        stage = run.data.tags["transferlab.stage"]
        if run.data.tags.get("transferlab.init") == "tfidf":
            stage = "finetune[tfidf]"
            assert run.data.tags["transferlab.baseline_choice"].startswith("C=")
        assert run.info.status == "FINISHED"
        missing = (STAGE_METRICS[stage] | CARBON) - set(run.data.metrics)
        assert not missing, (stage, missing)
        assert run.data.metrics["carbon/emissions_kg"] > 0, stage
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert (STAGE_ARTIFACTS[stage] | {"config.yaml", "emissions.csv"}) <= artifacts, (stage, artifacts)
        assert run.data.params["model.name"] == "gpt2_tiny"

    # The parent's totals are the sum of its stages.
    total = sum(r.data.metrics["carbon/emissions_kg"] for r in children)
    assert parent.data.metrics["carbon/emissions_kg"] == pytest.approx(total)
    assert {"report.md", "comparison.png", "config.yaml"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_flow_summary_points_at_the_report_and_store(flow_home: tuple[Path, dict[str, Any]]) -> None:
    home, summary = flow_home
    assert summary["tracking_uri"] == f"sqlite:///{home / 'mlflow.db'}"
    assert Path(summary["report"]).read_text().startswith("# transferlab report")
    assert summary["headline"]["metric"] == "accuracy"
    assert set(summary["headline"]["by_init"]) == {"pretrained", "scratch", "tfidf"}
    assert [s["stage"] for s in summary["stages"]] == ["prep", "pretrain", "finetune[pretrained]",
                                                       "finetune[scratch]", "finetune[tfidf]", "evaluate"]
    report = Path(summary["report"]).read_text()
    assert f"| tfidf | {summary['headline']['by_init']['tfidf']:.4f} |" in report
    assert "| *majority class* | " in report and "classical baseline (`tfidf`)" in report
    # finetune.register_as (default on): the best trained init is registered, servable.
    by_init = summary["headline"]["by_init"]
    best = max(("pretrained", "scratch"), key=lambda init: by_init[init])  # tfidf has no MLflow model
    assert summary["registered_model"]["uri"] == "models:/quickstart-classification/1"
    client, _ = _runs(home)
    tags = client.get_model_version("quickstart-classification", "1").tags
    assert tags["transferlab.init"] == best and tags["transferlab.source_pipeline_run"] == summary["parent_run_id"]


def test_second_flow_run_reuses_every_stage(flow_home: tuple[Path, dict[str, Any]]) -> None:
    from pipelines.flows import transfer_learning

    home, first = flow_home
    second = transfer_learning(overrides=tiny_overrides(home))
    hits = {s["stage"]: s["cache_hit"] for s in second["stages"]}
    assert hits == {"prep": True, "pretrain": True, "finetune[pretrained]": True, "finetune[scratch]": True,
                    "finetune[tfidf]": True, "evaluate": True}  # evaluate: its perplexity and plots
    assert second["headline"] == first["headline"]  # the reused fine-tunes' own test metrics
    assert second["registered_model"]["version"] == "1" and second["registered_model"]["new"] is False
    _, runs = _runs(home)
    children = _children(runs, second["parent_run_id"])
    cache_tags = {(r.data.tags["transferlab.stage"], r.data.tags.get("transferlab.init")):
                  r.data.tags.get("transferlab.cache") for r in children}
    assert set(cache_tags.values()) == {"hit"}
    # The report prices a reused stage at what building it cost in the first run.
    first_pretrain = next(r for r in _children(runs, first["parent_run_id"])
                          if r.data.tags["transferlab.stage"] == "pretrain")
    built_g = first_pretrain.data.metrics["carbon/emissions_kg"] * 1000
    pretrain_row = next(line for line in Path(second["report"]).read_text().splitlines()
                        if line.startswith("| pretrain |"))
    assert pretrain_row.split("|")[2].strip() == "hit"
    assert float(pretrain_row.split("|")[-2]) == pytest.approx(built_g, rel=1e-3)


def test_masked_lm_family_runs_through_the_flow(tmp_path: Path, prefect_harness: None) -> None:
    from pipelines.flows import transfer_learning

    summary = transfer_learning(overrides=tiny_overrides(tmp_path, "model=bert_tiny"))
    client, runs = _runs(tmp_path)
    prep = next(r for r in _children(runs, summary["parent_run_id"]) if r.data.tags["transferlab.stage"] == "prep")
    assert prep.data.params["tokenizer.kind"] == "auto"
    assert (Path(summary["report"]).parent / "report.md").exists()
    tokenizer_json = next(Path(tmp_path, "cache", "prep").glob("*/tokenizer/tokenizer.json")).read_text()
    assert '"WordPiece"' in tokenizer_json


def test_flow_rejects_bad_overrides_before_any_work(tmp_path: Path, prefect_harness: None) -> None:
    from pipelines.flows import transfer_learning

    with pytest.raises(ConfigError, match="no_such_key"):
        transfer_learning(overrides=tiny_overrides(tmp_path, "no_such_key=1"))
    assert not (tmp_path / "mlflow.db").exists()


def test_flow_run_carries_a_summary_artifact_with_metrics_and_the_mlflow_run(
        flow_home: tuple[Path, dict[str, Any]]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    _, summary = flow_home
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["transferlab-summary"])))
    ours = [a.data or "" for a in artifacts if summary["parent_run_id"] in (a.data or "")]
    assert ours, "no transferlab-summary artifact naming the parent run"
    text = ours[0]
    assert "Downstream task" in text  # the evaluate report rides along
    pretrained = summary["headline"]["by_init"]["pretrained"]
    assert f"| pretrained | {pretrained:.4f} |" in text  # the headline metric per init
    assert "| finetune[scratch] |" in text and "![" not in text  # stages table; images stay in MLflow


def test_task_runs_are_named_after_the_stages(flow_home: tuple[Path, dict[str, Any]]) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        names = {t.name for t in client.read_task_runs()}
    assert {"prep", "pretrain", "finetune[pretrained]", "finetune[scratch]", "finetune[tfidf]", "evaluate"} <= names


def test_a_finetune_only_run_logs_each_inits_test_metrics_on_its_parent(flow_home: tuple[Path, dict[str, Any]]) -> None:
    """``transferlab finetune`` (every stage a cache hit here): the parent carries the fine-tunes'
    test metrics keyed by init, as evaluate would, and no bare ``test/accuracy`` a reader could
    take for the run's; ``compare`` shows them so."""
    from pipelines.flows import run_stage
    from pipelines.tracking.compare import runs_by_id

    home, full = flow_home
    summary = run_stage("finetune", tiny_overrides(home))
    assert summary["headline"] == full["headline"]
    client, _ = _runs(home)
    parent = client.get_run(summary["parent_run_id"]).data.metrics
    by_init = summary["headline"]["by_init"]
    assert {init: parent[f"test/accuracy/{init}"] for init in by_init} == by_init
    assert "test/f1_macro/scratch" in parent and "test/accuracy" not in parent
    shown = runs_by_id(f"sqlite:///{home / 'mlflow.db'}", [summary["parent_run_id"], full["parent_run_id"]])
    assert all("test/accuracy" not in r.metrics for r in shown)
    assert shown[0].metrics["test/accuracy/scratch"] == shown[1].metrics["test/accuracy/scratch"]
