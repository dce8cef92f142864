"""The CLI starts Prefect's temporary server early (before importing Prefect's server module) and
adopts it: one process, not two."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import sys

import httpx
from pipelines.runtime import lifecycle

launch, server_module_loaded = lifecycle._launch_server_process, []

def spy(port):
    server_module_loaded.append("prefect.server.api.server" in sys.modules)
    return launch(port)

lifecycle._launch_server_process = spy
server = lifecycle.own_prefect_server(wait=False)
assert server_module_loaded == [False], "the process waited for Prefect's server module to import"
launched = server._launched
assert launched is not None and launched.poll() is None, "launch() started no process"
assert not server.running
server.start()  # what the CLI does once the flows are imported: wait, do not start another
assert server.server_process is launched, "start() started a second server"
assert httpx.get(server.api_url + "/health", timeout=5).status_code == 200
server.start()  # idempotent
assert server.server_process is launched
server.stop()
assert launched.poll() is not None, "stop() left the server running"
print("adopted", server.port)
"""


def test_launched_server_is_adopted_by_start_and_stopped(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("adopted ")
