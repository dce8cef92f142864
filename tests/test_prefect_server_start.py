"""The CLI's temporary Prefect server: launched before Prefect is imported, on a port held from
the start, reached through PREFECT_API_URL, and gone when stopped; and the exit path that skips
the interpreter's teardown."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.runtime import env as runtime_env
from pipelines.runtime import lifecycle

SCRIPT = """
import os, socket, sys

from pipelines.runtime import lifecycle
from pipelines.runtime.env import prepare_environment

prepare_environment(sys.argv[1])
server = lifecycle.start_temporary_server()
assert server is not None
assert "prefect" not in sys.modules, "Prefect was imported before the server was launched"
assert os.environ["PREFECT_API_URL"] == server.api_url
server.wait_ready()

from prefect import flow, get_client
from prefect.settings import get_current_settings

assert get_current_settings().api.url == server.api_url


@flow
def tiny() -> int:
    return 7


with server.flow_settings():
    assert get_current_settings().flows.heartbeat_frequency is None
    state = tiny(return_state=True)
assert state.is_completed() and state.result() == 7
with get_client(sync_client=True) as client:
    assert client.read_flow_run(state.state_details.flow_run_id).state.is_completed()
server.stop()
assert server.process.poll() is not None, "stop() left the server running"
with socket.socket() as sock:
    assert sock.connect_ex(("127.0.0.1", server.port)) != 0, "the port still answers"
print("served", server.port)
"""


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", **extra)
    return env


def test_server_launched_before_prefect_runs_a_flow_and_stops(tmp_path: Path) -> None:
    """On a state dir whose Prefect database exists (a rerun): the first run creates it first,
    and that imports Prefect's server code."""
    subprocess.run([sys.executable, "-c", DB_SCRIPT, str(tmp_path / "home")], env=_env(tmp_path), check=True,
                   capture_output=True, timeout=180, cwd=tmp_path)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "home")], env=_env(tmp_path),
                          capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("served ")
    assert "View at" not in proc.stderr  # no link to a server that is gone after the run


NONE_SCRIPT = """
import sys
from pipelines.runtime import lifecycle
from pipelines.runtime.env import prepare_environment

prepare_environment(sys.argv[1])
print(lifecycle.start_temporary_server())
"""


@pytest.mark.parametrize("where", ["environment", "profile"])
def test_a_configured_api_gets_no_temporary_server(tmp_path: Path, where: str) -> None:
    """PREFECT_API_URL in the environment (`transferlab up`'s, a user's server) or in a Prefect
    profile: that API is used, and nothing is launched."""
    home = tmp_path / "home"
    extra = {}
    if where == "environment":
        extra["PREFECT_API_URL"] = "http://127.0.0.1:9/api"
    else:
        (home / "prefect").mkdir(parents=True)
        (home / "prefect" / "profiles.toml").write_text(
            'active = "mine"\n[profiles.mine]\nPREFECT_API_URL = "http://127.0.0.1:9/api"\n')
    proc = subprocess.run([sys.executable, "-c", NONE_SCRIPT, str(home)], env=_env(tmp_path, **extra),
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "None"
    assert not (home / "prefect" / "prefect.db").exists()


def test_a_server_that_dies_is_a_one_line_error() -> None:
    process = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])
    server = lifecycle.TemporaryServer(process, port=9)
    with pytest.raises(RuntimeError, match="exited with code 3 before answering"):
        server.wait_ready()


def test_schema_head_read_from_files_is_alembics() -> None:
    """The head revision read from the migration files (7 ms) is what alembic computes (2 s)."""
    from importlib.util import find_spec

    from alembic.script import ScriptDirectory

    spec = find_spec("prefect")
    assert spec is not None and spec.origin is not None
    migrations = Path(spec.origin).parent / "server" / "database" / "_migrations"
    script = ScriptDirectory(str(migrations), version_locations=[str(migrations / "versions" / "sqlite")])
    assert runtime_env.prefect_schema_head() == script.get_current_head()


DB_SCRIPT = """
import sys
from pipelines.runtime.env import prepare_environment, prepare_prefect_db

prepare_environment(sys.argv[1])
print(prepare_prefect_db(), "prefect" in sys.modules)
"""


def test_prefect_db_is_migrated_once_and_then_costs_no_prefect_import(tmp_path: Path) -> None:
    home = tmp_path / "home"
    runs = [subprocess.run([sys.executable, "-c", DB_SCRIPT, str(home)], env=_env(tmp_path), capture_output=True,
                           text=True, timeout=180, cwd=tmp_path) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr[-3000:] + runs[1].stderr[-3000:]
    assert runs[0].stdout.split() == ["True", "True"]  # created: that imports Prefect's server
    assert runs[1].stdout.split() == ["True", "False"]  # at the head already: one sqlite read
    assert (home / "prefect" / "prefect.db").is_file()


EXIT_SCRIPT = """
import atexit, sys, threading, time
from pathlib import Path

out = Path(sys.argv[1])

def late() -> None:
    time.sleep(0.3)
    out.with_suffix(".thread").write_text("joined")

threading.Thread(target=late).start()  # a non-daemon thread: a normal exit waits for it
atexit.register(lambda: out.with_suffix(".atexit").write_text("ran"))
from pipelines.runtime.lifecycle import exit_now
print("bye", flush=False)
exit_now(0, finished=True)
raise SystemExit(5)  # not reached
"""


def test_exit_now_after_a_finished_run_waits_for_threads_and_runs_exit_handlers(tmp_path: Path) -> None:
    out = tmp_path / "marker"
    proc = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == "bye\n"  # flushed before the process ended
    assert out.with_suffix(".thread").read_text() == "joined"
    assert out.with_suffix(".atexit").read_text() == "ran"


def test_settings_files_are_noticed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that could set Prefect's settings sends the launch through Prefect's own settings."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.delenv("PREFECT_PROFILES_PATH", raising=False)
    assert runtime_env.prefect_settings_files() == []
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (tmp_path / ".env").write_text("OTHER=1\n")
    assert runtime_env.prefect_settings_files() == []  # nothing of Prefect's in them
    (tmp_path / ".env").write_text("PREFECT_API_URL=http://x/api\n")
    (tmp_path / "prefect.toml").write_text("[api]\nurl = 'http://x/api'\n")
    assert sorted(p.name for p in runtime_env.prefect_settings_files()) == [".env", "prefect.toml"]


def test_the_port_is_held_from_the_launch(tmp_path: Path) -> None:
    """Nothing else can take the server's port between launch and answer: it is bound and
    listening before the server process starts (no race with runs starting together)."""
    script = (
        "import socket, sys\n"
        "from pipelines.runtime import lifecycle\n"
        "from pipelines.runtime.env import prepare_environment\n"
        "prepare_environment(sys.argv[1])\n"
        "server = lifecycle.start_temporary_server()\n"
        "s = socket.socket()\n"
        "try:\n"
        "    s.bind(('127.0.0.1', server.port))\n"
        "    print('free')\n"
        "except OSError:\n"
        "    print('held')\n"
        "server.wait_ready()\n"
        "server.stop()\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "home")], env=_env(tmp_path),
                          capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "held"
