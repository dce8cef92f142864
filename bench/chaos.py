"""Chaos: kill -9 a tiny pipeline at 10 random moments spread over all its stages, rerun after each.

Each of the 10 trials starts a run on a fresh state dir and kills it with SIGKILL a random
0-2 s after the first log line of one of 10 moments of the pipeline: start-up (the MLflow
store being created), prep, the MLflow writes after prep, early pretraining, pretraining
past two checkpoints, late pretraining, both fine-tunes, the MLflow writes between them,
and evaluation (log lines rather than wall times: this machine's load moves the stages by
minutes). Then it runs the same command again to completion. A kill is survived when:

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


# (log line that starts the moment, at most this many seconds after it)
MOMENTS = [
    (r"Beginning flow run", 3.0),
    (r"prep: cache miss", 2.0),
    (r"Task run 'prep' - Finished", 1.0),
    (r"pretrain: step \d+ ", 2.0),
    (r"pretrain: step (4\d|5\d) ", 2.0),
    (r"pretrain: step 1[01]\d ", 2.0),
    (r"finetune\[pretrained\]: ", 2.0),
    (r"Task run 'finetune\[pretrained\]' - Finished", 1.0),
    (r"finetune\[scratch\]: ", 2.0),
    (r"transferlab - evaluate: ", 1.0),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10, help="at most 10 (one per moment)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="keep state dirs and logs here")
    args = parser.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="transferlab-chaos-"))
    base.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    moments = rng.sample(MOMENTS, min(args.kills, len(MOMENTS)))
    try:
        survived = 0
        t0 = time.monotonic()
        for i, (line, spread) in enumerate(moments):
            delay = rng.uniform(0.0, spread)
            home = base / f"kill-{i:02d}" / "home"
            result = killing.chaos_trial(home, [*CHAOS, f"paths.home={home}"], home.parent, kill_on=line,
                                         delay_s=delay)
            ok = not result["problems"]
            survived += ok
            print(f"kill {i + 1:2d} {delay:.1f} s after /{line}/ ({result['stage']}): "
                  f"{'survived' if ok else 'FAILED: ' + '; '.join(result['problems'])[:2000]}"
                  f"{' (pretraining resumed)' if result['resumed_pretrain'] else ''}, "
                  f"last process gone {result['gone_s']:.2f} s after the kill", flush=True)
        print(f"kills survived: {survived} / {len(moments)}  ({time.monotonic() - t0:.0f} s)")
        return 0 if survived == len(moments) else 1
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
