"""Process harness for integration tests that run the real servers (not a test module).

Starts a throwaway Debian PostgreSQL cluster, an MLflow tracking server and a Prefect
server as child processes on free ports bound to 127.0.0.1, each logging to a file, so a
failing test can show the tail of the server log that explains it. Every process is
started in its own session (process group) and stopped by signalling that group, so the
workers a server forks (uvicorn/gunicorn, Prefect services) go with it.

Why PostgreSQL runs as the ``postgres`` OS user in a dir under /var/tmp: initdb and
postgres refuse to run as root, and pytest's tmp_path (/tmp/pytest-of-root/...) is 0700,
so that user could not reach a data dir there.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

PYTHON = sys.executable
PG_USER = "postgres"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_tail(path: Path, lines: int = 60) -> str:
    """The last ``lines`` lines of a log file ('' when it does not exist yet)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _run(cmd: Sequence[str], timeout: float = 60, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run a short command; on failure raise with its output (no silent half-started cluster)."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def pg_bindir() -> Path:
    """The newest Debian PostgreSQL server binaries (/usr/lib/postgresql/<major>/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    if not found:
        raise RuntimeError("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: "
                           "install them with `apt-get install postgresql`")
    return Path(found[-1]).parent


class PostgresCluster:
    """A throwaway PostgreSQL cluster: trust auth, 127.0.0.1 only, a free port.

    Use as a context manager (or ``start()``/``stop()``). The data dir is a fresh dir under
    /var/tmp owned by ``postgres``; the unix socket lives inside it so nothing touches
    /var/run/postgresql. ``stop()`` shuts the server down and removes the dir.
    """

    def __init__(self, databases: Sequence[str] = (), port: int | None = None,
                 log_path: Path | None = None) -> None:
        self.bindir = pg_bindir()
        self.port = port or free_port()
        self.databases = list(databases)
        self.root: Path | None = None
        self.log_path = log_path
        self.started = False

    @property
    def datadir(self) -> Path:
        assert self.root is not None, "cluster not started"
        return self.root / "data"

    def _as_pg(self, *cmd: str) -> list[str]:
        """Run as the postgres OS user when we are root (initdb/postgres refuse root)."""
        return ["runuser", "-u", PG_USER, "--", *cmd] if os.geteuid() == 0 else list(cmd)

    def start(self, timeout: float = 60) -> PostgresCluster:
        self.root = Path(tempfile.mkdtemp(prefix="transferlab-pg-", dir="/var/tmp"))
        if os.geteuid() == 0:
            shutil.chown(self.root, PG_USER, PG_USER)
        if self.log_path is None:
            self.log_path = self.root / "postgres.log"
        else:  # a log under pytest's tmp dir: postgres cannot write there, so pg_ctl's child would fail
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        server_log = self.root / "postgres.log"
        _run(self._as_pg(str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", PG_USER,
                         "--auth=trust", "--encoding=UTF8", "--no-sync"), timeout=timeout)
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.datadir} -c fsync=off"
        try:
            _run(self._as_pg(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-l", str(server_log),
                             "-o", opts, "-w", "-t", str(int(timeout)), "start"), timeout=timeout + 10)
        except Exception as exc:
            raise RuntimeError(f"{exc}\n--- postgres log ---\n{log_tail(server_log)}") from exc
        self.started = True
        for db in self.databases:
            self.createdb(db)
        return self

    def createdb(self, name: str) -> None:
        _run(self._as_pg(str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                         "-U", PG_USER, name), timeout=30)

    def url(self, db: str, driver: str | None = None) -> str:
        """SQLAlchemy URL, e.g. ``postgresql://...`` (MLflow) or driver ``asyncpg`` (Prefect)."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{PG_USER}@127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        if self.root is None:
            return
        try:
            if self.started:
                subprocess.run(self._as_pg(str(self.bindir / "pg_ctl"), "-D", str(self.datadir),
                                           "-m", "fast", "-w", "stop"),
                               capture_output=True, timeout=60, check=False)
        finally:
            if self.log_path and self.log_path != self.root / "postgres.log":
                try:  # keep the server log with the test's other logs
                    shutil.copyfile(self.root / "postgres.log", self.log_path)
                except OSError:
                    pass
            shutil.rmtree(self.root, ignore_errors=True)
            self.root, self.started = None, False

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def start_process(cmd: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None,
                  cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session with stdout+stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True)
    proc.log_path = log_path  # type: ignore[attr-defined]
    return proc


def start_mlflow_server(port: int, backend_store_uri: str, artifacts_dir: Path, log_path: Path,
                        env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``mlflow server`` with proxied artifacts (clients up/download through the server)."""
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    cmd = [PYTHON, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", backend_store_uri, "--serve-artifacts",
           "--artifacts-destination", str(artifacts_dir), "--workers", "1"]
    # MLflow 3's job runner (GenAI scorers; unused here) forks seven ~250 MB workers: off, as in `up`.
    return start_process(cmd, log_path, {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})},
                         cwd=artifacts_dir.parent)


def start_prefect_server(port: int, prefect_home: Path, db_url: str | None, log_path: Path,
                         ui: bool = False, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``prefect server start``; PostgreSQL when ``db_url`` is given, else sqlite in ``prefect_home``."""
    prefect_home.mkdir(parents=True, exist_ok=True)
    full = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    full.update({
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "true" if ui else "false",
        "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_LOGGING_LEVEL": "INFO",
    })
    if db_url:
        full["PREFECT_API_DATABASE_CONNECTION_URL"] = db_url
    full.update(env or {})
    cmd = [PYTHON, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    return start_process(cmd, log_path, full, cwd=prefect_home)


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None,
              interval: float = 0.5) -> float:
    """Poll ``url`` until it answers 200; return the seconds waited.

    Raises early, with the tail of the process log, when ``proc`` dies meanwhile, and
    with the same tail when ``timeout`` passes.
    """
    started = time.monotonic()
    last: object = None
    while time.monotonic() - started < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited {proc.returncode} before {url} answered\n"
                               f"--- log tail ---\n{_proc_tail(proc)}")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return time.monotonic() - started
                last = resp.status
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f}s (last: {last})\n"
                       f"--- log tail ---\n{_proc_tail(proc) if proc is not None else ''}")


