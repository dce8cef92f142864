"""`transferlab up`/`serve` refuse bad starts at once; the deployed flows' parameters and checks.

The servers themselves are exercised in tests/test_up.py (slow), the Postgres topology in
tests/test_postgres_stack.py and the UIs in tests/test_browser.py.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from conftest import tiny_overrides

from pipelines.cli import main


@pytest.fixture
def listening() -> int:
    """A port something already listens on."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    yield s.getsockname()[1]
    s.close()


def test_up_names_a_taken_port_and_the_flag_that_moves_it(tmp_path: Path, listening: int,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["up", "--prefect-port", str(listening), "--mlflow-port", "1", f"paths.home={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"port {listening} on 127.0.0.1 is taken (for the Prefect server)" in err and "--prefect-port N" in err
    assert not (tmp_path / "logs").exists()  # nothing was started

    code = main(["up", "--mlflow-port", str(listening), "--prefect-port", "0", f"paths.home={tmp_path}"])
    assert code == 2 and "bad value for --prefect-port: 0" in capsys.readouterr().err


def test_up_refuses_one_port_for_both(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["up", "--prefect-port", "4999", "--mlflow-port", "4999", f"paths.home={tmp_path}"]) == 2
    assert "both 4999" in capsys.readouterr().err


def test_up_checks_its_overrides_and_data_dirs_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["up", f"paths.home={tmp_path}", "no_such_key=1"]) == 2
    assert "unknown config key 'no_such_key'" in capsys.readouterr().err
    assert main(["up", "--data-dir", str(tmp_path / "missing"), f"paths.home={tmp_path}"]) == 2
    assert "bad value for --data-dir" in capsys.readouterr().err
    assert main(["up", "--limit", "0"]) == 2
    assert "bad value for --limit" in capsys.readouterr().err


def test_serve_needs_a_prefect_api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert main(["serve", f"paths.home={tmp_path}"]) == 2
    assert "transferlab serve needs PREFECT_API_URL" in capsys.readouterr().err


def test_deployment_parameters_are_typed_with_presets_as_choices() -> None:
    from pipelines.serve.deployments import FLOWS

    assert [f.name for f in FLOWS] == ["transfer_learning", "prep", "pretrain", "finetune", "evaluate",
                                      "data_efficiency"]
    props = FLOWS[0].parameters.model_dump()["properties"]
    assert set(props) == {"experiment", "model", "max_steps", "label_budget", "overrides"}
    experiments = props["experiment"]["anyOf"][0]["enum"]
    assert {"quickstart", "quickstart_bert", "data_efficiency"} <= set(experiments)
    assert "gpt2_tiny" in props["model"]["anyOf"][0]["enum"]
    assert props["max_steps"]["anyOf"][0]["type"] == "integer"
    assert props["overrides"]["anyOf"][0] == {"items": {"type": "string"}, "type": "array"}
    assert "finetune.train_examples" in props["label_budget"]["description"]  # from the docstring
    sweep = FLOWS[-1].parameters.model_dump()["properties"]
    assert sweep["budgets"]["anyOf"][0]["items"] == {"type": "integer"}


def test_each_deployed_flow_loads_by_its_module_path() -> None:
    """A deployment's entrypoint is module.function (EntrypointType.MODULE_PATH): each flow's
    function name must be the module attribute that holds it, distinct from the CLI's flows."""
    from pipelines.serve import deployments

    for f in deployments.FLOWS:
        assert f.fn.__name__.startswith("ui_") and getattr(deployments, f.fn.__name__) is f


def test_typed_parameters_become_overrides_before_the_free_form_ones() -> None:
    from pipelines.serve.deployments import ui_overrides

    assert ui_overrides("quickstart_bert", "bert_tiny", 50, 32, ["finetune.max_epochs=2"]) == [
        "experiment=quickstart_bert", "model=bert_tiny", "pretrain.max_steps=50", "finetune.train_examples=32",
        "finetune.max_epochs=2"]
    assert ui_overrides(None, None, None, None, None) == []


def test_a_rejected_ui_run_fails_with_one_line_before_any_work(tmp_path: Path, prefect_harness: None,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from pipelines.serve.deployments import SERVER_OVERRIDES_ENV, ui_transfer_learning

    monkeypatch.setenv(SERVER_OVERRIDES_ENV, json.dumps(tiny_overrides(tmp_path)))
    state = ui_transfer_learning(overrides=["hydra.job.chdir=true"], return_state=True)
    assert state.is_failed()
    assert state.message == ("transferlab: rejected override 'hydra.job.chdir=true': hydra.* configures Hydra's "
                             "runtime and is not accepted")
    assert not (tmp_path / "mlflow.db").exists()  # no parent run, no stage started
    state = ui_transfer_learning(experiment="data_efficiency", return_state=True)
    assert state.is_failed() and "start the data_efficiency deployment" in state.message


# --- logins off loopback (`up --host`, `--auth`) ---------------------------------------------

GOOD_LOGINS = {"PREFECT_SERVER_API_AUTH_STRING": "ops:Prefect-pw-7f3k9q",
               "MLFLOW_AUTH_ADMIN_PASSWORD": "MLflow-pw-2x8m4z"}


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("LOCALHOST", True), ("::1", True),
    ("[::1]", True), ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("192.168.0.7", False),
    ("example.org", False), ("localhost.example.org", False), ("", False),
])
def test_only_loopback_addresses_count_as_private(host: str, loopback: bool) -> None:
    from pipelines.serve.services import is_loopback

    assert is_loopback(host) is loopback


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "example.org"])
def test_up_off_loopback_without_logins_refuses_in_one_line_and_starts_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], host: str) -> None:
    for key in ("PREFECT_SERVER_API_AUTH_STRING", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_AUTH_ADMIN_USERNAME"):
        monkeypatch.delenv(key, raising=False)
    assert main(["up", "--host", host, f"paths.home={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert f"--host {host} is reachable from other machines" in err
    assert "PREFECT_SERVER_API_AUTH_STRING=admin:<password>" in err and "MLFLOW_AUTH_ADMIN_PASSWORD=" in err
    assert "bind to 127.0.0.1" in err
    assert not (tmp_path / "logs").exists() and not (tmp_path / "mlflow-auth").exists()


@pytest.mark.parametrize(("env", "named"), [
    ({"MLFLOW_AUTH_ADMIN_PASSWORD": "MLflow-pw-2x8m4z"}, "PREFECT_SERVER_API_AUTH_STRING is not set"),
    ({"PREFECT_SERVER_API_AUTH_STRING": "ops:Prefect-pw-7f3k9q"}, "MLFLOW_AUTH_ADMIN_PASSWORD is not set"),
    ({**GOOD_LOGINS, "PREFECT_SERVER_API_AUTH_STRING": "Prefect-pw-7f3k9q"}, "must be USER:PASSWORD"),
    ({**GOOD_LOGINS, "PREFECT_SERVER_API_AUTH_STRING": ":Prefect-pw-7f3k9q"}, "must be USER:PASSWORD"),
    ({**GOOD_LOGINS, "PREFECT_SERVER_API_AUTH_STRING": "admin:short"},
     "the password in PREFECT_SERVER_API_AUTH_STRING is shorter than 12"),
    ({**GOOD_LOGINS, "MLFLOW_AUTH_ADMIN_PASSWORD": "password1234"}, "well-known default"),
    ({**GOOD_LOGINS, "MLFLOW_AUTH_ADMIN_PASSWORD": "aaaaaaaaaaaaaaaa"}, "too repetitive"),
    ({**GOOD_LOGINS, "MLFLOW_AUTH_ADMIN_PASSWORD": "short1"}, "MLFLOW_AUTH_ADMIN_PASSWORD is shorter than 12"),
])
def test_up_names_the_missing_or_weak_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str], env: dict[str, str],
                                            named: str) -> None:
    for key in ("PREFECT_SERVER_API_AUTH_STRING", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["up", "--host", "0.0.0.0", f"paths.home={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and named in err, err
    assert not (tmp_path / "logs").exists()
    # --auth asks the same on loopback
    assert main(["up", "--auth", f"paths.home={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "with --auth both UIs need a login" in err and named in err


def test_loopback_keeps_running_without_logins_and_off_loopback_uses_them(tmp_path: Path) -> None:
    from pipelines.serve.services import client_auth_env, credentials

    assert credentials({}, "127.0.0.1", forced=False) is None
    assert credentials(GOOD_LOGINS, "127.0.0.1", forced=False) is None  # set but not asked for
    assert client_auth_env(None) == {}
    for host, forced in (("0.0.0.0", False), ("127.0.0.1", True)):
        creds = credentials(GOOD_LOGINS, host, forced)
        assert creds is not None
        assert client_auth_env(creds) == {  # what the runner and its flow runs log in with
            "PREFECT_API_AUTH_STRING": "ops:Prefect-pw-7f3k9q",
            "MLFLOW_TRACKING_USERNAME": "admin",
            "MLFLOW_TRACKING_PASSWORD": "MLflow-pw-2x8m4z",
        }
        assert len(creds.flask_secret_key) >= 32  # generated when not given
    creds = credentials({**GOOD_LOGINS, "MLFLOW_AUTH_ADMIN_USERNAME": "ops",
                         "MLFLOW_FLASK_SERVER_SECRET_KEY": "k" * 40}, "0.0.0.0", False)
    assert creds is not None and creds.mlflow_username == "ops" and creds.flask_secret_key == "k" * 40


def test_mlflow_auth_env_points_mlflow_at_a_private_config_in_the_state_dir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import stat

    from mlflow.server.auth.config import read_auth_config

    from pipelines.serve.services import credentials, mlflow_auth_env

    creds = credentials(GOOD_LOGINS, "0.0.0.0", False)
    assert creds is not None
    env = mlflow_auth_env(creds, tmp_path)
    config = Path(env["MLFLOW_AUTH_CONFIG_PATH"])
    assert config.parent == tmp_path / "mlflow-auth" and stat.S_IMODE(config.stat().st_mode) == 0o600
    assert "MLflow-pw-2x8m4z" not in config.read_text()  # the password travels in the env only
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    read = read_auth_config()
    assert read.database_uri == f"sqlite:///{tmp_path / 'mlflow-auth.db'}"
    assert (read.admin_username, read.admin_password) == ("admin", "MLflow-pw-2x8m4z")
    assert read.default_permission == "READ"
