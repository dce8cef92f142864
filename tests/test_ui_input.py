"""Overrides from the Prefect UI are untrusted: what is refused, with which message, and what passes."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tiny_overrides

from pipelines.errors import ConfigError
from pipelines.ui_input import check_syntax, untrusted_config


@pytest.mark.parametrize(("override", "message"), [
    ("hydra.run.dir=/tmp/x", "hydra.* configures Hydra's runtime"),
    ("hydra/launcher=basic", "hydra.* configures Hydra's runtime"),
    ("+_target_=os.system", "keys starting with '_'"),
    ("model._target_=builtins.exec", "keys starting with '_'"),
    ("~finetune.inits", "deleting keys"),
    ("tracking.run_name=${oc.env:POSTGRES_PASSWORD}", "interpolations"),
    ("tracking.experiment=a${paths.home}", "interpolations"),
    ("tracking.uri=http://elsewhere:5000", "tracking.uri is set by whoever started the service"),
    ("model.trust_remote_code=true", "model.trust_remote_code is set by whoever started the service"),
    ("model.init_path=/tmp", "model.init_path is set by whoever started the service"),
    ("finetune.max_epochs", "expected KEY=VALUE"),
])
def test_refused_overrides_name_themselves(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match="rejected override") as err:
        check_syntax(["finetune.max_epochs=2", override])
    assert override in str(err.value) and message in str(err.value)


def test_ordinary_overrides_pass() -> None:
    check_syntax(["experiment=quickstart_bert", "model=bert_tiny", "finetune.inits=[pretrained,scratch]",
                  "+finetune.extra=1", "tracking.experiment=mine", "sweep.budgets=[16,64]"])


def test_home_must_stay_in_the_state_dir(tmp_path: Path) -> None:
    server = tiny_overrides(tmp_path / "state")
    inside = untrusted_config(server, [f"paths.home={tmp_path / 'state' / 'sub'}"], [])
    assert inside["paths"]["home"] == str(tmp_path / "state" / "sub")
    with pytest.raises(ConfigError, match="'paths.home': .* is outside the service's state dir"):
        untrusted_config(server, [f"paths.home={tmp_path / 'elsewhere'}"], [])
    with pytest.raises(ConfigError, match="outside the service's state dir"):
        untrusted_config(server, [f"paths.home={tmp_path / 'state' / '..' / 'escape'}"], [])


def test_files_a_run_reads_must_lie_in_allowed_dirs(tmp_path: Path) -> None:
    server = tiny_overrides(tmp_path / "state")
    data = tmp_path / "data"
    data.mkdir()
    (data / "corpus.txt").write_text("some text\n" * 10)
    (tmp_path / "secret.txt").write_text("x\n")
    read = ["data=local_text"]
    with pytest.raises(ConfigError, match=r"'data.path': .*secret.txt.* is outside the directories this service reads"):
        untrusted_config(server, [*read, f"data.path={tmp_path / 'secret.txt'}"], [str(data)])
    with pytest.raises(ConfigError, match="'data.path'"):  # a glob that climbs out is judged by its literal part
        untrusted_config(server, [*read, f"data.path={data}/../*.txt"], [str(data)])
    (data / "link").symlink_to(tmp_path)  # a symlink out of an allowed dir is followed, then refused
    with pytest.raises(ConfigError, match="'data.path'"):
        untrusted_config(server, [*read, f"data.path={data / 'link' / 'secret.txt'}"], [str(data)])
    with pytest.raises(ConfigError, match="'finetune.inits'"):
        untrusted_config(server, [f"finetune.inits=[pretrained,{tmp_path / 'ckpt'}]"], [str(data)])
    cfg = untrusted_config(server, [*read, f"data.path={data / 'corpus.txt'}"], [str(data)])
    assert cfg["data"]["path"] == str(data / "corpus.txt")


def test_validation_errors_come_through_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no_such_key"):
        untrusted_config(tiny_overrides(tmp_path), ["no_such_key=1"], [])
    with pytest.raises(ConfigError, match="finetune.max_epochs"):
        untrusted_config(tiny_overrides(tmp_path), ["finetune.max_epochs=0"], [])


def test_operator_overrides_are_trusted_and_come_first(tmp_path: Path) -> None:
    server = [*tiny_overrides(tmp_path), "model.trust_remote_code=true"]  # the operator may
    cfg = untrusted_config(server, ["finetune.max_epochs=3"], [])
    assert cfg["model"]["trust_remote_code"] is True and cfg["finetune"]["max_epochs"] == 3
