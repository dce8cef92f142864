"""The ``transferlab`` command line.

The config is composed and validated before Prefect or torch are imported, so a typo in
an override fails in about a second with one line and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import nullcontext
from typing import Any

from modules.data.errors import DataError
from pipelines.errors import UserError

COMMANDS = {
    "run": "run the whole pipeline: prep, pretrain, finetune (pretrained, scratch, tfidf), evaluate",
    "prep": "prepare data and tokenizer (cached by fingerprint)",
    "pretrain": "pretrain the language model (runs or reuses prep first)",
    "finetune": "fine-tune from the pretrained export and from scratch (runs or reuses upstream stages)",
    "evaluate": "evaluate and write the report (runs or reuses upstream stages)",
    "sweep": "the data_efficiency sweep: pretrain once, fine-tune over label budgets x inits x seeds, report",
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
    text = "compare runs side by side from MLflow: the params that differ and key metrics"
    p = sub.add_parser("compare", help=text, description=text + " (reads MLflow only; starts no Prefect)")
    p.add_argument("targets", nargs="+", metavar="RUN_ID|EXPERIMENT|OVERRIDE",
                   help="two or more run ids, or one MLflow experiment name (its pipeline runs, newest first); "
                        "KEY=VALUE arguments are Hydra overrides naming the store, "
                        "e.g. paths.home=... tracking.uri=...")
    p.add_argument("--max-runs", type=int, default=10, help="at most this many runs of an experiment (default 10)")
    from pipelines.serve.services import DEFAULT_HOST, DEFAULT_MLFLOW_PORT, DEFAULT_PREFECT_PORT

    text = ("local services: a Prefect server and an MLflow server on the state dir, and every flow served as a "
            "deployment to start from the Prefect UI; Ctrl-C stops it all")
    p = sub.add_parser("up", help=text, description=text)
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"interface both servers bind to (default {DEFAULT_HOST}; any other than loopback "
                        "requires logins, see --auth)")
    p.add_argument("--prefect-port", type=int, default=DEFAULT_PREFECT_PORT,
                   help=f"Prefect server port (default {DEFAULT_PREFECT_PORT})")
    p.add_argument("--mlflow-port", type=int, default=DEFAULT_MLFLOW_PORT,
                   help=f"MLflow server port (default {DEFAULT_MLFLOW_PORT})")
    p.add_argument("--auth", action="store_true",
                   help="require logins even on loopback (always on for any other --host): "
                        "PREFECT_SERVER_API_AUTH_STRING=user:password and MLFLOW_AUTH_ADMIN_PASSWORD "
                        "(MLFLOW_AUTH_ADMIN_USERNAME, default admin) from the environment")
    _serve_options(p)
    text = ("serve every flow as a deployment against a running Prefect server (PREFECT_API_URL) and MLflow "
            "(MLFLOW_TRACKING_URI or tracking.uri): the worker of a shared setup")
    _serve_options(sub.add_parser("serve", help=text, description=text))
    _state_commands(sub)
    text = ("label every text of a csv/tsv/jsonl/txt file with a fine-tuned model (docs/serving.md): "
            "a label and a score per row")
    p = sub.add_parser("predict", help=text, description=text)
    p.add_argument("model_uri", metavar="MODEL_URI",
                   help="models:/<name>/<version>, runs:/<run id>/model, or a local fine-tune folder (hf_model/)")
    p.add_argument("input", metavar="INPUT",
                   help="a csv, tsv (with a header), jsonl or txt file, read as data=local_* reads one")
    p.add_argument("--output", metavar="FILE", help="write here (.csv, .tsv or .jsonl) instead of CSV on stdout")
    p.add_argument("--text-column", default="text", help="the column holding the texts: a name or a 0-based "
                                                         "position (default text; txt files: each line)")
    p.add_argument("--batch-size", type=int, help="texts per forward pass (default: 16 on CPU, 64 on a GPU)")
    p.add_argument("--precision", default="auto", help="auto (bf16 where the CPU or GPU runs it natively, else "
                                                       "fp32), bf16 or fp32; seq2seq models served by pyfunc run fp32")
    p.add_argument("overrides", nargs="*", metavar="OVERRIDE", help=STORE_HELP + " and its MLflow store")
    return parser


STORE_HELP = "Hydra overrides naming the state dir, e.g. paths.home=... (default: $TRANSFERLAB_HOME)"


def _state_commands(sub: Any) -> None:
    """``cache list|prune`` and ``doctor``: read the state dir; no Prefect, no torch."""
    text = "list or prune the stage cache ($TRANSFERLAB_HOME/cache): size, age, building run, registered versions"
    cache = sub.add_parser("cache", help=text, description=text)
    actions = cache.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    text = "every cache entry with size, age, stage, the MLflow run that built it, registered versions, live use"
    p = actions.add_parser("list", help=text, description=text)
    p.add_argument("--stage", help="only this stage (prep, pretrain, finetune, init, ...)")
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p.add_argument("overrides", nargs="*", metavar="OVERRIDE", help=STORE_HELP)
    text = ("remove cache entries: a dry run unless --yes; never one a registered model version points at or a "
            "live build uses. Without --older-than/--max-size only leftovers of unfinished builds go")
    p = actions.add_parser("prune", help=text, description=text)
    p.add_argument("--older-than", metavar="AGE", help="complete entries older than this, e.g. 7d, 12h, 2w")
    p.add_argument("--max-size", metavar="SIZE", help="then the oldest while the total exceeds this, e.g. 5G, 500M")
    p.add_argument("--stage", help="only this stage (prep, pretrain, finetune, init, ...)")
    p.add_argument("--orphans-older-than", metavar="AGE", default="1d",
                   help="leftovers (.partial-* with no live lock, .tmp-*, no record.json) older than this (default 1d)")
    p.add_argument("--yes", action="store_true", help="remove them (default: only print what would go)")
    p.add_argument("overrides", nargs="*", metavar="OVERRIDE", help=STORE_HELP)
    text = ("check the state dir: stores that do not open, RUNNING runs with no live process, leftovers of "
            "killed builds; --fix repairs them. Exit 0 healthy, 1 problems found")
    p = sub.add_parser("doctor", help=text, description=text)
    p.add_argument("--fix", action="store_true", help="repair what it finds")
    p.add_argument("--orphans-older-than", metavar="AGE", default="1d",
                   help="report leftovers of builds older than this (default 1d; younger ones may be resumed)")
    p.add_argument("overrides", nargs="*", metavar="OVERRIDE", help=STORE_HELP)


def state_command(args: argparse.Namespace) -> int:
    """``cache`` and ``doctor``: one-line errors and exit 2 on bad usage, like every command."""
    try:
        if args.command == "doctor":
            from pipelines.cache.doctor import doctor_command

            return doctor_command(args.overrides, args.fix, args.orphans_older_than, sys.stdout)
        from pipelines.cache import admin as cache_admin

        if args.cache_command == "list":
            return cache_admin.list_command(args.overrides, args.json, args.stage, sys.stdout, sys.stderr)
        return cache_admin.prune_command(args.overrides, args.older_than, args.max_size, args.stage,
                                         args.orphans_older_than, args.yes, sys.stdout, sys.stderr)
    except UserError as exc:
        print(f"transferlab: error: {exc}", file=sys.stderr)
        return 2


def predict(args: argparse.Namespace) -> int:
    from pipelines.serve.predict import predict_command

    try:
        if args.batch_size is not None and args.batch_size < 1:
            raise UserError(f"bad value for --batch-size: {args.batch_size} (at least 1)")
        return predict_command(args.model_uri, args.input, args.output, args.text_column, args.overrides,
                               args.batch_size, args.precision)
    except (UserError, DataError) as exc:
        print(f"transferlab: error: {exc}", file=sys.stderr)
        return 2


def _serve_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", action="append", default=[], metavar="DIR",
                   help="a directory runs started from the UI may read data/checkpoints from (repeatable; "
                        "the state dir always)")
    p.add_argument("--limit", type=int, default=1,
                   help="flow runs at a time (default 1: runs share this machine's cores; others wait)")
    p.add_argument("--max", action="append", default=[], metavar="KEY=N", dest="max_entries",
                   help="raise or lower a limit on runs started from the UI (repeatable), e.g. --max "
                        "pretrain.max_steps=200000; limits: pretrain.max_steps, finetune.max_epochs, model.parameters, "
                        "model.n_layer/n_embd/n_head/n_inner/max_positions, tokenizer.vocab_size, trainer.devices, "
                        "trainer.num_nodes, sweep.points, sweep.parallel, batch sizes, lengths, data sizes; "
                        "defaults fit this machine (docs/operations.md: UI input is untrusted)")
    p.add_argument("overrides", nargs="*", metavar="OVERRIDE",
                   help="defaults for every served run, applied before the UI's (e.g. trainer=gpu)")


def compare_command(targets: list[str], max_runs: int) -> str:
    """The ``compare`` table as text: run ids or an experiment name, plus store overrides."""
    from pipelines.config.compose import compose
    from pipelines.tracking import compare
    from pipelines.tracking.runs import tracking_uri

    overrides = [t for t in targets if "=" in t]
    names = [t for t in targets if "=" not in t]
    if max_runs < 2:
        raise UserError(f"--max-runs must be at least 2 to compare, got {max_runs}")
    uri = tracking_uri(compose(overrides))
    if len(names) == 1:
        runs = compare.runs_of_experiment(uri, names[0], max_runs)
    else:
        runs = compare.runs_by_id(uri, names)
    return compare.render(compare.compare(runs))


def _fmt_g(kg: float | None) -> str:
    return "missing" if kg is None else f"{kg * 1000:.3g} g"


def print_summary(summary: dict[str, Any], out: Any = None) -> None:
    from pipelines.tracking.publish import pretraining_gain

    w = (out or sys.stdout).write
    w(f"\ntransferlab: {summary['until']} finished in {summary['wall_s']:.1f} s\n")
    headline = summary.get("headline")
    if headline and headline["by_init"]:  # the task's test metric by its own name, each value by its init
        by_init = headline["by_init"]
        parts = "   ".join(f"{init} {'-' if v is None else format(v, '.4f')}" for init, v in by_init.items())
        gain = pretraining_gain(by_init)
        tail = "" if gain is None else f"   ({gain:+.1f} points from pretraining)"
        w(f"  {'test ' + headline['metric']:<15} {parts}{tail}\n")
    if summary.get("inference"):  # what using each trained model costs (docs/serving.md)
        w("  inference       " + " | ".join(
            f"{init} {c['ms_per_example_batch1']:.2f} ms/text, {c['examples_per_sec']:,.0f} texts/s"
            for init, c in summary["inference"].items()) + "   (batch 1; batched)\n")
    w("  CO2e per stage  " + " | ".join(
        f"{s['stage']} {_fmt_g(s['emissions_kg'])}{' (cache hit)' if s['cache_hit'] else ''}"
        for s in summary["stages"]) + "\n")
    if "carbon/emissions_kg" in summary["totals"]:
        w(f"  CO2e total      {_fmt_g(summary['totals']['carbon/emissions_kg'])}\n")
    if summary.get("report"):
        w(f"  report          {summary['report']}\n")
    if summary.get("registered_model"):  # finetune.register_as: the best trained init, servable
        w(f"  serve it        MLFLOW_TRACKING_URI={summary['tracking_uri']} mlflow models serve "
          f"-m {summary['registered_model']['uri']} --env-manager local\n")
    uri = summary["tracking_uri"]
    w(f"  MLflow          {uri}  (experiment '{summary['experiment']}', parent run {summary['parent_run_id']})\n")
    if uri.startswith("sqlite:"):
        w(f"  look at it      transferlab up   (the Prefect and MLflow UIs; or: mlflow ui --backend-store-uri {uri})\n")


def print_sweep_summary(summary: dict[str, Any], out: Any = None) -> None:
    w = (out or sys.stdout).write
    points = summary["points"]
    w(f"\ntransferlab: sweep of {len(points)} fine-tunes finished in {summary['wall_s']:.1f} s "
      f"({summary['cache_hits']} reused from cache, {len(summary['failed'])} failed)\n")
    by_init: dict[str, dict[int, list[float]]] = {}
    for p in points:
        if p["metric"] is not None:
            by_init.setdefault(p["init"], {}).setdefault(p["budget"], []).append(p["metric"])
    for init, curve in by_init.items():
        cells = "  ".join(f"n={b}: {sum(v) / len(v):.4f}" for b, v in sorted(curve.items()))
        w(f"  test {summary['metric']:<10} {init:<12} {cells}\n")
    if summary["failed"]:
        w(f"  failed          {', '.join(summary['failed'])}\n")
    if "carbon/emissions_kg" in summary["totals"]:
        w(f"  CO2e total      {_fmt_g(summary['totals']['carbon/emissions_kg'])}\n")
    w(f"  report          {summary['report']}\n")
    uri = summary["tracking_uri"]
    w(f"  MLflow          {uri}  (experiment '{summary['experiment']}', parent run {summary['parent_run_id']})\n")


def services_command(args: argparse.Namespace) -> int:
    from pipelines.serve import services

    if args.limit < 1:
        print(f"transferlab: error: bad value for --limit: {args.limit} (at least 1)", file=sys.stderr)
        return 2
    try:
        if args.command == "up":
            return services.up(args.overrides, args.host, args.prefect_port, args.mlflow_port, args.data_dir,
                               args.limit, max_entries=args.max_entries, auth=args.auth)
        return services.serve(args.overrides, args.data_dir, args.limit, max_entries=args.max_entries)
    except (UserError, DataError) as exc:
        print(f"transferlab: error: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # ``compare`` and ``predict`` take positionals on both sides of their options; argparse leaves the later ones over.
    if extra and (args.command not in ("compare", "predict") or any(e.startswith("-") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command in ("up", "serve"):
        return services_command(args)
    if args.command in ("cache", "doctor"):  # the state dir only: no Prefect, no torch
        return state_command(args)
    if args.command == "predict":  # the model and the file only: no Prefect
        args.overrides += extra
        return predict(args)
    if args.command == "compare":  # reads MLflow only: no Prefect, no torch
        args.targets += extra
        try:
            sys.stdout.write(compare_command(args.targets, args.max_runs))
        except UserError as exc:
            print(f"transferlab: error: {exc}", file=sys.stderr)
            return 2
        return 0
    try:
        from pipelines.config.compose import compose, to_yaml

        cfg = compose(args.overrides)
        if args.command == "config":
            sys.stdout.write(to_yaml(cfg))
            return 0
        from pipelines.preflight import check_inputs

        check_inputs(cfg, "finetune" if args.command == "sweep" else args.command,
                     sweep=args.command == "sweep" or cfg.sweep.enabled)
        from pipelines.runtime.env import prepare_environment

        prepare_environment(cfg.paths.home)
        from pipelines.runtime.distributed import is_rank_zero

        if is_rank_zero() and not os.environ.get("PREFECT_API_URL"):
            from pipelines.serve.announce import running_up

            url = running_up(cfg.paths.home)  # before Prefect is imported: it reads the URL once
            if url:
                os.environ["PREFECT_API_URL"] = url
                print(f"transferlab: reporting to the Prefect server of `transferlab up` at {url} (this run shows "
                      "live in its UI)", file=sys.stderr)
        if not is_rank_zero():
            # A rank > 0 that a launcher (Lightning's, torchrun, srun) started with the same
            # command: no Prefect flow and no summary; rank 0 owns those.
            import logging

            logging.getLogger("transferlab").setLevel(logging.WARNING)  # rank 0 prints progress once
            from pipelines.flows import run_pipeline

            run_pipeline(cfg, "evaluate" if args.command == "run" else args.command)
            return 0
        server = None
        if argv is None:  # this process's own command line: process-wide signal and child set-up
            from pipelines.runtime import lifecycle

            lifecycle.sigterm_as_interrupt()  # docker stop, SLURM, timeout: a clean stop, as Ctrl-C
            # The temporary Prefect server dies with this process; it starts while the flows import.
            server = lifecycle.start_temporary_server()
        elif not os.environ.get("PREFECT_API_URL"):
            from pipelines.runtime.env import prepare_prefect_db

            prepare_prefect_db()  # before Prefect's own temporary server migrates it, maybe with other runs
        if cfg.carbon.enabled:
            from pipelines.tracking.carbon import warm_up

            warm_up(cfg.carbon)  # codecarbon's hardware probe (a second) runs while the server starts
        from pipelines.flows import run_stage, transfer_learning

        if server is not None:
            from pipelines.tracking.runs import open_store

            open_store(cfg)  # MLflow opens its store (seconds) while the server is still starting
            server.wait_ready()

        with server.flow_settings() if server is not None else nullcontext():
            if args.command == "sweep" or (args.command == "run" and cfg.sweep.enabled):
                from pipelines.sweep import data_efficiency

                summary = data_efficiency(overrides=[*args.overrides, "sweep.enabled=true"])
                print_sweep_summary(summary)
                return _finished(argv)
            if args.command == "run":
                summary = transfer_learning(overrides=args.overrides)
            else:
                summary = run_stage(stage=args.command, overrides=args.overrides)
    except (UserError, DataError) as exc:
        print(f"transferlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("transferlab: interrupted", file=sys.stderr)
        if argv is None:  # this process's own command line (not a test calling main): end it now
            from pipelines.runtime.lifecycle import exit_now

            exit_now(130)
        return 130
    print_summary(summary)
    return _finished(argv)


def _finished(argv: list[str] | None) -> int:
    """A run that ended normally: 0. Run as this process's own command line, the process ends
    here, after its exit handlers, without the interpreter's teardown (1.5 s of a cached rerun)."""
    if argv is None:
        from pipelines.runtime.lifecycle import exit_now

        exit_now(0, finished=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
