"""``transferlab up`` and ``transferlab serve``: the local stack and the served deployments.

``up`` is the laptop setup in one command: a Prefect server and an MLflow server on the
state dir's stores, then the deployments served in this process, so a click in the Prefect
UI runs a flow here that logs to that MLflow server. ``serve`` is the last part alone, for a
worker that finds both servers already running (the docker compose setup).

The servers are child processes in their own process groups: a Ctrl-C in the terminal
reaches only this process, which then stops the runner first (no new flow runs) and the
servers after it, each with SIGTERM and, 15 s later, SIGKILL.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pipelines.config.schema import TransferLabConfig
from pipelines.errors import UserError
from pipelines.serve.announce import announce

log = logging.getLogger("transferlab")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PREFECT_PORT = 4200
DEFAULT_MLFLOW_PORT = 5000
STARTUP_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 15.0
# Loggers whose records also go to the Prefect UI (at the levels runtime.quiet_libraries sets:
# our progress lines at INFO; Lightning, transformers and codecarbon warnings only).
UI_LOGGERS = "transferlab,lightning.pytorch,lightning.fabric,transformers,codecarbon"
RUNNER_PID_ENV = "TRANSFERLAB_RUNNER_PID"
FLOW_RUN_STOP_S = 10.0  # how long a flow run in flight gets to stop when up/serve stops


@dataclass
class Service:
    name: str
    health_url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    def log_tail(self, lines: int = 15) -> str:
        self.log_file.flush()
        text = self.log_path.read_text(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the servers off the network.

    Only loopback addresses (127.0.0.0/8, ::1) and the name ``localhost`` count; any other name
    is treated as reachable from elsewhere (it is not resolved: a name can point anywhere).
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Credentials:
    """The logins ``up`` puts on both servers (off loopback, or with ``--auth``)."""

    prefect_auth_string: str  # "user:password", Prefect's basic auth for the API and UI
    mlflow_username: str  # MLflow's basic-auth admin (created on the state dir's first start)
    mlflow_password: str
    flask_secret_key: str  # MLflow auth app's CSRF key


AUTH_VARS = "PREFECT_SERVER_API_AUTH_STRING=admin:<password> and MLFLOW_AUTH_ADMIN_PASSWORD=<password>"


def credentials(env: dict[str, str], host: str, forced: bool) -> Credentials | None:
    """The logins to start the servers with, from the environment; None on loopback (unless
    ``forced``). Off loopback, missing or weak ones refuse the start with one line saying how."""
    from pipelines.serve import auth

    if is_loopback(host) and not forced:
        return None
    prefect = env.get("PREFECT_SERVER_API_AUTH_STRING")
    mlflow_user = env.get("MLFLOW_AUTH_ADMIN_USERNAME") or "admin"
    mlflow_password = env.get("MLFLOW_AUTH_ADMIN_PASSWORD")
    why = "with --auth" if is_loopback(host) else f"--host {host} is reachable from other machines, so"
    if not prefect and not mlflow_password:
        raise UserError(f"{why} both UIs need a login: set {AUTH_VARS} (12+ random characters each, e.g. from "
                        f"{auth.GENERATE_HINT}), or bind to 127.0.0.1")
    problem = (auth.auth_string_problem("PREFECT_SERVER_API_AUTH_STRING", prefect)
               or auth.secret_problem("MLFLOW_AUTH_ADMIN_PASSWORD", mlflow_password))
    if problem:
        raise UserError(f"{why} both UIs need a login: {problem} (set {AUTH_VARS})")
    import importlib.util

    if importlib.util.find_spec("flask_wtf") is None:  # MLflow's basic-auth app needs it
        raise UserError(f"{why} MLflow needs its basic-auth app, which needs Flask-WTF: "
                        "pip install 'transferlab[server]' (or Flask-WTF)")
    key = env.get("MLFLOW_FLASK_SERVER_SECRET_KEY") or secrets.token_urlsafe(32)
    return Credentials(str(prefect), mlflow_user, str(mlflow_password), key)


def mlflow_auth_env(creds: Credentials, home: Path) -> dict[str, str]:
    """Server environment for MLflow's basic-auth app: users in ``home/mlflow-auth.db``."""
    from pipelines.serve import auth

    config_dir = home / "mlflow-auth"
    config_dir.mkdir(mode=0o700, exist_ok=True)
    config = auth.write_auth_config(f"sqlite:///{home / 'mlflow-auth.db'}", creds.mlflow_username, "READ",
                                    config_dir)
    return {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_AUTH_ADMIN_USERNAME": creds.mlflow_username,
            "MLFLOW_AUTH_ADMIN_PASSWORD": creds.mlflow_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": creds.flask_secret_key}


def client_auth_env(creds: Credentials | None) -> dict[str, str]:
    """What this process and the flow runs it starts log in with (empty without logins)."""
    if creds is None:
        return {}
    return {"PREFECT_API_AUTH_STRING": creds.prefect_auth_string,
            "MLFLOW_TRACKING_USERNAME": creds.mlflow_username,
            "MLFLOW_TRACKING_PASSWORD": creds.mlflow_password}


def check_mlflow_login(mlflow_url: str, creds: Credentials, auth_db: Path) -> None:
    """The admin password must be the stored one: MLflow set it on the state dir's first start."""
    import base64
    import urllib.error

    token = base64.b64encode(f"{creds.mlflow_username}:{creds.mlflow_password}".encode()).decode()
    req = urllib.request.Request(f"{mlflow_url}/api/2.0/mlflow/users/get?username={creds.mlflow_username}",
                                 headers={"Authorization": f"Basic {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10):  # noqa: S310 (our own server)
            return
    except urllib.error.HTTPError as exc:
        if exc.code != 401:
            raise
    raise UserError(f"MLFLOW_AUTH_ADMIN_PASSWORD is not the password of MLflow user {creds.mlflow_username!r} "
                    f"stored in {auth_db} (set on its first start): use that one, or change it in the MLflow UI")


def check_port(host: str, port: int, what: str, flag: str) -> None:
    """Fail early, naming the port and the flag that moves it, if something listens there."""
    if not 0 < port < 65536:
        raise UserError(f"bad value for {flag}: {port} (a TCP port, 1-65535)")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a just-stopped server's TIME_WAIT is fine
        try:
            s.bind((host, port))
        except OSError as exc:
            raise UserError(f"port {port} on {host} is taken ({what}): stop what uses it, or choose another "
                            f"port with {flag} N") from exc


def answers(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (our own localhost URL)
            return resp.status == 200
    except OSError:
        return False


def start(name: str, cmd: list[str], env: dict[str, str], health_url: str, log_dir: Path) -> Service:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name.lower().replace(' ', '-')}.log"
    log_file = open(log_path, "wb")  # noqa: SIM115 (closed in stop())
    from pipelines.runtime.lifecycle import pdeathsig_command

    # SIGTERM when this process dies, even by SIGKILL: a killed `up` leaves no server behind.
    # Its own session (process group): the terminal's Ctrl-C is ours to relay.
    proc = subprocess.Popen(pdeathsig_command(cmd, signal.SIGTERM), env=env, stdout=log_file, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    return Service(name, health_url, proc, log_path, log_file)


def wait_ready(services: list[Service], timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    """Until every service answers its health URL; a service that exits fails with its log."""
    deadline = time.monotonic() + timeout_s
    pending = list(services)
    while pending:
        for svc in list(pending):
            if svc.proc.poll() is not None:
                raise UserError(f"the {svc.name} exited during startup (code {svc.proc.returncode}); "
                                f"its log {svc.log_path} ends with:\n{svc.log_tail()}")
            if answers(svc.health_url):
                pending.remove(svc)
        if pending and time.monotonic() > deadline:
            raise UserError(f"the {pending[0].name} did not answer {pending[0].health_url} within {timeout_s:.0f} s; "
                            f"see {pending[0].log_path}")
        if pending:
            time.sleep(0.5)


def stop(services: list[Service]) -> None:
    for svc in services:
        if svc.proc.poll() is None:
            try:
                os.killpg(svc.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    try:
        for svc in services:
            try:
                svc.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(svc.proc.pid, signal.SIGKILL)
    except KeyboardInterrupt:  # a second Ctrl-C: no more waiting
        for svc in services:
            if svc.proc.poll() is None:
                os.killpg(svc.proc.pid, signal.SIGKILL)
    for svc in services:
        svc.proc.wait()
        svc.log_file.close()


def _sigterm_as_interrupt() -> None:
    """``docker stop``/``kill`` stop the stack as cleanly as Ctrl-C does, and Ctrl-C works
    even when started from a shell that ignores SIGINT for background jobs (``up &``)."""
    from pipelines.runtime.lifecycle import sigterm_as_interrupt

    sigterm_as_interrupt()
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _watch(services: list[Service], dead: list[Service], stopping: threading.Event) -> None:
    """If a server dies while we serve, stop serving (the UI would be gone anyway)."""
    import _thread

    while not stopping.wait(1.0):
        for svc in services:
            if svc.proc.poll() is not None:
                dead.append(svc)
                _thread.interrupt_main()
                return


def reap_quietly(home: str | Path, prefect: bool) -> None:
    from pipelines.tracking.liveness import reap_quietly as reap

    reap(home, prefect=prefect)


def _children(exclude: list[int]) -> list[int]:
    """This process's child processes (Linux /proc), but ``exclude``."""
    me, out = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        pid = int(stat.parent.name)
        if int(fields[1]) == me and fields[0] != "Z" and pid not in exclude:
            out.append(pid)
    return out


def _reaped(pid: int) -> bool:
    """True once child ``pid`` has exited (and is waited for)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not (or no longer) ours to wait for
        return not Path(f"/proc/{pid}").exists()
    return done == pid


def end_flow_runs(exclude: list[int]) -> None:
    """Stop the flow runs still in flight when the runner stopped (SIGTERM: each stops as for
    Ctrl-C, its MLflow runs KILLED, its flow run Crashed; SIGKILL after FLOW_RUN_STOP_S)."""
    if not Path("/proc").is_dir():
        return
    pids = _children(exclude)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + FLOW_RUN_STOP_S
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if not _reaped(p)]
        if pids:
            time.sleep(0.2)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_env(tracking_uri: str, server_overrides: list[str], home: str, data_dirs: list[str],
            limits: dict[str, int] | None = None) -> None:
    """What the flow-run processes the runner starts inherit (set before Prefect is imported)."""
    from pipelines.config.limits import LIMITS_ENV, default_limits
    from pipelines.serve.ui_input import DATA_DIRS_ENV, SERVER_OVERRIDES_ENV

    os.environ["TRANSFERLAB_TRACKING_URI"] = tracking_uri
    os.environ[RUNNER_PID_ENV] = str(os.getpid())  # flow runs die with this process (lifecycle.follow_runner)
    os.environ["TRANSFERLAB_HOME"] = home
    os.environ[SERVER_OVERRIDES_ENV] = json.dumps(server_overrides)
    os.environ[DATA_DIRS_ENV] = os.pathsep.join(os.path.realpath(d) for d in data_dirs)
    os.environ[LIMITS_ENV] = json.dumps(default_limits() if limits is None else limits)
    os.environ["PREFECT_LOGGING_EXTRA_LOGGERS"] = UI_LOGGERS
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def serve_deployments(limit: int | None, on_ready: Callable[[], None]) -> None:
    """Register every deployment with the Prefect API, call ``on_ready``, then run them as
    they are triggered until interrupted. Flow runs execute in their own processes."""
    import asyncio

    from prefect.deployments.runner import EntrypointType, RunnerDeployment
    from prefect.runner import Runner

    from pipelines.serve.deployments import FLOWS

    runner = Runner(name="transferlab", pause_on_shutdown=False, limit=limit)
    for f in FLOWS:
        deployment = f.to_deployment(name=f.name, entrypoint_type=EntrypointType.MODULE_PATH, tags=["transferlab"],
                                     description=f.description)
        assert isinstance(deployment, RunnerDeployment)  # called from sync code: not a coroutine
        runner.add_deployment(deployment)
    on_ready()
    try:
        asyncio.run(runner.start())
    except KeyboardInterrupt:
        pass


def _check_data_dirs(data_dirs: list[str]) -> None:
    for d in data_dirs:
        if not Path(d).is_dir():
            raise UserError(f"bad value for --data-dir: {d!r} is not a directory")


def operator_limits(cfg: TransferLabConfig, max_entries: list[str] | None) -> dict[str, int]:
    """The limits of the served runs (``--max KEY=N`` over the machine's defaults); the
    operator's own defaults must fit them, or no served run could start."""
    from pipelines.config.limits import check_limits, parse_operator_limits

    limits = parse_operator_limits(max_entries or [])
    check_limits(cfg, limits)
    return limits


def up(overrides: list[str], host: str, prefect_port: int, mlflow_port: int, data_dirs: list[str],
       limit: int | None, out: IO[str] = sys.stdout, max_entries: list[str] | None = None,
       auth: bool = False) -> int:
    """Start both servers, serve the deployments, and stop it all on Ctrl-C.

    Off loopback (or with ``auth``) both servers require logins taken from the environment
    (see ``credentials``); without them nothing starts.
    """
    from pipelines.config.compose import compose
    from pipelines.tracking.runs import artifact_root

    cfg = compose(overrides)  # the operator's overrides: also the defaults of every served run
    limits = operator_limits(cfg, max_entries)
    if cfg.tracking.uri:
        raise UserError(f"bad value for 'tracking.uri': {cfg.tracking.uri!r} (transferlab up starts its own "
                        "MLflow server on the state dir; to use another server, run `transferlab serve`)")
    if prefect_port == mlflow_port:
        raise UserError(f"--prefect-port and --mlflow-port are both {prefect_port}: choose two ports")
    creds = credentials(dict(os.environ), host, auth)  # before anything binds or starts
    check_port(host, prefect_port, "for the Prefect server", "--prefect-port")
    check_port(host, mlflow_port, "for the MLflow server", "--mlflow-port")
    _check_data_dirs(data_dirs)
    home = Path(cfg.paths.home)
    (home / "mlartifacts").mkdir(parents=True, exist_ok=True)
    prefect_home = os.environ.get("PREFECT_HOME") or str(home / "prefect")
    env = {**os.environ, "PREFECT_HOME": prefect_home, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           # MLflow 3's job runner (GenAI scorers, trace rollups: unused here) forks seven ~250 MB workers.
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("PREFECT_API_URL", None)  # the server must not think it is a client of another one
    # Logins exactly when decided above: a stray auth string in the caller's shell must not lock
    # the runner out of a server it did not mean to protect.
    for key in ("PREFECT_SERVER_API_AUTH_STRING", "PREFECT_API_AUTH_STRING", "MLFLOW_AUTH_CONFIG_PATH"):
        env.pop(key, None)
    mlflow_app: list[str] = []
    if creds is not None:
        env["PREFECT_SERVER_API_AUTH_STRING"] = creds.prefect_auth_string
        env.update(mlflow_auth_env(creds, home))
        mlflow_app = ["--app-name", "basic-auth"]
    prefect_url, mlflow_url = f"http://{host}:{prefect_port}", f"http://{host}:{mlflow_port}"
    # Where the UI in the browser finds the API: without it the UI assumes port 4200.
    env["PREFECT_UI_API_URL"] = f"{prefect_url}/api"
    env["PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT"] = "false"
    store = f"sqlite:///{home / 'mlflow.db'}"
    from pipelines.tracking.runs import open_client

    open_client(store)  # a fresh store is created whole and under the lock a CLI run takes too
    services: list[Service] = []
    _sigterm_as_interrupt()
    dead: list[Service] = []
    stopping = threading.Event()
    try:
        out.write(f"transferlab: starting the Prefect server ({prefect_url}) and the MLflow server ({mlflow_url}); "
                  f"logs in {home / 'logs'}\n")
        out.flush()
        services.append(start("Prefect server", [sys.executable, "-m", "prefect", "server", "start", "--host", host,
                                                 "--port", str(prefect_port)],
                              env, f"{prefect_url}/api/health", home / "logs"))
        services.append(start("MLflow server", [sys.executable, "-m", "mlflow", "server", "--host", host,
                                                "--port", str(mlflow_port), "--backend-store-uri", store,
                                                "--default-artifact-root", artifact_root(cfg), "--workers", "1",
                                                *mlflow_app],
                              env, f"{mlflow_url}/health", home / "logs"))
        wait_ready(services)
        if creds is not None:
            check_mlflow_login(mlflow_url, creds, home / "mlflow-auth.db")
        os.environ.pop("PREFECT_API_AUTH_STRING", None)
        os.environ.update(client_auth_env(creds))  # the runner and its flow runs log in
        os.environ["PREFECT_API_URL"] = f"{prefect_url}/api"
        os.environ["PREFECT_HOME"] = prefect_home
        os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        run_env(mlflow_url, overrides, str(home), data_dirs, limits)
        reap_quietly(home, prefect=True)  # runs a killed up/run left Running: KILLED / Crashed

        experiment_id = open_experiment(mlflow_url, cfg.tracking.experiment)

        def ready() -> None:
            threading.Thread(target=_watch, args=(services, dead, stopping), daemon=True).start()
            out.write(ready_message(prefect_url, mlflow_url, cfg, home, overrides, experiment_id))
            out.flush()

        # CLI runs on this state dir now report to this server (live in its UI), not to a temporary one.
        with announce(home, f"{prefect_url}/api", login=creds is not None):
            serve_deployments(limit, ready)
    except KeyboardInterrupt:
        pass
    finally:
        stopping.set()
        if services:
            out.write("\ntransferlab: stopping the servers...\n")
            out.flush()
            end_flow_runs([svc.proc.pid for svc in services])
            if not dead:  # both servers still answer: mark what the stopped runs left
                reap_quietly(home, prefect=True)
            stop(services)
            out.write("transferlab: stopped\n")
            out.flush()
    if dead:
        raise UserError(f"the {dead[0].name} stopped unexpectedly (code {dead[0].proc.returncode}); "
                        f"see {dead[0].log_path}")
    return 0


def open_experiment(mlflow_url: str, experiment: str) -> str | None:
    """The id of the served runs' experiment, created (with its tags) if new, for ``up``'s link.

    Only a link depends on it: a server that refuses is left to the first run to report.
    """
    from pipelines.tracking.runs import Tracker

    try:
        return Tracker(mlflow_url, experiment).experiment_id
    except Exception as exc:
        log.warning("no link to MLflow experiment %r: %s", experiment, exc)
        return None


def ready_message(prefect_url: str, mlflow_url: str, cfg: TransferLabConfig, home: Path, overrides: list[str],
                  experiment_id: str | None = None) -> str:
    """What ``up`` prints once ready. The MLflow link opens the experiment's runs table in MLflow's
    model-training layout (a bare ``#/experiments/<id>`` opens 3.17's GenAI overview)."""
    from pipelines.tracking.ui_links import experiment_url

    defaults = " ".join(overrides) if overrides else "none (the built-in default)"
    runs = (f"      runs of experiment {cfg.tracking.experiment}: {experiment_url(mlflow_url, experiment_id)}\n"
            if experiment_id else f"      Experiments -> {cfg.tracking.experiment}\n")
    return (
        f"transferlab: ready\n"
        f"  Prefect UI  {prefect_url}\n"
        f"      Deployments -> transfer_learning -> Run -> Custom run: pick an experiment or model, set max_steps,\n"
        f"      label_budget or overrides (e.g. finetune.max_epochs=3) -> Submit; the run page shows its logs,\n"
        f"      and its Artifacts tab the key metrics with a link to MLflow.\n"
        f"  MLflow UI   {mlflow_url}\n"
        f"{runs}"
        f"      each pipeline run is a row; its expander lists its stages (nested runs)\n"
        f"  state       {home}    service defaults: {defaults}\n"
        f"  Ctrl-C stops everything.\n"
    )


def serve(overrides: list[str], data_dirs: list[str], limit: int | None, out: IO[str] = sys.stdout,
          max_entries: list[str] | None = None) -> int:
    """Serve the deployments against a running Prefect API (PREFECT_API_URL) and MLflow."""
    from pipelines.config.compose import compose

    api = os.environ.get("PREFECT_API_URL")
    if not api:
        raise UserError("transferlab serve needs PREFECT_API_URL, the API of a running Prefect server (e.g. "
                        "http://127.0.0.1:4200/api); `transferlab up` starts one with everything else")
    cfg = compose(overrides)
    limits = operator_limits(cfg, max_entries)
    _check_data_dirs(data_dirs)
    from pipelines.runtime.env import prepare_environment

    prepare_environment(cfg.paths.home)  # PREFECT_HOME in the state dir, analytics off, quiet libraries
    uri = cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        from pipelines.tracking.runs import tracking_uri

        uri = tracking_uri(cfg)
        out.write(f"transferlab: no MLflow server given (MLFLOW_TRACKING_URI or tracking.uri): runs log to {uri}\n")
    health = api.rstrip("/") + "/health"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not answers(health):  # in compose, the worker may start before the server answers
        if time.monotonic() > deadline:
            raise UserError(f"the Prefect API at {api} does not answer ({health}); is the server running?")
        time.sleep(1.0)
    run_env(uri, overrides, cfg.paths.home, data_dirs, limits)
    reap_quietly(cfg.paths.home, prefect=True)
    _sigterm_as_interrupt()

    def ready() -> None:
        from pipelines.tracking.runs import redact

        out.write(f"transferlab: ready, serving {api} (runs log to {redact(uri)}); Ctrl-C stops\n")
        out.flush()

    try:
        serve_deployments(limit, ready)
    except KeyboardInterrupt:
        pass
    finally:
        end_flow_runs([])
        reap_quietly(cfg.paths.home, prefect=True)
    out.write("transferlab: stopped\n")
    return 0
