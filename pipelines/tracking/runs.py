"""MLflow plumbing: one parent run per pipeline, one child run per stage.

Everything goes through ``MlflowClient`` with explicit run ids. MLflow's fluent API keeps
the active run in a per-thread stack, which breaks as soon as Prefect or Lightning run
code on another thread; explicit ids do not care.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.config.compose import flatten, to_yaml
from pipelines.config.schema import TransferLabConfig
from pipelines.tracking.ui_links import runs_view_tag

log = logging.getLogger("transferlab")

TAG_KIND = "transferlab.kind"
TAG_STAGE = "transferlab.stage"
TAG_INIT = "transferlab.init"
TAG_TASK = "transferlab.task"
TAG_STRATEGY = "transferlab.strategy"  # finetune.strategy of a fine-tune run
TAG_CACHE = "transferlab.cache"
TAG_FINGERPRINT = "transferlab.fingerprint"
TAG_CACHE_SOURCE = "transferlab.cache_source_run"
TAG_CACHE_WAITED = "transferlab.cache_waited_s"  # seconds this stage waited for another run's build
TAG_PARENT = "mlflow.parentRunId"
TAG_RUN_NAME = "mlflow.runName"
TAG_EARLIER_PARENTS = "transferlab.earlier_parent_runs"  # comma-separated, oldest first
TAG_ATTEMPTS = "transferlab.attempts"
TAG_WORKER = "transferlab.worker"  # host:pid (and Dask worker) of the process that ran the stage
# What the experiment is: model training (runs, params, metrics), not a GenAI app. MLflow 3.17's
# UI picks its layout from the browser's workflow type instead (see pipelines.tracking.ui_links),
# but the tag still says it to other clients and to MLflow versions that read it.
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"

MAX_PARAM_CHARS = 500
_SECRET_IN_URI = re.compile(r"(://)([^/@:]+):([^/@]+)@")


def experiment_tags() -> dict[str, str]:
    """Tags transferlab's experiments carry: the kind, and the runs-table view its UI links open."""
    view_key, view = runs_view_tag()
    return {TAG_EXPERIMENT_KIND: MODEL_TRAINING, view_key: view}


def tracking_uri(cfg: TransferLabConfig) -> str:
    """``tracking.uri`` if set, else the sqlite store in the state dir (absolute path)."""
    uri = cfg.tracking.uri
    if uri:
        return uri
    return f"sqlite:///{Path(cfg.paths.home) / 'mlflow.db'}"


def open_store(cfg: TransferLabConfig) -> None:
    """Open the run's MLflow store now: MLflow keeps one store per URI for the process, and
    opening a sqlite store (SQLAlchemy engine, schema check, experiment) takes seconds that
    the CLI spends while its Prefect server starts. A failure here is not reported: the
    flow opens the store again and says what is wrong there, in its runs."""
    try:
        Tracker.from_config(cfg)
    except Exception as exc:
        log.debug("MLflow store not opened ahead of the flow: %s", exc)


def artifact_root(cfg: TransferLabConfig) -> str:
    return (Path(cfg.paths.home) / "mlartifacts").as_uri()


def redact(value: str) -> str:
    """Drop credentials from URIs before they become params (``user:pass@`` -> ``***@``)."""
    return _SECRET_IN_URI.sub(r"\1***@", value)


def mlflow_params(cfg: TransferLabConfig) -> dict[str, str]:
    out = {}
    for key, value in flatten(cfg).items():
        value = redact(value)
        out[key] = value if len(value) <= MAX_PARAM_CHARS else value[: MAX_PARAM_CHARS - 3] + "..."
    return out


def create_sqlite_store(uri: str) -> None:
    """Create a new sqlite MLflow store whole or not at all.

    MLflow creates its schema table by table; a run killed meanwhile (the first run on a
    fresh state dir spends seconds there) left a half-made store that every later run
    failed on ("table label_schemas already exists"). The schema is built in a temp file
    and linked into place, which fails harmlessly if another process got there first.
    """
    import os
    import uuid

    from mlflow.tracking import MlflowClient

    path = Path(uri.removeprefix("sqlite:///"))
    if path.exists():
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        MlflowClient(tracking_uri=f"sqlite:///{tmp}").search_experiments(max_results=1)
        try:
            os.link(tmp, path)
        except FileExistsError:  # another process created it meanwhile: use theirs
            pass
    finally:
        tmp.unlink(missing_ok=True)


