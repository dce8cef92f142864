"""No process of a run outlives it, and SIGTERM stops a run the way Ctrl-C does.

Why this is needed: Prefect starts its temporary API server (``uvicorn``) for a CLI run as a
plain child. ``kill -9`` of the CLI leaves that server reparented to init, serving forever;
and ``timeout``/``docker stop``/SLURM signal the whole process group, so the server died
*before* the CLI, whose Prefect client then retried the dead server for minutes ("All
connection attempts failed") while reporting the crash.

The fix, on Linux:

- Children we start get ``PR_SET_PDEATHSIG``: the kernel signals them when their parent
  dies, however it dies. It is set in the child itself, between fork and exec, by a tiny
  ``python -c`` trampoline (:func:`pdeathsig_command`) rather than a ``preexec_fn`` (not
  safe with threads, which Prefect has started by then). The death signal fires when the
  *thread* that forked the child exits, so children are started from the main thread.
- The temporary Prefect server is started by us, from the main thread, before the flow
  (:func:`start_temporary_server`): same command and environment as Prefect's, in its own
  session so a signal to the terminal's or ``timeout``'s process group reaches only the
  CLI, and with the death signal. Prefect reaches it as a configured API
  (``PREFECT_API_URL``); it is stopped at exit, *after* Prefect's log and event workers
  have sent what they hold.
- SIGTERM raises KeyboardInterrupt in the main thread (:func:`sigterm_as_interrupt`), so
  a run stops as for Ctrl-C: Lightning's interrupt handling, MLflow runs marked KILLED,
  carbon ledgers saved, the Prefect flow run marked Crashed while its server still runs.
- Processes Python forks or spawns for us (the sweep's process pool) set the death signal
  on themselves (:func:`die_with_parent`); PyTorch DataLoader workers already watch
  their parent and exit within seconds.

Elsewhere (not Linux) these are no-ops, and the next start's lease reaping
(``pipelines.tracking.liveness``) still marks a killed run's leftovers.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

PR_SET_PDEATHSIG = 1
STOP_GRACE_S = 1.0
DRAIN_TIMEOUT_S = 3.0

# Runs in the child: ask the kernel for the death signal, make sure the parent did not
# already die between fork and now (then the signal would never come), then become ``cmd``.
_TRAMPOLINE = (
    "import ctypes,os,sys\n"
    "ppid,sig=int(sys.argv[1]),int(sys.argv[2])\n"
    "ctypes.CDLL(None,use_errno=True).prctl(1,sig,0,0,0)\n"
    "if os.getppid()!=ppid: sys.exit(1)\n"
    "os.execvp(sys.argv[3],sys.argv[3:])\n"
)


def supported() -> bool:
    return sys.platform.startswith("linux")


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent (thread) dies."""
    if not supported():
        return
    ppid = os.getppid()  # (pid 1 can be a real parent: the CLI as a container's entry point)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != ppid:  # the parent died meanwhile: the signal will not come, follow it now
        os.kill(os.getpid(), sig)


def pdeathsig_command(cmd: list[str], sig: int = signal.SIGTERM) -> list[str]:
    """``cmd`` wrapped so that it receives ``sig`` when this process dies (Linux)."""
    if not supported():
        return cmd
    return [sys.executable, "-c", _TRAMPOLINE, str(os.getpid()), str(int(sig)), *cmd]


