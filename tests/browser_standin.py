"""Stand-ins for `transferlab up` used by tests/test_browser.py until the real command lands.

`python tests/browser_standin.py serve` serves a toy `transfer_learning` flow whose parameters
mirror the real deployment's (so the UI renders the same form), which sleeps, logs and publishes
a markdown artifact. `seed_mlflow` logs the run layout the real pipeline logs: a parent run
tagged `transferlab.kind=pipeline` with `finetune-pretrained` / `finetune-scratch` children.
"""

# No `from __future__ import annotations`: Prefect builds the flow's parameter model from the
# signature, and a string annotation `Literal[...]` leaves that pydantic model "not fully
# defined" when the runner loads the entrypoint (the run then fails parameter validation).
import sys
import time
from typing import Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

STANDIN_ACCURACY = {"pretrained": 0.8125, "scratch": 0.5625}
"""test/accuracy per fine-tune init; child runs are named `finetune-<init>` as the real stage names them."""
STANDIN_PARENT = "quickstart-gpt2_tiny"


def seed_mlflow(tracking_uri: str, experiment: str = "transferlab") -> None:
    """Log a parent pipeline run and two fine-tune children with `test/accuracy`, tagged as the
    pipeline tags them (DESIGN: transferlab.kind, transferlab.stage, transferlab.init)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment(experiment)
    parent = client.create_run(
        experiment_id, run_name=STANDIN_PARENT, tags={"transferlab.kind": "pipeline"}
    ).info.run_id
    for init, accuracy in STANDIN_ACCURACY.items():
        tags = {
            "mlflow.parentRunId": parent,
            "transferlab.stage": "finetune",
            "transferlab.init": init,
        }
        child = client.create_run(experiment_id, run_name=f"finetune-{init}", tags=tags).info.run_id
        client.log_metric(child, "test/accuracy", accuracy)
        client.set_terminated(child)
    client.set_terminated(parent)


@flow(name="transfer_learning")
def transfer_learning(
    experiment: Literal["quickstart", "quickstart_bert", "data_efficiency"] | None = None,
    max_steps: int | None = None,
    label_budget: int | None = None,
    overrides: list[str] | None = None,
) -> dict[str, object]:
    """Toy flow with the real deployment's parameters, so the UI renders the same run form."""
    get_run_logger().info("stand-in run, overrides=%s", overrides)
    time.sleep(5)
    create_markdown_artifact(
        key="transferlab-summary", markdown=f"# stand-in\n\noverrides: `{overrides}`"
    )
    return {"overrides": overrides}


if __name__ == "__main__":
    if sys.argv[1:] != ["serve"]:
        sys.exit("usage: python tests/browser_standin.py serve")
    # Served from the file's entrypoint, so runs load this module's flow in a subprocess.
    transfer_learning.serve(name="transfer_learning")