_OPENED: set[str] = set()  # sqlite stores this process has created or checked


def open_client(uri: str) -> Any:
    """An ``MlflowClient`` on ``uri``; a sqlite store is created (or checked) under a lock first.

    MLflow's SqlAlchemyStore creates its tables when it finds them missing, and two
    processes starting at once on a fresh store both do: one dies with ``table ... already
    exists`` (MLflow 3.17's tracking store takes no lock around it). So the first client
    in each process opens the tracking and registry stores while holding an exclusive
    ``flock`` on ``<db>.lock`` next to the database. Later contention is sqlite's own:
    MLflow's sessions wait up to 20 s on a locked database (``PRAGMA busy_timeout``).
    """
    from mlflow.tracking import MlflowClient

    if not uri.startswith("sqlite:///") or uri in _OPENED:
        return MlflowClient(tracking_uri=uri)
    from pipelines.runtime.locks import exclusive

    db = Path(uri.removeprefix("sqlite:///"))
    with exclusive(db.with_name(db.name + ".lock")):
        create_sqlite_store(uri)  # a fresh store appears whole, even if we are killed meanwhile
        client = MlflowClient(tracking_uri=uri)  # checks (and upgrades) the tracking store
        client.search_registered_models(max_results=1)  # the registry store checks them too
    _OPENED.add(uri)
    return client


