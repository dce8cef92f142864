"""Which pipeline runs are still alive, and marking the dead ones' leftovers.

A pipeline process holds a *lease* for its MLflow parent run: ``$home/live/<run_id>.json``
with an exclusive ``flock`` on it for as long as the process lives. The kernel drops the
lock when the process dies, however it dies (SIGKILL, OOM, a lost container), so "lock
acquirable" means "holder dead" with no pid guessing (pids are reused, hosts differ, a pid
file cannot tell a live holder from a recycled id).

A killed run leaves its MLflow parent and stage runs RUNNING and its Prefect flow run
Running forever. :func:`reap` marks them KILLED / Crashed; every start of a pipeline, of
``up`` and of ``serve`` calls it on its state dir (:func:`reap_quietly`).

Forked children (DataLoader workers, a process pool) must not keep a dead pipeline's
lease alive, so the lock's descriptor is closed in every child after ``fork``; a lock
belongs to the open file description and stays held by the parent's copy.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipelines.config.schema import TransferLabConfig
from pipelines.runtime.locks import is_held, publish_locked

log = logging.getLogger("transferlab")

LIVE_DIR = "live"
_held_fds: set[int] = set()


@dataclass
class Lease:
    """One live (or dead, if stale) pipeline process that owns an MLflow parent run."""

    run_id: str
    pid: int
    host: str
    started: float
    tracking_uri: str
    flow_run_id: str | None
    path: Path = field(compare=False)
    _fd: int = field(default=-1, compare=False, repr=False)

    def as_json(self) -> str:
        data = asdict(self)
        data.pop("path")
        data.pop("_fd")
        return json.dumps(data)

    def bind(self, run_id: str) -> None:
        """Name the MLflow parent run of a lease held before it existed (holder only).

        The file is renamed, so the lock (on the file, not the name) stays held throughout.
        """
        if self._fd < 0:
            raise RuntimeError("only the process holding a lease can bind it")
        self.run_id = run_id
        data = self.as_json().encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)
        os.fsync(self._fd)
        new = self.path.with_name(f"{run_id}.json")
        os.replace(self.path, new)
        self.path = new

    @classmethod
    def read(cls, path: Path) -> Lease | None:
        try:
            data = json.loads(path.read_text())
            return cls(run_id=str(data["run_id"]), pid=int(data["pid"]), host=str(data["host"]),
                       started=float(data["started"]), tracking_uri=str(data["tracking_uri"]),
                       flow_run_id=data.get("flow_run_id"), path=path)
        except (OSError, ValueError, KeyError, TypeError):
            return None


def live_dir(home: str | Path) -> Path:
    return Path(home) / LIVE_DIR


def _close_in_child() -> None:
    for fd in list(_held_fds):
        try:
            os.close(fd)
        except OSError:
            pass
    _held_fds.clear()


os.register_at_fork(after_in_child=_close_in_child)


def current_flow_run_id() -> str | None:
    """The Prefect flow run this code runs in, if any (without importing Prefect)."""
    import sys

    if "prefect" not in sys.modules:
        return None
    try:
        from prefect.context import FlowRunContext

        ctx = FlowRunContext.get()
        return str(ctx.flow_run.id) if ctx and ctx.flow_run else None
    except Exception:  # no Prefect context machinery: not a flow run
        return None


@contextmanager
def hold(home: str | Path, run_id: str, tracking_uri: str, flow_run_id: str | None = None) -> Iterator[Lease]:
    """Hold the lease of ``run_id`` for the life of the block (or of the process, if it dies).

    The file is written under a temporary name, locked, then renamed into place, so no
    reader ever sees an unlocked lease of a live run. Removed on normal exit of the block.
    ``run_id=""``: the parent run does not exist yet (a kill now leaves only a Prefect flow
    run to mark); :meth:`Lease.bind` names it once it does.
    """
    directory = live_dir(home)
    directory.mkdir(parents=True, exist_ok=True)
    name = run_id or f"pending-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path = directory / f"{name}.json"
    lease = Lease(run_id, os.getpid(), socket.gethostname(), time.time(), tracking_uri, flow_run_id, path)
    fd = publish_locked(path, lease.as_json().encode())
    _held_fds.add(fd)
    lease._fd = fd
    try:
        yield lease
    finally:
        lease.path.unlink(missing_ok=True)
        lease._fd = -1
        _held_fds.discard(fd)
        os.close(fd)


def _is_stale(path: Path) -> bool:
    """True if the lease file is there and nobody holds its lock (its holder is dead)."""
    return path.exists() and not is_held(path)


def leases(home: str | Path) -> list[Lease]:
    """Every lease of the state dir, live or stale."""
    directory = live_dir(home)
    if not directory.is_dir():
        return []
    found = (Lease.read(p) for p in sorted(directory.glob("*.json")))
    return [lease for lease in found if lease is not None]


def stale(home: str | Path) -> list[Lease]:
    """Leases whose holder is dead (their lock is acquirable)."""
    return [lease for lease in leases(home) if _is_stale(lease.path)]


def _mark_mlflow(lease: Lease) -> list[str]:
    """The dead run's parent and its RUNNING children -> KILLED; returns the run ids marked."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    marked: list[str] = []
    if not lease.run_id:  # killed before its MLflow parent run existed
        return marked
    client = MlflowClient(tracking_uri=lease.tracking_uri)
    try:
        parent = client.get_run(lease.run_id)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise  # the store is unreachable: keep the lease for the next start
        log.debug("lease %s: parent run not found: %s", lease.run_id, exc)  # deleted meanwhile
        return marked
    marked += kill_running_children(lease.tracking_uri, lease.run_id)
    if parent.info.status == "RUNNING":
        client.set_terminated(lease.run_id, status="KILLED")
        marked.append(lease.run_id)
    return marked


