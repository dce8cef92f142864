"""Browser check of the web UIs: a Prefect custom run with an override, then its metric in MLflow.

Drives Debian's headless chromium through Playwright (tests/browser.py holds the UI steps)
against a real `transferlab up` (tiny config, free ports, state in tmp_path): the custom run
is the real pipeline, and the metric the MLflow UI must show is read back through the API.
The experiment link `up` prints (also in the run's summary) must open MLflow's runs table
with the pipeline's parent run, not MLflow 3.17's GenAI overview.

Screenshots go to $TRANSFERLAB_TEST_ARTIFACTS (default <repo>/test-artifacts/); with
TRANSFERLAB_UPDATE_DOCS=1 the served pipeline is the built-in default (a few minutes, real
numbers) and the screenshots are also copied to docs/ for the README and docs/operations.md.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from mlflow.entities import Run

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # tests/ is not a package

from browser import (  # noqa: E402
    UiStepError,
    launch_browser,
    mlflow_runs_table,
    mlflow_show_metric,
    new_page,
    prefect_custom_run,
)
from stack import TransferlabUp  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.browser]

# The docs screenshots show the default pipeline at its usual quality (another seed of it).
OVERRIDE = "seed=1" if os.environ.get("TRANSFERLAB_UPDATE_DOCS") == "1" else "finetune.max_epochs=2"
START_TIMEOUT_S = 300.0
RUN_TIMEOUT_S = 1200.0 if os.environ.get("TRANSFERLAB_UPDATE_DOCS") == "1" else 600.0
"""Bound on the flow run (a tiny full pipeline: ~25 s alone on 2 cores)."""


@dataclass(frozen=True)
class UiStack:
    """Where the two UIs answer (no trailing slash)."""

    prefect_url: str
    mlflow_url: str
    runs_link: str
    """The link to the experiment's runs table that `up` printed."""
    logs: tuple[Path, ...] = ()
    """Server logs, whose tails a failing UI step appends to its message."""

    @property
    def prefect_api(self) -> str:
        return self.prefect_url + "/api"


@pytest.fixture
def ui_stack(tmp_path: Path) -> Iterator[UiStack]:
    """A real `transferlab up` (tests/stack.py): free ports, state in tmp_path, stopped with Ctrl-C.

    Served with the tiny config as its overrides, or the built-in default when the run is
    for the README's screenshots.
    """
    from conftest import TINY

    served = [] if os.environ.get("TRANSFERLAB_UPDATE_DOCS") == "1" else TINY
    log = tmp_path / "up.log"
    with TransferlabUp(tmp_path / "home", served, log, timeout=START_TIMEOUT_S) as up:
        printed = re.search(r"runs of experiment transferlab: (\S+)", up.output())
        assert printed, up.output()[-2000:]
        yield UiStack(up.prefect_url, up.mlflow_url, printed.group(1), logs=(log,))
        assert up.interrupt() == 0, up.output()[-2000:]  # Ctrl-C stops it cleanly


def _artifacts_dir() -> Path:
    path = Path(os.environ.get("TRANSFERLAB_TEST_ARTIFACTS", REPO / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _newest_pipeline_run(mlflow_url: str, experiment: str) -> tuple[Run, Run]:
    """(parent, fine-tune child with init=pretrained) of the newest pipeline run, via the API.

    Selected by the DESIGN's tags, not by run names, which the UI test then clicks by.
    """
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_url)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    parents = client.search_runs(
        [exp.experiment_id],
        filter_string="tags.`transferlab.kind` = 'pipeline'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    assert parents, "no pipeline run in MLflow"
    parent = parents[0]
    children = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' "
        "and tags.`transferlab.stage` = 'finetune' and tags.`transferlab.init` = 'pretrained'",
    )
    assert children, "pipeline run has no fine-tune child with init=pretrained"
    return parent, children[0]


def test_custom_run_in_prefect_ui_then_metric_in_mlflow_ui(ui_stack: UiStack) -> None:
    from playwright.sync_api import sync_playwright

    shots = _artifacts_dir()
    prefect_shot, mlflow_shot = shots / "prefect_ui_run.png", shots / "mlflow_ui_run.png"
    runs_shot = shots / "mlflow_ui_runs.png"
    timings: dict[str, float] = {}
    with sync_playwright() as playwright:
        browser = launch_browser(playwright)
        try:
            start = time.monotonic()
            try:
                run_id = prefect_custom_run(
                    new_page(browser),
                    ui_stack.prefect_url,
                    [OVERRIDE],
                    timeout_s=RUN_TIMEOUT_S,
                    screenshot=prefect_shot,
                )
            except UiStepError as exc:
                tails = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in ui_stack.logs)
                pytest.fail(f"{exc}\n{tails}")
            timings["prefect"] = time.monotonic() - start

            # The click path, not just a page load: the run got the override from the form.
            flow_run = httpx.get(f"{ui_stack.prefect_api}/flow_runs/{run_id}", timeout=30).json()
            assert flow_run["parameters"]["overrides"] == [OVERRIDE]
            assert flow_run["state"]["type"] == "COMPLETED"

            parent, child = _newest_pipeline_run(ui_stack.mlflow_url, "transferlab")
            # The override reached the pipeline's resolved config, not just the Prefect run.
            key, value = OVERRIDE.split("=")
            assert parent.data.params[key] == value
            accuracy = child.data.metrics["test/accuracy"]
            start = time.monotonic()
            shown = mlflow_show_metric(
                new_page(browser),
                ui_stack.mlflow_url,
                child.info.run_name,
                parent_run_name=parent.info.run_name,
                screenshot=mlflow_shot,
            )
            timings["mlflow"] = time.monotonic() - start

            # The link a newcomer gets (from `up` and the run's summary) opens the runs table in
            # MLflow's model-training layout, not 3.17's GenAI overview; a fresh page has no
            # stored workflow type, as a first visit.
            artifact = httpx.post(f"{ui_stack.prefect_api}/artifacts/filter", timeout=30, json={
                "artifacts": {"flow_run_id": {"any_": [run_id]}, "key": {"any_": ["transferlab-summary"]}}}).json()
            assert artifact and ui_stack.runs_link in artifact[0]["data"], (ui_stack.runs_link, artifact)
            start = time.monotonic()
            landed = mlflow_runs_table(new_page(browser), ui_stack.runs_link, parent.info.run_name,
                                       child.info.run_name, screenshot=runs_shot)
            timings["mlflow_runs"] = time.monotonic() - start
        finally:
            browser.close()
    assert float(shown) == pytest.approx(accuracy, abs=1e-3), (shown, accuracy)
    assert prefect_shot.stat().st_size > 10_000 and mlflow_shot.stat().st_size > 10_000
    assert "/runs?" in landed and "workflowType=machine_learning" in landed, landed
    assert runs_shot.stat().st_size > 10_000
    print(f"UI step timings: {timings}")
    if os.environ.get("TRANSFERLAB_UPDATE_DOCS") == "1":
        # The completed run with its stage graph and summary artifact reads best in the README.
        shutil.copyfile(prefect_shot.with_name("prefect_ui_run_summary.png"), REPO / "docs" / "prefect_ui_run.png")
        shutil.copyfile(mlflow_shot, REPO / "docs" / "mlflow_ui_run.png")
        shutil.copyfile(runs_shot, REPO / "docs" / "mlflow_ui_runs.png")