@dataclass
class Tracker:
    uri: str
    experiment: str
    artifact_location: str | None = None
    experiment_id: str = field(init=False)

    def __post_init__(self) -> None:
        from mlflow.exceptions import MlflowException

        for name in ("alembic", "mlflow"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.client = open_client(self.uri)
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is None:
            location = self.artifact_location if self.uri.startswith("sqlite:") else None
            try:
                self.experiment_id = self.client.create_experiment(self.experiment, artifact_location=location,
                                                                   tags=experiment_tags())
                return
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                # Another run created it since we looked (runs started together on a new store).
                exp = self.client.get_experiment_by_name(self.experiment)
        self.experiment_id = exp.experiment_id
        # Created before these tags, or by someone else. A saved view a user changed in the UI is theirs.
        for key, value in experiment_tags().items():
            if key in exp.tags:
                continue
            try:
                self.client.set_experiment_tag(self.experiment_id, key, value)
            except Exception as exc:  # e.g. no EDIT permission on a shared server: only a UI nicety
                log.debug("experiment tag %s not set: %s", key, exc)

    @classmethod
    def from_config(cls, cfg: TransferLabConfig) -> Tracker:
        from pipelines.runtime.distributed import is_rank_zero

        if not is_rank_zero():
            return NullTracker(tracking_uri(cfg), cfg.tracking.experiment)
        return cls(tracking_uri(cfg), cfg.tracking.experiment, artifact_root(cfg))

    def start_run(self, name: str, tags: dict[str, str], parent_run_id: str | None = None) -> str:
        tags = {TAG_RUN_NAME: name, **tags}
        if parent_run_id:
            tags[TAG_PARENT] = parent_run_id
        return self.client.create_run(self.experiment_id, tags=tags, run_name=name).info.run_id

    def reopen_run(self, run_id: str, parent_run_id: str | None) -> None:
        """Continue a run an earlier, killed pipeline started (resume).

        The run goes back to RUNNING under the new parent; the earlier parent(s) are kept
        in a tag, and an earlier parent still marked RUNNING (its process is dead) becomes
        KILLED so the UI does not show a pipeline running forever.
        """
        run = self.client.get_run(run_id)
        tags = run.data.tags
        old_parent = tags.get(TAG_PARENT)
        earlier = [p for p in tags.get(TAG_EARLIER_PARENTS, "").split(",") if p]
        if old_parent and old_parent != parent_run_id and old_parent not in earlier:
            earlier.append(old_parent)
            try:
                if self.client.get_run(old_parent).info.status == "RUNNING":
                    self.client.set_terminated(old_parent, status="KILLED")
            except Exception as exc:  # deleted meanwhile: nothing to mark
                log.debug("earlier parent %s not updated: %s", old_parent, exc)
        self.client.update_run(run_id, status="RUNNING")
        new_tags = {TAG_ATTEMPTS: str(int(tags.get(TAG_ATTEMPTS, "1")) + 1)}
        if earlier:
            new_tags[TAG_EARLIER_PARENTS] = ",".join(earlier)
        if parent_run_id:
            new_tags[TAG_PARENT] = parent_run_id
        self.set_tags(run_id, new_tags)

    def log_config(self, run_id: str, cfg: TransferLabConfig) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(run_id).data.params
        # A reopened run keeps its params: MLflow refuses to change a logged value, and the
        # fingerprinted keys are equal by construction. Keys that differ are left as they were.
        params = [Param(k, v) for k, v in mlflow_params(cfg).items() if k not in existing]
        for i in range(0, len(params), 100):  # MLflow caps a batch at 100 params
            self.client.log_batch(run_id, params=params[i : i + 100])
        self.client.log_text(run_id, redact(to_yaml(cfg)), "config.yaml")

    def log_params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        self.client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if batch:
            self.client.log_batch(run_id, metrics=batch)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        """All in one write (one sqlite transaction, not one per tag)."""
        from mlflow.entities import RunTag

        if tags:
            self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(run_id, str(path), artifact_path or path.name)
        else:
            self.client.log_artifact(run_id, str(path), artifact_path)

    def log_input(self, run_id: str, name: str, digest: str, source: str | list[str], profile: dict[str, Any],
                  source_type: str = "local", context: str = "train") -> None:
        """A dataset input of the run (MLflow's Datasets tab): what was read, and its fingerprint.

        ``digest`` is the content fingerprint (MLflow keeps at most 36 characters), ``source``
        the files or hub id it came from, ``profile`` a few counts (rows, tokens).
        """
        import json

        from mlflow.entities import Dataset, DatasetInput, InputTag

        sources = [source] if isinstance(source, str) else list(source)
        dataset = Dataset(name=name, digest=digest[:36], source_type=source_type,
                          source=json.dumps({"uris": sources}), profile=json.dumps(profile))
        tags = [InputTag(key="mlflow.data.context", value=context)]
        self.client.log_inputs(run_id, datasets=[DatasetInput(dataset=dataset, tags=tags)])

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def metric(self, run_id: str, key: str) -> float | None:
        return self.metrics(run_id).get(key)

    def metrics(self, run_id: str) -> dict[str, float]:
        """A run's latest metrics, in one read."""
        return dict(self.client.get_run(run_id).data.metrics)


class NullTracker(Tracker):
    """Tracks nothing: for ranks > 0 of a distributed run, so one run is one MLflow run."""

    def __init__(self, uri: str = "", experiment: str = "", artifact_location: str | None = None) -> None:
        self.uri, self.experiment, self.artifact_location = uri, experiment, artifact_location
        self.experiment_id = ""

    def start_run(self, name: str, tags: dict[str, str], parent_run_id: str | None = None) -> str:
        return f"norun-{name}"

    def reopen_run(self, run_id: str, parent_run_id: str | None) -> None:
        pass

    def log_config(self, run_id: str, cfg: TransferLabConfig) -> None:
        pass

    def log_params(self, run_id: str, params: dict[str, str]) -> None:
        pass

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        pass

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        pass

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        pass

    def metric(self, run_id: str, key: str) -> float | None:
        return None

    def metrics(self, run_id: str) -> dict[str, float]:
        return {}

    def log_input(self, *args: Any, **kwargs: Any) -> None:
        pass


@contextmanager
def run_context(tracker: Tracker, name: str, tags: dict[str, str], parent_run_id: str | None = None,
                resume_run_id: str | None = None) -> Iterator[str]:
    """A run that ends FINISHED, or FAILED (and re-raises) if the block raises.

    With ``resume_run_id`` the existing run is reopened (see ``Tracker.reopen_run``)
    instead of a new one being created.
    """
    if resume_run_id:
        tracker.reopen_run(resume_run_id, parent_run_id)
        run_id = resume_run_id
    else:
        run_id = tracker.start_run(name, tags, parent_run_id)
    try:
        yield run_id
    except BaseException as exc:
        tracker.end_run(run_id, "KILLED" if interrupted(exc) else "FAILED")
        raise
    tracker.end_run(run_id, "FINISHED")


def interrupted(exc: BaseException) -> bool:
    """Ctrl-C, or SIGTERM as Prefect (TerminationSignal) or Lightning (SIGTERMException) raise it."""
    if isinstance(exc, KeyboardInterrupt):
        return True
    import sys

    from pipelines.runtime.lifecycle import is_sigterm_exit

    if is_sigterm_exit(exc):
        return True

    if "prefect" in sys.modules:
        from prefect.exceptions import TerminationSignal

        return isinstance(exc, TerminationSignal)
    return False
