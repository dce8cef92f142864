"""``transferlab compare``: the differing params and key metrics of runs, read from MLflow.

The runs are made directly with ``Tracker`` (two composed configs that differ in seed and
pretrain.lr), shaped like real pipeline runs: a parent tagged ``pipeline`` with the totals
and test metrics, and an evaluate child holding the LM metrics.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_overrides

from pipelines.cli import main
from pipelines.config.compose import compose, flatten
from pipelines.tracking.compare import Comparison, RunInfo, compare, render
from pipelines.tracking.runs import TAG_KIND, TAG_STAGE, Tracker, tracking_uri

EXPERIMENT = "transferlab"


def _pipeline_run(tracker: Tracker, cfg: dict, name: str, acc: float, with_carbon: bool = True) -> str:
    parent = tracker.start_run(name, {TAG_KIND: "pipeline"})
    tracker.log_config(parent, cfg)
    metrics = {"test/accuracy/pretrained": acc, "test/accuracy/scratch": 0.5, "test/accuracy_gain": acc - 0.5}
    if with_carbon:
        metrics["carbon/emissions_kg"] = 2.5e-6
    tracker.log_metrics(parent, metrics)
    child = tracker.start_run("evaluate", {TAG_STAGE: "evaluate"}, parent_run_id=parent)
    tracker.log_metrics(child, {"val/loss": 3.25, "val/perplexity": 25.8, "test/accuracy/pretrained": 0.0})
    tracker.end_run(child)
    tracker.end_run(parent)
    return parent


@pytest.fixture
def store(tmp_path: Path) -> dict:
    """Two pipeline runs (seed 1 / lr 1e-3 and seed 2 / lr 5e-4) and one non-pipeline run."""
    home = tmp_path / "home"
    cfg_a = compose(tiny_overrides(home, "seed=1", "pretrain.lr=0.001"))
    cfg_b = compose(tiny_overrides(home, "seed=2", "pretrain.lr=0.0005"))
    tracker = Tracker(tracking_uri(cfg_a), EXPERIMENT)
    a = _pipeline_run(tracker, cfg_a, "quickstart-a", 0.875)
    b = _pipeline_run(tracker, cfg_b, "quickstart-b", 0.625, with_carbon=False)
    stray = tracker.start_run("not-a-pipeline", {TAG_STAGE: "prep"})
    tracker.end_run(stray)
    n_params = len(flatten(cfg_a))
    return {"home": home, "a": a, "b": b, "n_params": n_params, "store": f"paths.home={home}"}


def _rows(text: str, label: str) -> list[str]:
    return [line for line in text.splitlines() if line.split() and line.split()[0] == label]


def test_compare_run_ids_shows_only_differing_params_and_metrics(store: dict, capsys) -> None:
    assert main(["compare", store["a"], store["b"], store["store"]]) == 0
    out = capsys.readouterr().out
    assert max(map(len, out.splitlines())) <= 100
    assert store["a"][:8] in _rows(out, "run")[0] and store["b"][:8] in _rows(out, "run")[0]
    assert "quickstart-a" in out and "quickstart-b" in out
    param_lines = out.split("metrics")[0].splitlines()[3:]  # after run, name and the rule
    keys = {line.split()[0] for line in param_lines if line.strip()}
    assert keys == {"seed", "pretrain.lr"}
    assert _rows(out, "seed")[0].split()[1:] == ["1", "2"]
    assert _rows(out, "pretrain.lr")[0].split()[1:] == ["0.001", "0.0005"]
    assert f"2 params differ, {store['n_params'] - 2} identical" in out
    # Parent metrics win over a child's; the LM metrics come from the evaluate child.
    assert _rows(out, "test/accuracy/pretrained")[0].split()[1:] == ["0.8750", "0.6250"]
    assert _rows(out, "test/accuracy_gain")[0].split()[1:] == ["0.3750", "0.1250"]
    assert _rows(out, "val/perplexity")[0].split()[1:] == ["25.8", "25.8"]
    assert _rows(out, "carbon/emissions_kg")[0].split()[1:] == ["2.500e-06", "-"]
    assert not _rows(out, "train/tokens_per_sec")  # logged by neither run: no row


def test_compare_experiment_name_takes_pipeline_runs_newest_first(store: dict, capsys) -> None:
    assert main(["compare", EXPERIMENT, store["store"]]) == 0
    out = capsys.readouterr().out
    assert _rows(out, "run")[0].split()[1:] == [store["b"][:8], store["a"][:8]]  # the stray run is left out
    assert _rows(out, "seed")[0].split()[1:] == ["2", "1"]
    assert main(["compare", EXPERIMENT, "--max-runs", "1", store["store"]]) == 2
    assert "at least 2" in capsys.readouterr().err


@pytest.mark.parametrize("case, expected", [
    ("unknown_id", "unknown run id 'deadbeef'"),
    ("unknown_experiment", "no MLflow experiment named 'nope'"),
    ("one_run_id", "need at least two runs"),
    ("no_pipeline_runs", "has no pipeline runs"),
    ("no_store", "no MLflow store at"),
])
def test_compare_errors_are_one_line_exit_2(store: dict, case: str, expected: str, tmp_path: Path,
                                            capsys) -> None:
    if case == "no_pipeline_runs":
        Tracker(tracking_uri(compose(tiny_overrides(store["home"]))), "empty")
    argv = {
        "unknown_id": [store["a"], "deadbeef"],
        "unknown_experiment": ["nope"],
        "one_run_id": [store["a"]],
        "no_pipeline_runs": ["empty"],
        "no_store": [EXPERIMENT, f"paths.home={tmp_path / 'elsewhere'}"],
    }[case]
    if case != "no_store":
        argv.append(store["store"])
    assert main(["compare", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("transferlab: error: ") and expected in lines[0]
    assert not (tmp_path / "elsewhere").exists()  # a bad store path is not created


def test_compare_does_not_import_prefect_or_torch(store: dict) -> None:
    # A fresh interpreter: this session has imported both already (popping torch from
    # sys.modules and importing it again is not safe).
    code = ("import sys; from pipelines.cli import main; "
            f"rc = main(['compare', {store['a']!r}, {store['b']!r}, {store['store']!r}]); "
            "bad = sorted({m.split('.')[0] for m in sys.modules} & {'prefect', 'torch', 'lightning'}); "
            "print('RC', rc, 'HEAVY', bad)")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert "RC 0 HEAVY []" in done.stdout, done.stdout + done.stderr


def test_render_fits_the_width_with_many_runs_and_long_values() -> None:
    runs = [RunInfo(f"{i:032x}", f"run-with-a-rather-long-name-{i}", {"model.path": "/very/long/" * 10 + str(i)},
                    {"val/loss": float(i)}) for i in range(10)]
    comp = compare(runs)
    text = render(comp)
    assert max(map(len, text.splitlines())) <= 100
    assert "..." in text
    assert all(f"{i:032x}"[:8] in text for i in range(10))  # every run, in blocks
    assert len(_rows(text, "val/loss")) > 1
    with pytest.raises(Exception, match="at least two runs"):
        compare(runs[:1])
    assert isinstance(comp, Comparison) and [k for k, _ in comp.param_rows] == ["model.path"]
