"""The end-of-run summary a user reads."""

from __future__ import annotations

import io

from pipelines.cli import build_parser, print_summary


def test_summary_shows_accuracy_gain_carbon_and_store() -> None:
    out = io.StringIO()
    print_summary({
        "until": "evaluate", "wall_s": 12.3,
        "headline": {"metric": "accuracy", "by_init": {"pretrained": 0.9, "scratch": 0.4}},
        "stages": [{"stage": "prep", "cache_hit": True, "emissions_kg": 1e-6},
                   {"stage": "pretrain", "cache_hit": False, "emissions_kg": None}],
        "totals": {}, "report": "/x/report.md", "tracking_uri": "sqlite:////x/mlflow.db",
        "experiment": "transferlab", "parent_run_id": "abc",
    }, out)
    text = out.getvalue()
    assert "pretrained 0.9000" in text and "scratch 0.4000" in text and "+50.0 points" in text
    assert "prep 0.001 g (cache hit)" in text
    assert "pretrain missing" in text  # a missing carbon figure is not printed as zero
    assert "mlflow ui --backend-store-uri sqlite:////x/mlflow.db" in text


def test_summary_shows_what_using_each_trained_model_costs() -> None:
    out = io.StringIO()
    summary = _summary("accuracy", {"pretrained": 0.9, "tfidf": 0.8})
    summary["inference"] = {"pretrained": {"ms_per_example_batch1": 3.456, "examples_per_sec": 1234.4}}
    print_summary(summary, out)
    line = next(ln for ln in out.getvalue().splitlines() if ln.strip().startswith("inference"))
    assert line.split() == ["inference", "pretrained", "3.46", "ms/text,", "1,234", "texts/s", "(batch", "1;",
                            "batched)"]
    out = io.StringIO()
    print_summary(_summary("accuracy", {"tfidf": 0.8}), out)  # nothing timed: no line
    assert "inference" not in out.getvalue()


def _summary(metric: str, by_init: dict) -> dict:
    return {"until": "evaluate", "wall_s": 1.0, "headline": {"metric": metric, "by_init": by_init},
            "stages": [{"stage": "prep", "cache_hit": False, "emissions_kg": 1e-6, "energy_kwh": 2e-6,
                        "duration_s": 1.0}],
            "totals": {}, "tracking_uri": "sqlite:////x/mlflow.db", "experiment": "transferlab", "parent_run_id": "abc"}


def test_summary_names_the_tasks_metric_and_every_init() -> None:
    """A seq2seq run's headline is chrF: printed as such, each value next to its init (any init name)."""
    out = io.StringIO()
    print_summary(_summary("chrf", {"pretrained": 0.41, "scratch": 0.22, "tfidf": 0.35, "broken": None}), out)
    line = next(ln for ln in out.getvalue().splitlines() if ln.strip().startswith("test "))
    assert line.split() == ["test", "chrf", "pretrained", "0.4100", "scratch", "0.2200", "tfidf", "0.3500",
                            "broken", "-", "(+19.0", "points", "from", "pretraining)"]
    assert "accuracy" not in out.getvalue()
    out = io.StringIO()
    print_summary(_summary("entity_f1", {"tfidf": 0.5}), out)  # no pretrained/scratch pair: no gain
    assert "  test entity_f1  tfidf 0.5000\n" in out.getvalue() and "points" not in out.getvalue()


def test_prefect_summary_labels_the_metric_by_name_and_each_value_by_init() -> None:
    from pipelines.tracking.publish import pipeline_markdown

    text = pipeline_markdown(_summary("entity_f1", {"pretrained": 0.8, "scratch": 0.3, "tfidf": 0.6}), "LINK")
    assert "| init | test entity_f1 |" in text
    assert "| pretrained | 0.8000 |" in text and "| scratch | 0.3000 |" in text and "| tfidf | 0.6000 |" in text
    assert "Pretraining changed test entity_f1 by **+50.0 points** over scratch." in text
    assert "accuracy" not in text


def test_flow_headline_takes_the_tasks_metric_from_each_fine_tune() -> None:
    from types import SimpleNamespace

    from pipelines.flows import headline, per_init_test_metrics

    tuned = [SimpleNamespace(init=init, metrics={"test/chrf": chrf, "test/bleu": 0.1, "val/loss": 2.0})
             for init, chrf in (("pretrained", 0.41), ("tfidf", 0.35))]
    assert headline("seq2seq", tuned) == {"metric": "chrf", "by_init": {"pretrained": 0.41, "tfidf": 0.35}}
    assert headline("token_classification", tuned)["metric"] == "entity_f1"
    assert per_init_test_metrics(tuned) == {"test/chrf/pretrained": 0.41, "test/bleu/pretrained": 0.1,
                                            "test/chrf/tfidf": 0.35, "test/bleu/tfidf": 0.1}

def test_every_design_command_exists() -> None:
    parser = build_parser()
    for cmd in ("run", "prep", "pretrain", "finetune", "evaluate", "config"):
        args = parser.parse_args([cmd, "seed=1"])
        assert args.command == cmd and args.overrides == ["seed=1"]


def test_sweep_and_run_experiment_data_efficiency_start_the_sweep_flow(tmp_path, monkeypatch, capsys) -> None:
    import pipelines.sweep
    from pipelines.cli import main

    calls: list[list[str]] = []

    def fake_flow(overrides: list[str]) -> dict:
        calls.append(overrides)
        return {"points": [{"init": "pretrained", "budget": 16, "seed": 0, "metric": 0.5}], "failed": [],
                "cache_hits": 0, "wall_s": 1.0, "metric": "accuracy", "totals": {}, "report": "/r.md",
                "tracking_uri": "sqlite:////x", "experiment": "transferlab", "parent_run_id": "p"}

    monkeypatch.setattr(pipelines.sweep, "data_efficiency", fake_flow)
    home = f"paths.home={tmp_path}"
    assert main(["sweep", home]) == 0
    assert main(["run", "experiment=data_efficiency", home]) == 0
    assert len(calls) == 2 and all("sweep.enabled=true" in c for c in calls)
    out = capsys.readouterr().out
    assert "sweep of 1 fine-tunes" in out and "pretrained" in out and "n=16: 0.5000" in out
    assert main(["sweep", home, "sweep.budgets=[0]"]) == 2  # bad input: one line, exit 2, no flow
    assert len(calls) == 2