def sigterm_as_interrupt() -> None:
    """SIGTERM raises KeyboardInterrupt in the main thread: the same clean stop as Ctrl-C.

    Inside a flow run Prefect swaps in its own SIGTERM handler (it reports the flow run
    Crashed) and, when it is done, re-sends the signal to this one.
    """
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def start_temporary_server() -> TemporaryServer | None:
    """Start Prefect's temporary API server for this run, as our child, and point this
    process's Prefect at it (``PREFECT_API_URL``).

    Why not let Prefect start it: Prefect's ``SubprocessASGIServer`` lives in its server
    module, whose import took 2.3 s of a 10 s cached rerun on 2 cores, in the main thread,
    before the server process could even be launched. Here the process is launched before
    Prefect is imported at all (when no settings file could configure Prefect, the
    environment says everything), and it starts (~4.5 s) while this process imports and opens
    MLflow's store. The port is bound here and handed to uvicorn as a listening socket
    (``--fd``), so the URL is fixed before the server answers: no port race with other runs
    starting together, and no restart on another port.

    Call from the main thread (the death signal follows the thread that started the child),
    then :meth:`TemporaryServer.wait_ready` before the flow. Returns None when a Prefect API is
    configured: the environment's ``PREFECT_API_URL`` (``transferlab up``'s, or a user's
    server), or one set in a Prefect settings file.
    """
    from pipelines.runtime.env import prefect_settings_needed, prepare_prefect_db

    if os.environ.get("PREFECT_API_URL"):
        return None
    extra_env: dict[str, str] = {}
    if prefect_settings_needed():
        from prefect.settings import get_current_settings

        settings = get_current_settings()
        if settings.api.url:
            return None
        extra_env = settings.to_environment_variables(exclude_unset=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))  # a free port, chosen by the kernel and held from now on
        sock.listen(socket.SOMAXCONN)  # requests made before the server is up wait in the backlog
        port = sock.getsockname()[1]
        server_env = {**os.environ, **extra_env, **SERVER_ENV}
        _point_prefect_at(f"http://127.0.0.1:{port}/api")
        try:
            if prepare_prefect_db():  # migrated (under a lock) to this Prefect's schema
                server_env["PREFECT_API_DATABASE_MIGRATE_ON_START"] = "false"  # 0.5 s of its start
            process = _launch_server_process(sock, server_env)
        except BaseException:
            _point_prefect_at(None)
            raise
    finally:
        sock.close()  # the server process holds its own copy
    server = TemporaryServer(process, port)
    atexit.register(server.stop)  # after Prefect's own exit handlers: see TemporaryServer.stop
    return server


# Prefect 3.8's temporary-server environment (``SubprocessASGIServer._run_uvicorn_command``),
# and one more switch. Runs started together on a fresh state dir start their servers
# together, and each would insert Prefect's block types: the losers log unique-constraint
# tracebacks. A CLI run uses no blocks; `transferlab up`'s own server registers them for the UI.
# Block registration off also makes its memo pointless: checking the memo imported every
# installed Prefect collection (dask, distributed, tornado: 0.5 s of each server's start).
SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1",
              "PREFECT_SERVER_REGISTER_BLOCKS_ON_START": "false", "PREFECT_MEMOIZE_BLOCK_AUTO_REGISTRATION": "false"}
SERVER_POLL_S = 0.05


def _point_prefect_at(url: str | None) -> None:
    """Prefect reads ``PREFECT_API_URL`` into its global settings when imported; set it, and
    refresh those settings if Prefect is imported already."""
    if url is None:
        os.environ.pop("PREFECT_API_URL", None)
    else:
        os.environ["PREFECT_API_URL"] = url
    if "prefect.context" in sys.modules:
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()


def _launch_server_process(sock: socket.socket, env: dict[str, str]) -> subprocess.Popen[Any]:
    """Prefect 3.8's temporary-server command on an already-listening socket, in its own
    session and with a death signal, started without importing Prefect."""
    from importlib.util import find_spec
    from pathlib import Path

    spec = find_spec("prefect")
    assert spec is not None and spec.origin is not None
    app_dir = Path(spec.origin).parent.parent  # what Prefect passes: prefect.__module_path__.parent
    fd = sock.fileno()
    cmd = [sys.executable, "-m", "uvicorn", "--app-dir", str(app_dir), "--factory",
           "prefect.server.api.server:create_app", "--fd", str(fd), "--log-level", "error", "--lifespan", "on"]
    # SIGKILL: on SIGTERM uvicorn starts a graceful shutdown that was seen to hang for
    # minutes once its client had died; its sqlite database is safe against a kill.
    return subprocess.Popen(pdeathsig_command(cmd, signal.SIGKILL), start_new_session=True,
                            stdin=subprocess.DEVNULL, pass_fds=(fd,), env=env)