def _prefect_reachable() -> bool:
    """A Prefect API to talk to without starting one: PREFECT_API_URL, or the server of the
    flow run we are in (the CLI's temporary server)."""
    if os.environ.get("PREFECT_API_URL"):
        return True
    return current_flow_run_id() is not None


def _mark_prefect(flow_run_id: str) -> bool:
    """The dead run's Prefect flow run -> Crashed, unless already final. Best effort."""
    try:
        from prefect.client.orchestration import get_client
        from prefect.states import Crashed

        with get_client(sync_client=True) as client:
            run = client.read_flow_run(uuid.UUID(flow_run_id))
            if run.state is not None and run.state.is_final():
                return False
            client.set_flow_run_state(flow_run_id, Crashed(message="the process running it was killed; "
                                                           "marked by the next transferlab start"), force=True)
            return True
    except Exception as exc:  # unreachable API, unknown flow run: the lease is still reaped
        log.debug("flow run %s not marked Crashed: %s", flow_run_id, exc)
        return False


def reap(home: str | Path, leases: list[Lease] | None = None, prefect: bool | None = None) -> list[Lease]:
    """Mark each stale lease's leftovers and remove the lease; returns what was reaped.

    MLflow: the parent run and its RUNNING children become KILLED. Prefect: the flow run
    becomes Crashed if an API is reachable (``prefect=None``: only when one is configured
    or we run inside a flow run; ``True``: always try, which may start a temporary server;
    ``False``: never). Never raises for an unreachable store; a lease whose MLflow store
    could not be reached is kept for the next start.
    """
    todo = stale(home) if leases is None else leases
    use_prefect = _prefect_reachable() if prefect is None else prefect
    reaped: list[Lease] = []
    for lease in todo:
        if not _is_stale(lease.path):  # came back to life? (a probe raced a new holder): leave it
            continue
        try:
            marked = _mark_mlflow(lease)
        except Exception as exc:
            log.warning("transferlab: could not mark the killed run %s in %s (%s); will retry at the next start",
                        lease.run_id, lease.tracking_uri, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            continue
        crashed = bool(lease.flow_run_id and use_prefect and _mark_prefect(lease.flow_run_id))
        if marked or crashed:
            log.info("transferlab: run %s (pid %d on %s) was killed: %d MLflow run(s) marked KILLED%s",
                     lease.run_id, lease.pid, lease.host, len(marked),
                     f", Prefect flow run {lease.flow_run_id} marked Crashed" if crashed else "")
        lease.path.unlink(missing_ok=True)
        reaped.append(lease)
    return reaped


def reap_quietly(home: str | Path, prefect: bool | None = None) -> list[Lease]:
    """:func:`reap` for a start-up path: a problem here must never stop a run."""
    try:
        return reap(home, prefect=prefect)
    except Exception as exc:
        log.warning("transferlab: leftover runs not checked: %s", exc)
        return []


@contextmanager
def pipeline_run(cfg: TransferLabConfig, run_id: str = "") -> Iterator[Lease]:
    """The lease of a pipeline's (or sweep's) MLflow parent run, in this flow run if any.

    Taken before the parent run exists (``run_id=""``; then :meth:`Lease.bind` it), so a kill
    while the MLflow store opens still leaves the flow run to be marked Crashed.
    """
    from pipelines.tracking.runs import tracking_uri

    uri = tracking_uri(cfg)
    with hold(cfg.paths.home, run_id, uri, current_flow_run_id()) as lease:
        try:
            yield lease
        except BaseException:
            # A stage run in a process that was killed under us (a sweep worker) never ended
            # its run: whatever is still RUNNING under this parent is over now.
            if lease.run_id:
                try:
                    kill_running_children(uri, lease.run_id)
                except Exception as exc:
                    log.debug("stage runs of %s not marked: %s", lease.run_id, exc)
            raise


def kill_running_children(uri: str, run_id: str) -> list[str]:
    """Every RUNNING run below ``run_id`` -> KILLED: its stage runs, and theirs in turn (a
    fine-tune's learning-rate trials); returns the run ids marked."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_run(run_id).info.experiment_id
    marked: list[str] = []
    parents = [run_id]
    while parents:
        below = f"tags.mlflow.parentRunId = '{parents.pop()}' and attributes.status = 'RUNNING'"
        children = client.search_runs([experiment], filter_string=below, max_results=1000)
        for run in children:
            client.set_terminated(run.info.run_id, status="KILLED")
            marked.append(run.info.run_id)
            parents.append(run.info.run_id)
    return marked
