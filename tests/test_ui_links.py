"""The links transferlab hands out open MLflow's runs table (model training), not its GenAI pages.

The browser check of the same is tests/test_browser.py (slow); these pin the link and tag
logic, and that the installed MLflow UI still reads the query parameters and tag they use.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from pipelines.tracking import ui_links

_MLFLOW_JS = Path(__import__("mlflow").__file__).parent / "server" / "js" / "build" / "static" / "js"


def _query(url: str) -> tuple[str, dict[str, list[str]]]:
    """(route inside the hash, query) of an MLflow UI link: its router lives after ``#``."""
    fragment = urlsplit(url).fragment
    route, _, query = fragment.partition("?")
    return route, parse_qs(query)


def test_experiment_link_opens_the_runs_tab_in_the_model_training_layout_with_transferlabs_view() -> None:
    url = ui_links.experiment_url("http://127.0.0.1:5000/", "7")
    assert url.startswith("http://127.0.0.1:5000/#/")
    route, query = _query(url)
    assert route == "/experiments/7/runs"  # the tab itself: a bare /experiments/7 redirects by workflow type
    assert query == {"workflowType": ["machine_learning"], "viewStateShareKey": [ui_links.VIEW_KEY]}


def test_run_link_opens_the_run_in_the_model_training_layout() -> None:
    route, query = _query(ui_links.run_url("http://h:5000", "7", "abc123"))
    assert route == "/experiments/7/runs/abc123"
    assert query == {"workflowType": ["machine_learning"]}


def test_saved_view_is_mlflows_envelope_with_the_pipelines_stage_and_metric_columns() -> None:
    from modules.tasks import HEADLINE

    key, value = ui_links.runs_view_tag(now_ms=1_700_000_000_000)
    assert key == "mlflow.sharedViewState." + ui_links.VIEW_KEY
    envelope = json.loads(value)  # what MLflow 3.17's saved-view parser checks, field by field
    assert isinstance(envelope["name"], str) and envelope["createdAt"] == 1_700_000_000_000
    assert isinstance(envelope["state"], str) and not envelope["state"].startswith("deflate;")
    state = json.loads(envelope["state"])
    # Only keys the runs tab restores from a view (search facets and UI state).
    assert set(state) <= {"searchFilter", "orderByKey", "orderByAsc", "startTime", "lifecycleFilter",
                          "modelVersionFilter", "datasetsFilter", "selectedColumns", "columnOrder",
                          "columnWidths", "groupBy"}
    columns = state["selectedColumns"]
    assert "metrics.`carbon/emissions_kg`" in columns
    assert state["columnOrder"] == columns and set(state["columnWidths"]) == set(columns)  # widths need the order
    for metric in HEADLINE.values():  # every task's headline: a fine-tune's, per init and the gain on the parent
        assert {f"metrics.`test/{metric}`", f"metrics.`test/{metric}/pretrained`",
                f"metrics.`test/{metric}_gain`"} <= set(columns)
    assert len(value) < 5000  # an experiment tag value's limit


def test_installed_mlflow_ui_still_reads_the_workflow_type_and_the_saved_view_the_links_use() -> None:
    """An MLflow upgrade that renames these makes the links land on the GenAI overview again."""
    bundle = "\n".join(p.read_text(errors="replace") for p in _MLFLOW_JS.glob("*.js"))
    assert 'MACHINE_LEARNING="machine_learning"' in bundle
    assert 'e.get("workflowType")' in bundle  # the URL's workflow type wins over the browser's
    assert '"viewStateShareKey"' in bundle and '"mlflow.sharedViewState."' in bundle
    assert '"/experiments/:experimentId/runs"' in bundle


def test_a_new_experiment_gets_the_kind_and_view_tags_and_an_edited_view_is_kept(tmp_path: Path) -> None:
    from pipelines.tracking.runs import TAG_EXPERIMENT_KIND, Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "fresh", (tmp_path / "art").as_uri())
    tags = tracker.client.get_experiment(tracker.experiment_id).tags
    assert tags[TAG_EXPERIMENT_KIND] == "custom_model_development"
    assert json.loads(tags[ui_links.VIEW_TAG])["name"] == ui_links.VIEW_NAME

    # An experiment made elsewhere gets both; a view the user overrode in the UI stays theirs.
    client = tracker.client
    old = client.create_experiment("older", tags={ui_links.VIEW_TAG: "theirs"})
    Tracker(uri, "older")
    tags = client.get_experiment(old).tags
    assert tags[TAG_EXPERIMENT_KIND] == "custom_model_development" and tags[ui_links.VIEW_TAG] == "theirs"


def test_summary_and_up_link_to_the_runs_table(tiny_cfg) -> None:  # type: ignore[no-untyped-def]
    from pipelines.serve.services import ready_message
    from pipelines.tracking.publish import run_link

    tiny_cfg.tracking.ui_url = "http://127.0.0.1:5000"
    link = run_link(tiny_cfg, "sqlite:///x.db", "3", "r1")
    assert f"]({ui_links.run_url('http://127.0.0.1:5000', '3', 'r1')})" in link
    assert f"]({ui_links.experiment_url('http://127.0.0.1:5000', '3')})" in link

    message = ready_message("http://127.0.0.1:4200", "http://127.0.0.1:5000", tiny_cfg, Path("/h"), [], "3")
    assert ui_links.experiment_url("http://127.0.0.1:5000", "3") in message
    assert "MLflow UI   http://127.0.0.1:5000\n" in message
    # Without the experiment (the server refused it) it still says where to click.
    assert "Experiments -> transferlab" in ready_message("p", "http://m", tiny_cfg, Path("/h"), [], None)


@pytest.mark.parametrize("base", ["http://127.0.0.1:5000", "http://127.0.0.1:5000/"])
def test_links_do_not_double_the_slash(base: str) -> None:
    assert "5000/#/experiments/" in ui_links.experiment_url(base, "1")
    assert "5000/#/experiments/" in ui_links.run_url(base, "1", "r")
