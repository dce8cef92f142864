"""The compose stack for real: build the image, start all four services, run the pipeline from
the Prefect API as a UI user does, read the runs through MLflow's authenticated API, tear down.

Needs a running Docker engine (`make docker-engine` starts one), debootstrap and Debian's mirror:
without a registry, docker/local-images/build.sh makes stand-ins for python:3.11-slim and
postgres:16 (cached by tag), and docker/local-images/fill-build-extra.sh hands the build this
machine's torch CPU wheel and pip CA (the image reaches PyPI; the PyTorch CPU index is not needed).
Published ports are on 127.0.0.1 only. Everything the stack creates (containers, network,
volumes) is removed afterwards, also on failure; the images stay as the build cache (tags
transferlab-local/* and transferlab:compose-test).

Timings (cold: no images; warm: cached images) are in docker/README.md.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY
from stack import free_port

pytestmark = [pytest.mark.slow, pytest.mark.compose]

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
IMAGE_TAG = "compose-test"
HEALTHY_TIMEOUT_S = 600
RUN_TIMEOUT_S = 1200


def _sh(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> str:
    """Run a setup command; fail the test with its output when it fails."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def _http(method: str, url: str, auth: str | None = None, body: Any = None) -> tuple[int, Any]:
    """(status, parsed JSON or text) of one request, with basic auth "user:password" if given."""
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 (127.0.0.1)
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


@dataclass
class Stack:
    compose: list[str]
    env: dict[str, str]
    secrets: dict[str, str]
    prefect: str
    mlflow: str
    timings: dict[str, float]

    @property
    def prefect_auth(self) -> str:
        return f"admin:{self.secrets['PREFECT_AUTH_PASSWORD']}"

    @property
    def admin_auth(self) -> str:
        return f"admin:{self.secrets['MLFLOW_ADMIN_PASSWORD']}"

    @property
    def worker_auth(self) -> str:
        return f"worker:{self.secrets['MLFLOW_WORKER_PASSWORD']}"

    def logs(self) -> str:
        proc = subprocess.run([*self.compose, "logs", "--no-color", "--tail", "40"], capture_output=True,
                              text=True, timeout=120, env=self.env)
        return proc.stdout[-8000:]


def _engine_env() -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root")}
    if "DOCKER_HOST" in os.environ:
        env["DOCKER_HOST"] = os.environ["DOCKER_HOST"]
    return env


def _wait_healthy(stack: Stack) -> None:
    ids = _sh([*stack.compose, "ps", "-q"], 120, stack.env).split()
    assert len(ids) == 4, ids
    deadline = time.monotonic() + HEALTHY_TIMEOUT_S
    while True:
        out = _sh(["docker", "inspect", "--format", "{{.Name}} {{.State.Status}} {{.State.Health.Status}}", *ids],
                  60, stack.env)
        states = [line.split() for line in out.strip().splitlines()]
        if all(s[2] == "healthy" for s in states):
            return
        bad = [s for s in states if s[1] in ("exited", "dead")]
        if bad or time.monotonic() > deadline:
            pytest.fail(f"stack not healthy: {states}\n{stack.logs()}")
        time.sleep(5)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    for exe in ("docker", "docker-compose", "debootstrap"):
        if shutil.which(exe) is None:
            pytest.fail(f"{exe} is not installed (make system-deps)")
    env = _engine_env()
    if subprocess.run(["docker", "info"], capture_output=True, timeout=60, env=env).returncode != 0:
        pytest.fail("no Docker engine answers: start one with `make docker-engine` (docker/ci-dockerd.sh)")
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    python_image, postgres_image = _sh([str(DOCKER / "local-images" / "build.sh")], 1800, env).split()
    timings["base_images_s"] = time.monotonic() - t0

    values = {name: secrets.token_urlsafe(24) for name in (
        "POSTGRES_PASSWORD", "MLFLOW_ADMIN_PASSWORD", "MLFLOW_FLASK_SECRET_KEY", "PREFECT_AUTH_PASSWORD",
        "MLFLOW_WORKER_PASSWORD")}
    pport, mport = free_port(), free_port()
    settings = {**values, "PYTHON_IMAGE": python_image, "POSTGRES_IMAGE": postgres_image,
                "TRANSFERLAB_IMAGE_TAG": IMAGE_TAG, "PREFECT_PORT": str(pport), "MLFLOW_PORT": str(mport),
                "PREFECT_UI_API_URL": f"http://127.0.0.1:{pport}/api",
                "MLFLOW_PUBLIC_URL": f"http://127.0.0.1:{mport}"}
    env_file = tmp_path_factory.mktemp("stack") / "stack.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    env_file.chmod(0o600)
    project = f"tlstack{secrets.token_hex(3)}"
    compose = ["docker-compose", "--env-file", str(env_file), "-f", str(DOCKER / "docker-compose.yml"),
               "-p", project]
    stack = Stack(compose, env, values, f"http://127.0.0.1:{pport}", f"http://127.0.0.1:{mport}", timings)
    fill = str(DOCKER / "local-images" / "fill-build-extra.sh")
    try:
        t0 = time.monotonic()
        _sh([fill], 300, env)  # this machine's pip setup (python3 -m pip)
        _sh([*compose, "build", "mlflow"], 3600, env)  # one image for mlflow, prefect-server, worker
        timings["image_build_s"] = time.monotonic() - t0
        t0 = time.monotonic()
        _sh([*compose, "up", "-d"], 600, env)
        _wait_healthy(stack)
        timings["up_healthy_s"] = time.monotonic() - t0
        yield stack
    finally:
        subprocess.run([*compose, "down", "-v", "--remove-orphans", "--timeout", "20"], capture_output=True,
                       timeout=300, env=env)
        subprocess.run([fill, "--clean"], capture_output=True, timeout=60, env=env)
        print(f"\ndocker stack timings: {json.dumps({k: round(v) for k, v in timings.items()})}")


