"""Time a cached rerun of the default pipeline: what the second `make run` costs.

    .venv/bin/python bench/cached_rerun.py [--home DIR] [--repeats 5] [--up]

Runs ``transferlab run paths.home=DIR`` once to fill the cache (a few minutes; a DIR that
holds it already is a hit too), then ``--repeats`` more times, each a cache hit on every
stage. Prints each rerun's wall seconds and the CPU seconds of its process tree (the CLI,
its temporary Prefect server, codecarbon's probe), then the medians. With ``--up``, a
``transferlab up`` serves the state dir during the reruns, and the CLI reports to it
instead of starting a temporary Prefect server.

On 2 cores the wall time is mostly CPU: a busy machine (another job, a noisy neighbour)
shows up one to one, so quote a median on an idle machine, with the CPU seconds beside it,
and the speed probe printed before and after the reruns (seconds to import the pipeline's
flows in a fresh interpreter, median of 3): on one shared 2-core host the probe read 1.8 s
in a quiet hour and 2.4-3.3 s in a busy one, where the same reruns took 40-60% longer.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cli_env() -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for key in ("PREFECT_HOME", "PREFECT_API_URL", "MLFLOW_TRACKING_URI"):  # the state dir decides them
        env.pop(key, None)
    return env


def timed_run(home: Path, log: Path) -> tuple[float, float]:
    """``transferlab run`` as a user types it: wall seconds and CPU seconds (user + system)
    of the process and every descendant it waited for."""
    exe = Path(sys.executable).with_name("transferlab")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(log, "ab") as out:
        proc = subprocess.run([str(exe), "run", f"paths.home={home}"], env=cli_env(), cwd=REPO,
                              stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        sys.exit(f"transferlab run failed (exit {proc.returncode}); see {log}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def speed_probe() -> float:
    """Seconds to import ``pipelines.flows`` (Prefect, Hydra, the stages) in a fresh
    interpreter, median of 3: how fast this machine is right now, for comparing runs."""
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import pipelines.flows"], cwd=REPO, env=cli_env(), check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def start_up(home: Path, log: Path) -> subprocess.Popen[bytes]:
    """``transferlab up`` on ``home``, once it announces itself (the CLI then finds it)."""
    sys.path.insert(0, str(REPO))
    from pipelines.serve.announce import running_up

    out = open(log, "ab")  # noqa: SIM115 (open for the life of the server)
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "up", f"paths.home={home}"], env=cli_env(),
                            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while running_up(home) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_up(proc)
            sys.exit(f"transferlab up did not come up; see {log}")
        time.sleep(0.5)
    return proc


def stop_up(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", type=Path, help="state dir (default: a new temp dir)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--up", action="store_true", help="time the reruns with `transferlab up` serving the state dir")
    args = ap.parse_args()
    home = (args.home or Path(tempfile.mkdtemp(prefix="transferlab-rerun-"))).resolve()
    home.mkdir(parents=True, exist_ok=True)
    log = home / "bench.log"
    wall, cpu = timed_run(home, log)
    print(f"first run (fills the cache unless {home} held it): {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    probes = [speed_probe()]
    print(f"speed probe: {probes[0]:.2f} s", flush=True)
    up = start_up(home, log) if args.up else None
    walls, cpus = [], []
    try:
        for i in range(args.repeats):
            wall, cpu = timed_run(home, log)
            walls.append(wall)
            cpus.append(cpu)
            print(f"rerun {i + 1}: {wall:.2f} s wall, {cpu:.2f} s CPU", flush=True)
    finally:
        if up is not None:
            stop_up(up)
    probes.append(speed_probe())
    print(f"speed probe: {probes[1]:.2f} s", flush=True)
    server = "`transferlab up`'s server" if args.up else "a temporary Prefect server"
    print(f"cached rerun with {server}: median {statistics.median(walls):.2f} s wall "
          f"(runs: {', '.join(f'{w:.2f}' for w in walls)}), median {statistics.median(cpus):.2f} s CPU, "
          f"{os.cpu_count()} cores, speed probe {probes[0]:.2f} / {probes[1]:.2f} s")


if __name__ == "__main__":
    main()
