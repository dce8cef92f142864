"""Chaos: kill -9 a tiny pipeline at N moments spread over all its stages, rerun after each.

One uninterrupted run on a fresh state dir measures the pipeline's duration T. Then, for
each of N trials, a run on a fresh state dir is killed with SIGKILL at a moment drawn
uniformly from the i-th of N equal slices of [0, T) (stratified, so the kills cover
start-up, prep, pretraining, both fine-tunes, evaluation and the MLflow writes between
them), and run again to completion. A kill is survived when:

- no process of the killed run (CLI, Prefect's temporary server, workers) outlives it by 30 s;
- the rerun exits 0 and leaves no process behind;
- every stage finished before the kill is reused, not recomputed (its cache record unchanged);
- a killed pretraining resumes into its own MLflow run;
- no MLflow run is RUNNING and no Prefect flow run Running/Pending at the end.

Usage:  .venv/bin/python bench/chaos.py [--kills 10] [--seed 0] [--keep DIR]
Prints one line per kill and ``kills survived: K / N``.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO)]

import killing  # noqa: E402  (tests/killing.py: the harness the slow test uses too)
from conftest import TINY  # noqa: E402

# Pretraining long enough to span several checkpoints (every 20 of 120 steps).
CHAOS = [*TINY, "pretrain.max_steps=120", "pretrain.checkpoint_every_n_steps=20", "pretrain.val_every_n_steps=20"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="keep state dirs and logs here")
    args = parser.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="transferlab-chaos-"))
    base.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    try:
        ref = base / "reference"
        t0 = time.monotonic()
        proc = killing.start(ref / "home", [*CHAOS, f"paths.home={ref / 'home'}"], _log(ref))
        if proc.wait() != 0:
            sys.exit(f"the uninterrupted run failed; see {ref / 'run.log'}")
        duration = time.monotonic() - t0
        print(f"uninterrupted run: {duration:.1f} s", flush=True)
        survived = 0
        for i in range(args.kills):
            at = (i + rng.random()) / args.kills * duration
            home = base / f"kill-{i:02d}" / "home"
            result = killing.chaos_trial(home, [*CHAOS, f"paths.home={home}"], home.parent, kill_after_s=at)
            ok = not result["problems"]
            survived += ok
            print(f"kill {i + 1:2d} at {at:5.1f} s ({result['stage']}): "
                  f"{'survived' if ok else 'FAILED: ' + '; '.join(result['problems'])}"
                  f"{' (pretraining resumed)' if result['resumed_pretrain'] else ''}, "
                  f"last process gone {result['gone_s']:.2f} s after the kill", flush=True)
        print(f"kills survived: {survived} / {args.kills}")
        return 0 if survived == args.kills else 1
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)


def _log(run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir / "run.log"


if __name__ == "__main__":
    sys.exit(main())
