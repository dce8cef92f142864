"""What goes into MLflow params: flattened, truncated, and without credentials."""

from __future__ import annotations

from modules.config import DataConfig, FinetuneConfig
from pipelines.config.schema import TrackingConfig, TransferLabConfig
from pipelines.tracking.runs import MAX_PARAM_CHARS, mlflow_params, redact


def test_params_are_dotted_truncated_and_redacted() -> None:
    cfg = TransferLabConfig(tracking=TrackingConfig(uri="http://alice:s3cret@mlflow.example:5000", experiment="x"),
                            data=DataConfig(path="p" * 2000), finetune=FinetuneConfig(inits=["pretrained", "scratch"]))
    params = mlflow_params(cfg)
    assert params["tracking.uri"] == "http://***@mlflow.example:5000"
    assert "s3cret" not in str(params)
    assert len(params["data.path"]) == MAX_PARAM_CHARS and params["data.path"].endswith("...")
    assert params["finetune.inits"] == "['pretrained', 'scratch']"


def test_redact_leaves_plain_uris_alone() -> None:
    assert redact("sqlite:////tmp/x/mlflow.db") == "sqlite:////tmp/x/mlflow.db"
    assert redact("postgresql://bob:pw@db/mlflow") == "postgresql://***@db/mlflow"


def test_null_tracker_overrides_every_tracker_method() -> None:
    """A rank > 0 must never reach MLflow: any Tracker method NullTracker inherits would."""
    import inspect

    from pipelines.tracking.runs import NullTracker, Tracker

    public = {n for n, f in inspect.getmembers(Tracker, inspect.isfunction) if not n.startswith("_")}
    inherited = {n for n in public if getattr(NullTracker, n) is getattr(Tracker, n)}
    assert inherited <= {"from_config"}, f"NullTracker inherits {sorted(inherited)} from Tracker"