class TemporaryServer:
    """The running temporary server: wait for it, run flows on it, stop it."""

    def __init__(self, process: subprocess.Popen[Any], port: int) -> None:
        self.process = process
        self.port = port
        self.api_url = f"http://127.0.0.1:{port}/api"
        self._answered = threading.Event()
        self._error: str | None = None
        threading.Thread(target=self._probe, name="prefect-server-probe", daemon=True).start()

    def _probe(self) -> None:
        """Ask the server what Prefect's client asks first (its API version) until it answers.

        The listening socket queues the request until the server accepts, so this mostly
        sleeps in a socket read. Its first answer also has FastAPI build its route table
        (0.3 s), here, while the main thread still opens MLflow's store, instead of inside
        the flow's first request.
        """
        import urllib.error
        import urllib.request

        timeout_s = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90"))
        deadline = time.monotonic() + timeout_s
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an http_proxy
        try:
            while True:
                code = self.process.poll()
                if code is not None:
                    self._error = (f"the temporary Prefect server exited with code {code} before answering "
                                   "(its output is above)")
                    return
                try:
                    with direct.open(f"{self.api_url}/admin/version", timeout=max(0.1, deadline - time.monotonic())):
                        return
                except urllib.error.HTTPError:  # it answered (an auth string it wants, say): it is up
                    return
                except OSError:  # not listening yet, or reset: look again
                    pass
                if time.monotonic() >= deadline:
                    self._error = (f"the temporary Prefect server at {self.api_url} did not answer within "
                                   f"{timeout_s:.0f} s (PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)")
                    return
                time.sleep(SERVER_POLL_S)
        finally:
            self._answered.set()

    def wait_ready(self) -> None:
        """Return once the server answers; one that exits or never answers is an error."""
        self._answered.wait()
        if self._error is not None:
            self.stop()
            raise RuntimeError(self._error)

    @contextmanager
    def flow_settings(self) -> Iterator[None]:
        """Prefect settings for the flows run on this server: no UI links, no heartbeats.

        It serves no UI, and it is gone when the run ends: a "View at" link to it would be
        dead (``transferlab up`` serves the UI, and a run made while it runs reports there).
        Heartbeats let a long-lived server tell a crashed flow run; this one lives exactly as
        long as the run (a killed run's flow run is marked by the next start's lease reaping,
        ``pipelines.tracking.liveness``). And the heartbeat thread, which sleeps in 1 s steps,
        held up the end of every flow by up to a second.
        """
        from prefect.settings import temporary_settings

        with temporary_settings(updates={"flows.heartbeat_frequency": None, "ui_url": ""}):
            yield

    def stop(self) -> None:
        """Send what Prefect's log and event workers hold, then end the server.

        Their own drain is registered with ``threading`` and runs before this (an ``atexit``
        handler) at a normal exit, but not after :func:`exit_now`; draining twice is
        harmless. No graceful uvicorn shutdown: every answered request is committed, and it
        took seconds; 1 s for SIGTERM, then SIGKILL.
        """
        proc = self.process
        if proc.poll() is None:
            _drain_prefect_clients()
            proc.terminate()
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        _stop_sending_logs()


def _drain_prefect_clients() -> None:
    """Send what Prefect's log and event workers hold while the server still answers.

    Their own drain runs at interpreter exit, after this server stopped (its exit handler
    was registered later), where it retried the dead server: the "All connection attempts
    failed" minutes of a killed run.
    """
    if "prefect.logging.handlers" not in sys.modules:  # Prefect never started: nothing to send
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=DRAIN_TIMEOUT_S)
        except Exception:  # best effort: the server is going away either way
            pass


def _stop_sending_logs() -> None:
    """No log record may wait on the stopped server: detach Prefect's API log handlers."""
    import logging

    if "prefect.logging.handlers" not in sys.modules:
        return
    from prefect.logging.handlers import APILogHandler

    loggers = [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values()
                                      if isinstance(v, logging.Logger))]
    for logger in loggers:
        for handler in list(logger.handlers):
            if isinstance(handler, APILogHandler):
                logger.removeHandler(handler)