def test_both_servers_refuse_requests_without_the_login(stack: Stack) -> None:
    assert _http("POST", f"{stack.prefect}/api/flow_runs/filter", body={})[0] == 401
    assert _http("POST", f"{stack.prefect}/api/flow_runs/filter", "admin:wrong-password-123", {})[0] == 401
    assert _http("GET", f"{stack.prefect}/api/deployments/name/transfer_learning/transfer_learning")[0] == 401
    search = f"{stack.mlflow}/api/2.0/mlflow/experiments/search?max_results=10"
    assert _http("GET", search)[0] == 401
    assert _http("GET", search, "worker:wrong-password-123")[0] == 401
    assert _http("GET", search, stack.worker_auth)[0] == 200
    # health probes stay open for the healthchecks
    assert _http("GET", f"{stack.prefect}/api/health")[0] == 200
    assert _http("GET", f"{stack.mlflow}/health")[0] == 200


def test_a_run_started_from_the_prefect_api_logs_to_mlflow_as_the_worker_user(stack: Stack) -> None:
    t0 = time.monotonic()
    status, deployment = _http("GET", f"{stack.prefect}/api/deployments/name/transfer_learning/transfer_learning",
                               stack.prefect_auth)
    assert status == 200, deployment
    # What the UI's "Custom run" sends: typed parameters plus free-form overrides.
    # (free-form overrides come after the typed ones: leave the typed ones' keys out of them)
    tiny = [o for o in TINY if not o.startswith(("pretrain.max_steps=", "finetune.train_examples="))]
    params = {"max_steps": 8, "label_budget": 24, "overrides": [*tiny, "finetune.max_epochs=1"]}
    status, run = _http("POST", f"{stack.prefect}/api/deployments/{deployment['id']}/create_flow_run",
                        stack.prefect_auth, {"parameters": params})
    assert status == 201, run
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        status, run = _http("GET", f"{stack.prefect}/api/flow_runs/{run['id']}", stack.prefect_auth)
        assert status == 200, run
        state = run["state"]["type"]
        if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"flow run still {state} after {RUN_TIMEOUT_S} s\n{stack.logs()}")
        time.sleep(5)
    stack.timings["pipeline_run_s"] = time.monotonic() - t0
    assert state == "COMPLETED", f"{run['state']}\n{stack.logs()}"

    api = f"{stack.mlflow}/api/2.0/mlflow"
    status, exp = _http("GET", f"{api}/experiments/get-by-name?experiment_name=transferlab", stack.worker_auth)
    assert status == 200, exp
    exp_id = exp["experiment"]["experiment_id"]
    status, found = _http("POST", f"{api}/runs/search", stack.worker_auth,
                          {"experiment_ids": [exp_id], "max_results": 50})
    assert status == 200, found
    runs = found["runs"]
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
    parents = [r for r, t in zip(runs, tags, strict=True) if t.get("transferlab.kind") == "pipeline"]
    assert len(parents) == 1 and parents[0]["info"]["status"] == "FINISHED"
    parent_id = parents[0]["info"]["run_id"]
    stages = sorted(t["transferlab.stage"] for t in tags if t.get("mlflow.parentRunId") == parent_id)
    assert stages == ["evaluate", "finetune", "finetune", "finetune", "prep", "pretrain"]  # pretrained, scratch, tfidf
    params_logged = {p["key"]: p["value"] for p in parents[0]["data"]["params"]}
    assert params_logged["finetune.train_examples"] == "24" and params_logged["pretrain.max_steps"] == "8"
    # artifacts went through the MLflow server (the worker has no access to its volume)
    status, listing = _http("GET", f"{api}/artifacts/list?run_id={parent_id}", stack.worker_auth)
    assert status == 200 and "report.md" in {f["path"] for f in listing.get("files", [])}, listing
    # the admin sees the same runs
    status, found = _http("POST", f"{api}/runs/search", stack.admin_auth, {"experiment_ids": [exp_id]})
    assert status == 200 and parent_id in {r["info"]["run_id"] for r in found["runs"]}

    # The worker is an ordinary user: it owns the experiment it created, and cannot manage users.
    status, perms = _http("GET", f"{stack.mlflow}/api/3.0/mlflow/users/current/permissions", stack.worker_auth)
    assert status == 200 and perms["is_admin"] is False, perms
    assert any(str(exp_id) in json.dumps(p) and "MANAGE" in json.dumps(p) for p in perms["permissions"]), perms
    status, _ = _http("POST", f"{api}/users/create", stack.worker_auth,
                      {"username": "intruder", "password": "intruder-secret-123"})
    assert status == 403
    status, _ = _http("GET", f"{api}/users/get?username=worker", stack.admin_auth)
    assert status == 200