def _proc_tail(proc: subprocess.Popen[bytes], lines: int = 60) -> str:
    path = getattr(proc, "log_path", None)
    return log_tail(path, lines) if path else ""


def stop(proc: subprocess.Popen[bytes] | None, grace: float = 15) -> None:
    """SIGTERM the process group, then SIGKILL it after ``grace`` seconds. Safe to call twice."""
    if proc is None:
        return
    pgid = proc.pid  # start_new_session=True: the child leads its own process group
    if proc.poll() is None:
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:  # the leader may be gone while its workers still run
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


class TransferlabUp:
    """``transferlab up`` as a user starts it: free ports, state in ``home``, output in a log file.

    Entering waits for its ``transferlab: ready`` line (failing with the log tail if it exits
    or takes longer than ``timeout``); ``interrupt()`` sends what Ctrl-C sends and returns
    the exit code; leaving makes sure nothing it started survives.
    """

    READY = "transferlab: ready"

    def __init__(self, home: Path, overrides: Sequence[str], log_path: Path, timeout: float = 300,
                 args: Sequence[str] = (), env: Mapping[str, str] | None = None) -> None:
        self.home, self.overrides, self.log_path, self.timeout = home, list(overrides), log_path, timeout
        self.args, self.extra_env = list(args), dict(env or {})
        self.prefect_port, self.mlflow_port = free_port(), free_port()
        self.prefect_url = f"http://127.0.0.1:{self.prefect_port}"
        self.mlflow_url = f"http://127.0.0.1:{self.mlflow_port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> TransferlabUp:
        env = {**os.environ, "TRANSFERLAB_HOME": str(self.home), "HF_HUB_OFFLINE": "1"}
        # The test session's own Prefect/MLflow settings must not leak in: `up` decides them.
        for key in ("PREFECT_HOME", "PREFECT_API_URL", "PREFECT_UI_API_URL", "MLFLOW_TRACKING_URI"):
            env.pop(key, None)
        env.update(self.extra_env)
        cmd = [PYTHON, "-m", "pipelines.cli", "up", "--prefect-port", str(self.prefect_port),
               "--mlflow-port", str(self.mlflow_port), *self.args, *self.overrides]
        self.proc = start_process(cmd, self.log_path, env, cwd=Path(__file__).resolve().parents[1])
        deadline = time.monotonic() + self.timeout
        while self.READY not in self.output():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                text = self.output()[-4000:]
                self.__exit__(None, None, None)
                raise RuntimeError(f"transferlab up not ready (exit code {self.proc.poll()}):\n{text}")
            time.sleep(0.5)
        return self

    def output(self) -> str:
        return log_tail(self.log_path, lines=100_000)

    def interrupt(self, timeout: float = 60) -> int:
        """SIGINT, as Ctrl-C in its terminal; the exit code once it has stopped everything."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=timeout)

    def __exit__(self, exc_type: type[BaseException] | None = None, exc: BaseException | None = None,
                 tb: TracebackType | None = None) -> None:
        if self.proc is None:
            return
        try:
            self.interrupt()
        except subprocess.TimeoutExpired:
            pass
        stop(self.proc)  # whatever is left of its group
