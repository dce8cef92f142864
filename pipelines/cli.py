"""The ``transferlab`` command line.

The config is composed and validated before Prefect or torch are imported, so a typo in
an override fails in about a second with one line and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from modules.data.errors import DataError
from pipelines.errors import UserError

COMMANDS = {
    "run": "run the whole pipeline: prep, pretrain, finetune (pretrained and scratch), evaluate",
    "prep": "prepare data and tokenizer (cached by fingerprint)",
    "pretrain": "pretrain the language model (runs or reuses prep first)",
    "finetune": "fine-tune from the pretrained export and from scratch (runs or reuses upstream stages)",
    "evaluate": "evaluate and write the report (runs or reuses upstream stages)",
    "config": "print the composed, validated config and exit",
}
OVERRIDE_HELP = "Hydra overrides, e.g. model=bert_tiny pretrain.max_steps=200 seed=1"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transferlab",
        description="Pretrain once, fine-tune many: a tracked transfer-learning pipeline.",
        epilog="State (MLflow store, cache, Prefect home) lives in $TRANSFERLAB_HOME (default ./.transferlab).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("overrides", nargs="*", metavar="OVERRIDE", help=OVERRIDE_HELP)
    return parser


def _fmt_g(kg: float | None) -> str:
    return "missing" if kg is None else f"{kg * 1000:.3g} g"


def print_summary(summary: dict[str, Any], out=sys.stdout) -> None:
    w = out.write
    w(f"\ntransferlab: {summary['until']} finished in {summary['wall_s']:.1f} s\n")
    acc = summary.get("accuracy") or {}
    if acc:
        parts = "   ".join(f"{k} {v:.4f}" for k, v in acc.items() if v is not None)
        gain = ""
        if acc.get("pretrained") is not None and acc.get("scratch") is not None:
            gain = f"   ({(acc['pretrained'] - acc['scratch']) * 100:+.1f} points from pretraining)"
        w(f"  test accuracy   {parts}{gain}\n")
    w("  CO2e per stage  " + " | ".join(
        f"{s['stage']} {_fmt_g(s['emissions_kg'])}{' (cache hit)' if s['cache_hit'] else ''}"
        for s in summary["stages"]) + "\n")
    if "carbon/emissions_kg" in summary["totals"]:
        w(f"  CO2e total      {_fmt_g(summary['totals']['carbon/emissions_kg'])}\n")
    if summary.get("report"):
        w(f"  report          {summary['report']}\n")
    uri = summary["tracking_uri"]
    w(f"  MLflow          {uri}  (experiment '{summary['experiment']}', parent run {summary['parent_run_id']})\n")
    if uri.startswith("sqlite:"):
        w(f"  look at it      mlflow ui --backend-store-uri {uri}\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from pipelines.config import compose, to_yaml

        cfg = compose(args.overrides)
        if args.command == "config":
            sys.stdout.write(to_yaml(cfg))
            return 0
        from pipelines.preflight import check_inputs

        check_inputs(cfg, args.command)
        from pipelines.runtime import prepare_environment

        prepare_environment(cfg)
        from pipelines.distributed import is_rank_zero

        if not is_rank_zero():
            # A rank > 0 that a launcher (Lightning's, torchrun, srun) started with the same
            # command: no Prefect flow and no summary; rank 0 owns those.
            import logging

            logging.getLogger("transferlab").setLevel(logging.WARNING)  # rank 0 prints progress once
            from pipelines.flows import run_pipeline

            run_pipeline(cfg, "evaluate" if args.command == "run" else args.command)
            return 0
        from pipelines.flows import run_stage, transfer_learning

        if args.command == "run":
            summary = transfer_learning(overrides=args.overrides)
        else:
            summary = run_stage(stage=args.command, overrides=args.overrides)
    except (UserError, DataError) as exc:
        print(f"transferlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("transferlab: interrupted", file=sys.stderr)
        return 130
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
