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
from pipelines.tracking.compare import Comparison, RunInfo, compare, render, runs_by_id
from pipelines.tracking.runs import TAG_INIT, TAG_KIND, TAG_STAGE, Tracker, tracking_uri

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


# --- Headline numbers name their init (issue 13) -----------------------------------------------------

MINILM = "checkpoint:sentence-transformers/all-MiniLM-L6-v2"


def _finetune_child(tracker: Tracker, parent: str, init: str, metrics: dict[str, float]) -> None:
    """A fine-tune stage run as pipelines.stages.finetune makes it: tagged with its init
    (``checkpoint`` for a checkpoint) and named ``finetune-<init label>``."""
    tag = "checkpoint" if init.startswith("checkpoint:") else init
    child = tracker.start_run(f"finetune-{init}", {TAG_STAGE: "finetune", TAG_INIT: tag}, parent_run_id=parent)
    tracker.log_metrics(child, {**metrics, "carbon/emissions_kg": 1e-6, "val/loss": 9.0})
    tracker.end_run(child)


def _parent(tracker: Tracker, name: str, kind: str, metrics: dict[str, float]) -> str:
    parent = tracker.start_run(name, {TAG_KIND: kind})
    tracker.log_metrics(parent, {"carbon/emissions_kg": 5e-6, **metrics})
    return parent


@pytest.fixture
def uri(tmp_path: Path) -> str:
    return tracking_uri(compose(tiny_overrides(tmp_path / "home")))


def test_a_pipeline_parent_never_shows_a_fine_tunes_metric_under_the_bare_name(uri: str) -> None:
    """The reported bug: the parent has no bare test/accuracy, and the scratch fine-tune's 0.2430
    was shown as the run's accuracy although its pretrained model scored 1.0."""
    tracker = Tracker(uri, EXPERIMENT)
    runs = []
    for name in ("full-a", "full-b"):
        # The evaluate stage's keys on the parent name every init but the checkpoint's (the
        # parent lacks it): that one comes from the fine-tune run, keyed by its run name's label.
        parent = _parent(tracker, name, "pipeline", {"test/accuracy/pretrained": 1.0, "test/accuracy/scratch": 0.243,
                                                     "test/accuracy_gain": 0.757})
        _finetune_child(tracker, parent, "scratch", {"test/accuracy": 0.243, "test/f1_macro": 0.1})
        _finetune_child(tracker, parent, "pretrained", {"test/accuracy": 1.0, "test/f1_macro": 1.0})
        _finetune_child(tracker, parent, MINILM, {"test/accuracy": 0.875, "test/f1_macro": 0.75})
        tracker.end_run(parent)
        runs.append(parent)
    infos = runs_by_id(uri, runs)
    assert sorted(infos[0].inits) == sorted(["scratch", "pretrained", MINILM])
    metrics = infos[0].metrics
    assert "test/accuracy" not in metrics and "test/f1_macro" not in metrics
    assert "val/loss" not in metrics  # a fine-tune's validation loss is not the LM's
    assert metrics["test/accuracy/pretrained"] == 1.0 and metrics["test/accuracy/scratch"] == 0.243
    assert metrics[f"test/accuracy/{MINILM}"] == 0.875
    assert metrics["test/f1_macro/scratch"] == 0.1 and metrics["test/f1_macro/pretrained"] == 1.0
    assert metrics["carbon/emissions_kg"] == 5e-6  # the parent's total, not a fine-tune's
    table = dict(compare(infos).metric_rows)
    assert "test/accuracy" not in table
    assert table["test/accuracy/pretrained"] == ["1.0000", "1.0000"]
    assert table["test/accuracy/scratch"] == ["0.2430", "0.2430"]
    assert table[f"test/accuracy/{MINILM}"] == ["0.8750", "0.8750"]


@pytest.mark.parametrize("metric, others", [
    ("chrf", {"bleu": 0.125, "exact_match": 0.0}),  # seq2seq
    ("entity_f1", {"token_accuracy": 0.75, "entity_f1/PER": 0.5}),  # token classification
])
def test_a_finetune_only_run_shows_each_tasks_headline_per_init(uri: str, metric: str, others: dict,
                                                                 capsys) -> None:
    """``until=finetune`` with three inits, logged before the parent carried per-init keys: the
    values come from the fine-tune runs, each under its init; the task's headline is a key metric."""
    tracker = Tracker(uri, EXPERIMENT)
    scores = {"pretrained": 0.41, "scratch": 0.22, "tfidf": 0.35}
    runs = []
    for name in ("ft-a", "ft-b"):
        parent = _parent(tracker, name, "pipeline", {})
        for init, value in scores.items():
            test_metrics = {f"test/{metric}": value, **{f"test/{k}": v for k, v in others.items()}}
            _finetune_child(tracker, parent, init, test_metrics)
        tracker.end_run(parent)
        runs.append(parent)
    infos = runs_by_id(uri, runs)
    assert f"test/{metric}" not in infos[0].metrics
    assert {init: infos[0].metrics[f"test/{metric}/{init}"] for init in scores} == scores
    table = dict(compare(infos).metric_rows)
    assert [k for k in table if k.startswith("test/")] == [f"test/{metric}/{init}" for init in sorted(scores)]
    assert table[f"test/{metric}/tfidf"] == ["0.3500", "0.3500"]
    assert f"test/{metric}/PER/pretrained" not in table  # per-type scores stay in MLflow
    assert main(["compare", *runs, f"paths.home={Path(uri.removeprefix('sqlite:///')).parent}"]) == 0
    out = capsys.readouterr().out
    assert _rows(out, f"test/{metric}/scratch")[0].split()[1:] == ["0.2200", "0.2200"]
    assert not _rows(out, f"test/{metric}")


def test_a_sweep_parent_takes_no_fine_tune_metric(uri: str) -> None:
    """A sweep has many fine-tunes per init (budgets, seeds): none of them is the sweep's figure."""
    tracker = Tracker(uri, EXPERIMENT)
    runs = []
    for name in ("sweep-a", "sweep-b"):
        parent = _parent(tracker, name, "sweep", {})
        pretrain = tracker.start_run("pretrain", {TAG_STAGE: "pretrain"}, parent_run_id=parent)
        tracker.log_metrics(pretrain, {"val/loss": 3.5})
        tracker.end_run(pretrain)
        for value in (0.25, 0.75):
            _finetune_child(tracker, parent, "scratch", {"test/accuracy": value})
        tracker.end_run(parent)
        runs.append(parent)
    info = runs_by_id(uri, runs)[0]
    assert not [k for k in info.metrics if k.startswith("test/")]
    assert info.metrics["val/loss"] == 3.5 and info.metrics["carbon/emissions_kg"] == 5e-6
