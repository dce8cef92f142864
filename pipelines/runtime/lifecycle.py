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
  (:func:`own_prefect_server`): same command as Prefect's, in its own session so a signal
  to the terminal's or ``timeout``'s process group reaches only the CLI, and with the
  death signal. Prefect's ``get_client`` finds it as its (singleton) temporary server and
  stops it at exit, *after* its log and event workers have drained, as it always does.
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

import ctypes
import os
import signal
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


def own_prefect_server(wait: bool = True) -> Any | None:
    """Start Prefect's temporary API server as our child (see the module docstring).

    With ``wait=False`` the server process starts but this returns at once: the caller
    goes on with work that needs no server (the server takes seconds to answer) and calls
    ``server.start()`` before the flow, which then only waits for it (Prefect's first client
    would wait too, from whichever thread it runs in).

    Returns the server, or None when a Prefect API is configured (``PREFECT_API_URL``), where
    Prefect starts no temporary server either. Call from the main thread.
    """
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return None
    # The process first: importing Prefect's server module for the class takes seconds, and
    # the server's own start-up (the longest wait of a cached rerun) runs meanwhile.
    port = free_port()
    process = _launch_server_process(port)
    server = _owned_server_class()()
    server.adopt(port, process)
    if wait:
        server.start()
    return server


SERVER_PORTS = range(8000, 9000)  # Prefect 3.8's SubprocessASGIServer._port_range


def free_port() -> int:
    """A port no process listens on, from Prefect's range, as ``find_available_port`` picks."""
    import random
    import socket

    for _ in range(20):
        port = random.choice(SERVER_PORTS)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port for the temporary Prefect server in {SERVER_PORTS}")


def _launch_server_process(port: int) -> subprocess.Popen[Any]:
    """Prefect 3.8's temporary-server command and environment (``SubprocessASGIServer``),
    in its own session and with a death signal, started without importing Prefect's server."""
    from importlib.util import find_spec
    from pathlib import Path

    from prefect.settings import get_current_settings

    spec = find_spec("prefect")
    assert spec is not None and spec.origin is not None
    app_dir = Path(spec.origin).parent.parent  # what Prefect passes: prefect.__module_path__.parent
    server_env = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1",
                  # Runs started together on a fresh state dir start their servers together, and each
                  # would insert Prefect's block types: the losers log unique-constraint tracebacks.
                  # A CLI run uses no blocks; `transferlab up`'s own server registers them for the UI.
                  "PREFECT_SERVER_REGISTER_BLOCKS_ON_START": "false"}
    cmd = [sys.executable, "-m", "uvicorn", "--app-dir", str(app_dir), "--factory",
           "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
           "--log-level", "error", "--lifespan", "on"]
    # SIGKILL: on SIGTERM uvicorn starts a graceful shutdown that was seen to hang for
    # minutes once its client had died; its sqlite database is safe against a kill.
    return subprocess.Popen(
        pdeathsig_command(cmd, signal.SIGKILL), start_new_session=True, stdin=subprocess.DEVNULL,
        env={**os.environ, **server_env, **get_current_settings().to_environment_variables(exclude_unset=True)})


def _owned_server_class() -> type:
    from prefect.server.api.server import SubprocessASGIServer

    class OwnedServer(SubprocessASGIServer):
        """Prefect's temporary server (3.8's command and environment), in its own session and
        with a death signal. Created first, it is the instance Prefect's ``get_client`` uses:
        ``SubprocessASGIServer()`` returns the one registered for port None."""

        def adopt(self, port: int, process: subprocess.Popen[Any]) -> None:
            """A process already started from this (the main) thread on ``port``; Prefect's
            ``start()`` takes it over and waits for it to answer instead of starting another."""
            self.port = port
            self._launched: subprocess.Popen[Any] | None = process

        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            launched = getattr(self, "_launched", None)
            if launched is not None:  # the first call from start(): the process launched before
                self._launched = None
                return launched
            if self.port is None:
                self.port = free_port()
            return _launch_server_process(self.port)  # a restart by Prefect

        def stop(self) -> None:
            """Prefect's stop gives uvicorn 5 s for a graceful shutdown, which a temporary
            server does not need (every answered request is committed) and which took that
            long here; 1 s, then SIGKILL."""
            proc = self.server_process
            if proc is not None and proc.poll() is None:
                _drain_prefect_clients()
                proc.terminate()
                try:
                    proc.wait(timeout=STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
            super().stop()  # the rest of Prefect's bookkeeping; the process is gone by now
            _stop_sending_logs()

    return OwnedServer


def _drain_prefect_clients() -> None:
    """Send what Prefect's log and event workers hold while the server still answers.

    Their own drain runs at interpreter exit, after this server stopped (its exit handler
    was registered later), where it retried the dead server: the "All connection attempts
    failed" minutes of a killed run.
    """
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

    from prefect.logging.handlers import APILogHandler

    loggers = [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values()
                                      if isinstance(v, logging.Logger))]
    for logger in loggers:
        for handler in list(logger.handlers):
            if isinstance(handler, APILogHandler):
                logger.removeHandler(handler)


def exit_now(code: int) -> None:
    """End the process at once after the exit handlers, skipping interpreter teardown.

    After an interrupt, tearing down the interpreter (garbage-collecting torch,
    transformers, Prefect and MLflow objects) took 8 s on 2 busy cores, most of the 10 s
    a container gets between SIGTERM and SIGKILL. Everything that must be saved is saved
    by then: the stages' ``finally`` blocks have run, and the exit handlers (Prefect's log
    and event workers drain, then its temporary server stops) run here first.
    """
    import atexit

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