def exit_now(code: int, *, finished: bool = False) -> None:
    """End the process at once after the exit handlers, skipping interpreter teardown.

    Tearing down the interpreter (garbage-collecting torch, transformers, Prefect and MLflow
    objects) took 8 s on 2 busy cores after an interrupt, most of the 10 s a container gets
    between SIGTERM and SIGKILL, and 1.5 s of a 10 s cached rerun that had finished.
    Everything that must be saved is saved by then: the stages' ``finally`` blocks have
    run, Prefect's log and event workers send what they hold, and the exit handlers (the
    temporary server's stop among them) run here.

    ``finished``: the run ended normally, so first do what a normal exit does before its
    exit handlers: run ``threading``'s own exit hooks (executors wind down their workers)
    and join the non-daemon threads (``threading._shutdown``, CPython's; without it, the
    normal exit).
    """
    import atexit

    if finished:
        shutdown = getattr(threading, "_shutdown", None)
        if shutdown is None:
            sys.exit(code)
        shutdown()
    _drain_prefect_clients()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed pipe: nothing more to say
            pass
    os._exit(code)


def follow_runner() -> None:
    """In a flow run that ``transferlab up``/``serve`` started: die with it (SIGTERM, so the
    run still stops as for Ctrl-C). Prefect's runner starts flow runs from its event loop on
    the main thread, which lives as long as the runner."""
    runner = os.environ.get("TRANSFERLAB_RUNNER_PID")
    if runner and runner == str(os.getppid()):
        die_with_parent(signal.SIGTERM)


# A SIGTERM that lands inside one of these is acted on a moment later: an exception raised
# in the middle of an MLflow/SQLAlchemy write left a sqlite write lock held by a dead
# transaction, and every later write of the run failed with "database is locked".
_DEFER_IN = ("/sqlalchemy/", "/mlflow/store/", "/sqlite3/")
DEFER_RETRY_S = 0.25
DEFER_AT_MOST_S = 3.0


def _deferrable(frame: Any) -> bool:
    while frame is not None:
        name = frame.f_code.co_filename
        if any(part in name for part in _DEFER_IN):
            return True
        frame = frame.f_back
    return False


def is_sigterm_exit(exc: BaseException) -> bool:
    """Lightning's own stop after SIGTERM (``SIGTERMException``, a SystemExit)."""
    return isinstance(exc, SystemExit) and type(exc).__name__ == "SIGTERMException"


@contextmanager
def deferred_sigterm() -> Iterator[None]:
    """Inside a pipeline: SIGTERM stops the run at a safe point, within ``DEFER_AT_MOST_S``.

    A SIGTERM is handed to the handler that was there before (Prefect's, which reports the
    flow run and raises its TerminationSignal; or the CLI's KeyboardInterrupt) at once,
    unless it lands in an MLflow/SQLAlchemy write: then it is re-sent every
    ``DEFER_RETRY_S`` until it lands elsewhere (or ``DEFER_AT_MOST_S`` have passed).
    Lightning's own stop (at an epoch end, or under DDP) becomes the same exception.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    first: list[float] = []
    done = threading.Event()

    def delegate(signum: int, frame: Any) -> None:
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt

    def resend() -> None:
        if not done.wait(DEFER_RETRY_S):
            os.kill(os.getpid(), signal.SIGTERM)

    def handler(signum: int, frame: Any) -> None:
        now = time.monotonic()
        first.append(now)
        if now - first[0] < DEFER_AT_MOST_S and _deferrable(frame):
            threading.Thread(target=resend, daemon=True).start()
            return
        delegate(signum, frame)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    except SystemExit as exc:
        if not (first and is_sigterm_exit(exc)):
            raise
        delegate(signal.SIGTERM, None)  # the same exception as an undeferred SIGTERM
        raise
    finally:
        done.set()
        signal.signal(signal.SIGTERM, previous)
