"""Several ``transferlab run`` at once on one fresh state dir, against one run alone.

    .venv/bin/python bench/concurrent_runs.py --tiny            # the test suite's tiny config
    .venv/bin/python bench/concurrent_runs.py --seeds 0 0 1 2   # the built-in default

Starts one run alone on a fresh state dir (the reference wall time), then the given seeds
together on another fresh state dir, as users on one machine would, and prints: wall
times, failures, MLflow runs left RUNNING, and the cache hits (outputs another run built;
"waited" counts the stages that waited for the run building them).
"""

from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parent.parent


def tiny() -> list[str]:
    """``TINY`` from tests/conftest.py, read without importing it (it sets test env vars)."""
    tree = ast.parse((REPO / "tests" / "conftest.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "TINY" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise SystemExit("TINY not found in tests/conftest.py")


def run_together(home: Path, seeds: list[int], overrides: list[str], logs: Path) -> tuple[float, list[int]]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("PREFECT_HOME", None)
    logs.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    procs = []
    for i, seed in enumerate(seeds):
        cmd = [sys.executable, "-m", "pipelines.cli", "run", *overrides, f"paths.home={home}", f"seed={seed}"]
        with open(logs / f"run{i}-seed{seed}.log", "wb") as log:
            procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
    codes = [p.wait() for p in procs]
    return time.perf_counter() - t0, codes


def figures(home: Path) -> dict[str, int]:
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=5000)
    tags = [r.data.tags for r in runs]
    return {"pipelines": sum(t.get("transferlab.kind") == "pipeline" for t in tags),
            "hits": sum(t.get("transferlab.cache") == "hit" for t in tags),
            "waited": sum("transferlab.cache_waited_s" in t for t in tags),
            "running": sum(r.info.status == "RUNNING" for r in runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 0, 1, 2])
    parser.add_argument("--tiny", action="store_true", help="the test suite's tiny config (tests/conftest.py)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    overrides = [*(tiny() if args.tiny else []), *args.overrides]
    with tempfile.TemporaryDirectory(prefix="transferlab-concurrency-") as tmp:
        root = Path(tmp)
        alone_s, (alone_rc,) = run_together(root / "alone", args.seeds[:1], overrides, root / "logs-alone")
        print(f"1 run alone (seed {args.seeds[0]}): {alone_s:.0f} s, exit {alone_rc}", flush=True)
        together_s, codes = run_together(root / "together", args.seeds, overrides, root / "logs-together")
        failed = sum(c != 0 for c in codes)
        f = figures(root / "together")
        print(f"{len(args.seeds)} runs at once (seeds {' '.join(map(str, args.seeds))}): {together_s:.0f} s "
              f"({together_s / alone_s:.2f}x one run alone), failures {failed}, exit codes {codes}")
        print(f"  MLflow: {f['pipelines']} pipeline runs, {f['hits']} stage cache hits ({f['waited']} waited for "
              f"the run building them), {f['running']} runs left RUNNING")
        if failed or alone_rc:
            for log in sorted((root / "logs-together").glob("*.log")):
                print(f"--- {log.name} ---\n{log.read_text(errors='replace')[-3000:]}")
            sys.exit(1)


if __name__ == "__main__":
    main()
