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
