"""The end-of-run summary a user reads."""

from __future__ import annotations

import io

from pipelines.cli import build_parser, print_summary


def test_summary_shows_accuracy_gain_carbon_and_store() -> None:
    out = io.StringIO()
    print_summary({
        "until": "evaluate", "wall_s": 12.3, "accuracy": {"pretrained": 0.9, "scratch": 0.4},
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
