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
    from pipelines.deployments import FLOWS

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


def test_typed_parameters_become_overrides_before_the_free_form_ones() -> None:
    from pipelines.deployments import ui_overrides

    assert ui_overrides("quickstart_bert", "bert_tiny", 50, 32, ["finetune.max_epochs=2"]) == [
        "experiment=quickstart_bert", "model=bert_tiny", "pretrain.max_steps=50", "finetune.train_examples=32",
        "finetune.max_epochs=2"]
    assert ui_overrides(None, None, None, None, None) == []


def test_a_rejected_ui_run_fails_with_one_line_before_any_work(tmp_path: Path, prefect_harness: None,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from pipelines.deployments import SERVER_OVERRIDES_ENV, transfer_learning

    monkeypatch.setenv(SERVER_OVERRIDES_ENV, json.dumps(tiny_overrides(tmp_path)))
    state = transfer_learning(overrides=["hydra.job.chdir=true"], return_state=True)
    assert state.is_failed()
    assert state.message == ("transferlab: rejected override 'hydra.job.chdir=true': hydra.* configures Hydra's "
                             "runtime and is not accepted")
    assert not (tmp_path / "mlflow.db").exists()  # no parent run, no stage started
    state = transfer_learning(experiment="data_efficiency", return_state=True)
    assert state.is_failed() and "start the data_efficiency deployment" in state.message
