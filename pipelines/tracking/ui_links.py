"""Links into the MLflow UI that open transferlab's runs table, not MLflow 3's GenAI pages.

MLflow 3.17's web UI decides an experiment's layout from one browser-wide "workflow type"
(GenAI or model training), not from the ``mlflow.experimentKind`` tag: the type is the
``workflowType`` query parameter of the page's URL when present, else the browser's
``localStorage["mlflow.workflowType"]``, which starts as GenAI and changes only when the user
clicks the sidebar's "Model training" switch. ``#/experiments/<id>`` in a fresh browser
therefore redirects to ``#/experiments/<id>/overview/usage?workflowType=genai`` (traces, the
assistant, "Detect Issues"). No server setting or experiment tag changes that, so every link
transferlab hands out carries ``workflowType=machine_learning`` and goes straight to the runs
tab.

The runs tab shows only a few default columns. A saved view (an experiment tag
``mlflow.sharedViewState.<key>`` that the UI also lists under "Views") picks the pipeline's
key columns: the test metrics the pipeline logs and its carbon, wide enough to read. The link
opens it with ``viewStateShareKey=<key>``. (MLflow leaves row expansion out of saved views:
a parent run's stages still open with the row's expander.)
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

WORKFLOW_TYPE = "machine_learning"
"""MLflow 3.17's ``workflowType`` value for the classic experiment-tracking layout."""

VIEW_KEY = "transferlab-runs"
"""The saved view's share key (also its tag's suffix)."""

VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"

VIEW_NAME = "transferlab: stages and test metrics"

# Headline metric per task (modules.tasks.HEADLINE, kept here as plain names so this module stays
# import-light); a selected column whose metric no run has is simply not shown.
_HEADLINES = ("accuracy", "entity_f1", "chrf")
_INITS = ("pretrained", "scratch")


COLUMN_WIDTH = 170
"""Pixels per metric column: MLflow's default cuts ``test/accuracy/pretrained`` to ``test/accuracy``."""


def view_columns() -> list[str]:
    """The runs table's extra columns, as MLflow's column ids ``metrics.`<key>```.

    The task's headline test metric (a fine-tune's; the parent's per init and its gain) and
    carbon. The run names already say stage and init (``finetune-pretrained``).
    """
    metrics: list[str] = []
    for name in _HEADLINES:  # a fine-tune logs test/<name>; the parent per init and the gain
        metrics += [f"test/{name}", *(f"test/{name}/{init}" for init in _INITS), f"test/{name}_gain"]
    metrics.append("carbon/emissions_kg")
    return [f"metrics.`{key}`" for key in metrics]


def runs_view_tag(now_ms: int | None = None) -> tuple[str, str]:
    """(tag key, value) of the saved view: MLflow 3.17's envelope ``{name, createdAt, updatedAt, state}``.

    ``state`` is the JSON of the runs tab's search facets and UI state; uncompressed JSON is
    accepted (only a ``deflate;`` prefix marks a compressed one).
    """
    created = int(time.time() * 1000) if now_ms is None else now_ms
    # What the state leaves out takes the runs tab's defaults. MLflow applies columnWidths only
    # to the columns columnOrder lists (they follow Run Name and Created, in that order).
    columns = view_columns()
    state = {"orderByKey": "attributes.start_time", "orderByAsc": False,  # newest pipeline first
             "selectedColumns": columns, "columnOrder": columns,
             "columnWidths": {column: COLUMN_WIDTH for column in columns}}
    envelope = {"name": VIEW_NAME, "createdAt": created, "updatedAt": created, "state": json.dumps(state)}
    return VIEW_TAG, json.dumps(envelope)


def experiment_url(base: str, experiment_id: str) -> str:
    """The experiment's runs tab in the model-training layout, with transferlab's columns."""
    query = urlencode({"workflowType": WORKFLOW_TYPE, "viewStateShareKey": VIEW_KEY})
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    """One run's page, with the model-training sidebar."""
    query = urlencode({"workflowType": WORKFLOW_TYPE})
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{query}"
