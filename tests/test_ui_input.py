"""Overrides from the Prefect UI are untrusted: what is refused, with which message, and what passes.

The rule (pipelines/serve/ui_input.py) is checked on the overrides as Hydra parses them; the
attacks below are the reproductions of issue 11 plus variations. Each must end in one
ConfigError line that names the key and never shows the server's secret or files.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
from conftest import tiny_overrides

from pipelines.config.limits import default_limits
from pipelines.errors import ConfigError, UserError
from pipelines.serve.ui_input import check_syntax, shown_to_ui, untrusted_config

SECRET = "hunter2-do-not-show-7f3a"  # the value of env vars an attacker would like to read


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SECRET", "MLFLOW_TRACKING_PASSWORD", "PREFECT_API_AUTH_STRING", "POSTGRES_PASSWORD"):
        monkeypatch.setenv(name, SECRET)


@pytest.fixture
def site(tmp_path: Path) -> dict[str, Path]:
    """A state dir (with the service's own log and store), an allowed data dir, a sibling of
    the state dir holding a secret file, and symlinks inside the allowed dirs that point out."""
    state, data, sibling = tmp_path / "state", tmp_path / "data", tmp_path / "state-sibling"
    for d in (state, data, sibling):
        d.mkdir()
    (sibling / "secret.csv").write_text(f"{SECRET},label\nx,y\n")
    (data / "train.csv").write_text("text,label\ngood film,pos\nbad film,neg\n")
    (data / "out").symlink_to(sibling)
    (state / "out").symlink_to(sibling)
    (state / "logs").mkdir()  # the service's own files: never a run's input
    (state / "logs" / "mlflow-server.log").write_text(f"password={SECRET}\n")
    (state / "mlflow.db").write_text("not a corpus\n")
    (state / "mlflow-auth.db").write_text(f"admin:{SECRET}\n")  # up's MLflow logins
    return {"state": state, "data": data, "sibling": sibling}


def _attack_overrides(site: dict[str, Path]) -> list[tuple[str, list[str], str]]:
    """(id, UI overrides, the key the refusal must name)."""
    state, data, sib = site["state"], site["data"], site["sibling"]
    big = ",".join(str(i) for i in range(1, 40))
    return [
        # interpolations, escaped and otherwise, anywhere in a value
        ("escaped-interpolation", [r"tracking.run_name=$\{oc.env:MLFLOW_TRACKING_PASSWORD\}"], "tracking.run_name"),
        ("escaped-into-int", [r"pretrain.max_steps=$\{oc.env:SECRET\}"], "pretrain.max_steps"),
        ("plain-interpolation", ["tracking.run_name=${oc.env:SECRET}"], "tracking.run_name"),
        ("quoted-interpolation", ["tracking.experiment='x ${oc.env:SECRET}'"], "tracking.experiment"),
        ("escaped-dollar-only", [r"tracking.run_name=\$x"], "tracking.run_name"),
        ("in-a-list", ["finetune.inits=[pretrained,'${oc.env:SECRET}']"], "finetune.inits"),
        ("escaped-in-a-list", [r"finetune.inits=[pretrained,$\{oc.env:SECRET\}]"], "finetune.inits"),
        ("fullwidth-braces", ["tracking.run_name='＄｛oc.env:SECRET｝'"], "tracking.run_name"),
        ("format-string-template", ["finetune.zero_shot_template='{text.__init__.__globals__}'"],
         "finetune.zero_shot_template"),
        ("self-reference", ["tracking.run_name='${paths.home}'"], "tracking.run_name"),
        # keys: unknown, added, deleted, private, Hydra's own, operator-only, packages
        ("add-new-key", ["+new.key=1"], "new.key"),
        ("force-add", ["++tracking.extra=1"], "tracking.extra"),
        ("delete", ["~finetune.inits"], "finetune.inits"),
        ("target", ["+_target_=os.system"], "_target_"),
        ("hydra-key", ["hydra.run.dir=/tmp/x"], "hydra.run.dir"),
        ("hydra-group", ["hydra/launcher=basic"], "hydra/launcher"),
        ("package", ["model@tracking=gpt2_tiny"], "model"),
        ("ui-url", ["tracking.ui_url=http://evil.example/phish"], "tracking.ui_url"),
        ("tracking-uri", ["tracking.uri=http://elsewhere:5000"], "tracking.uri"),
        ("remote-code", ["model.trust_remote_code=true"], "model.trust_remote_code"),
        ("unknown-key", ["no_such_key=1"], "no_such_key"),
        ("a-whole-group-node", ["model=gpt2_tiny", "data.x=1"], "data.x"),
        ("group-traversal", ["model=../../etc"], "model"),
        ("group-absolute", ["data=/etc/passwd"], "data"),
        # values: sweeps, mappings, nesting, invisible characters, sizes
        ("simple-sweep", ["finetune.max_epochs=1,2"], "finetune.max_epochs"),
        ("glob-sweep", ["model=glob(*)"], "model"),
        ("range-sweep", ["seed=range(0,1000)"], "seed"),
        ("interval-sweep", ["finetune.lr=interval(0,1)"], "finetune.lr"),
        ("choice-sweep", ["seed=choice(1,2)"], "seed"),
        ("mapping", ["data.text_column={a:1}"], "data.text_column"),
        ("nested-list", ["finetune.inits=[[pretrained]]"], "finetune.inits"),
        ("newline", ["tracking.run_name='a\nb'"], "tracking.run_name"),
        ("nul-byte", ["tracking.run_name='a\x00b'"], "tracking.run_name"),
        ("bidi-override", ["tracking.run_name='abc\u202edef'"], "tracking.run_name"),
        ("zero-width", ["tracking.experiment='a\u200bb'"], "tracking.experiment"),
        ("very-long", ["tracking.run_name=" + "x" * 5000], "tracking.run_name"),
        ("long-string", ["tracking.run_name=" + "x" * 2000], "tracking.run_name"),
        ("long-list", ["sweep.seeds=[" + ",".join(str(i) for i in range(500)) + "]"], "sweep.seeds"),
        ("nan", ["finetune.lr=nan"], "finetune.lr"),
        # files: hub ids that are paths, globs, symlinks, traversal
        ("hub-path-dir", ["data=hub", "data.hub_path=/etc"], "data.hub_path"),
        ("hub-path-file-url", ["data=hub", "data.hub_path=file:///etc"], "data.hub_path"),
        ("hub-path-builder", ["data=hub", "data.hub_path=csv"], "data.hub_path"),
        ("hub-path-traversal", ["data=hub", "data.hub_path=../../etc"], "data.hub_path"),
        ("hub-path-url-encoded", ["data=hub", "data.hub_path=%24%7Boc.env:SECRET%7D"], "data.hub_path"),
        ("glob-into-sibling", ["data=local_labeled", f"data.path='{state}*/secret.csv'"], "data.path"),
        ("glob-through-symlink", ["data=local_labeled", f"data.path='{data}/*/secret.csv'"], "data.path"),
        ("symlink-out-of-data", ["data=local_labeled", f"data.path={data}/out/secret.csv"], "data.path"),
        ("symlink-out-of-state", ["data=local_labeled", f"data.path={state}/out/secret.csv"], "data.path"),
        ("dotdot-out-of-data", ["data=local_labeled", f"data.path={data}/../state-sibling/secret.csv"], "data.path"),
        ("glob-list-entry", ["data=local_labeled", f"data.path=[{data}/train.csv,'{sib}/*.csv']"], "data.path"),
        ("labeled-path", ["data=local_text", f"data.path={data}/train.csv", f"data.labeled_path={sib}/secret.csv"],
         "data.labeled_path"),
        ("test-path", ["data=local_labeled", f"data.path={data}/train.csv", f"data.test_path={sib}/secret.csv"],
         "data.test_path"),
        ("service-db", ["data=local_text", f"data.path={state}/mlflow.db"], "data.path"),
        ("auth-db", ["data=local_text", f"data.path={state}/mlflow-auth.db"], "data.path"),
        ("auth-db-glob", ["data=local_text", f"data.path={state}/*auth*"], "data.path"),
        ("service-logs-glob", ["data=local_text", f"data.path='{state}/**/*.log'"], "data.path"),
        ("home-glob", [f"paths.home='{state}*'"], "paths.home"),
        ("home-outside", [f"paths.home={sib}"], "paths.home"),
        ("home-through-symlink", [f"paths.home={state}/out"], "paths.home"),
        ("models-traversal", ["model.init='models:/quickstart-gpt2_tiny/1/../../../../../../../../etc'"],
         "model.init"),
        ("models-alias-traversal", ["model.init='models:/m@champion/../../../etc'"], "model.init"),
        ("runs-traversal", ["model.init='runs:/0123abcd/../../../../etc'"], "model.init"),
        ("models-percent-traversal", ["model.init='models:/m/1/%2e%2e/%2E%2E/%2e%2e/etc'"], "model.init"),
        ("runs-double-encoded", ["model.init='runs:/0123abcd/%252e%252e/x'"], "model.init"),
        ("inits-traversal", ["finetune.inits=[pretrained,'models:/m/1/hf_model/../../..']"], "finetune.inits"),
        ("init-file-url", ["model.init=file:///etc"], "model.init"),
        ("init-outside", [f"model.init={sib}"], "model.init"),
        ("tokenizer-outside", ["tokenizer.kind=pretrained", "tokenizer.path=../../../../etc"], "tokenizer.path"),
        ("distill-teacher-outside", [f"distill.teacher={sib}"], "distill.teacher"),
        ("distill-teacher-traversal", ["distill.teacher='runs:/0123abcd/../../../../etc'"], "distill.teacher"),
        ("distill-student-outside", ["distill.teacher=pretrained", "distill.student=../../../../etc"],
         "distill.student"),
        ("distill-student-file-url", ["distill.teacher=pretrained", "distill.student=file:///etc"], "distill.student"),
        ("tokenizer-hub-traversal", ["tokenizer.kind=pretrained", "tokenizer.path=a..b"], "tokenizer.path"),
        # limits (defaults; the operator raises them with --max)
        ("max-steps-float", ["pretrain.max_steps=1e12"], "pretrain.max_steps"),
        ("max-steps-int", ["pretrain.max_steps=1000000000000"], "pretrain.max_steps"),
        ("embd", ["model.n_embd=1048576"], "model.n_embd"),
        ("vocab-float", ["tokenizer.vocab_size=2e9"], "tokenizer.vocab_size"),
        ("nodes", ["trainer.num_nodes=64"], "trainer.num_nodes"),
        ("devices", ["trainer.devices=512"], "trainer.devices"),
        ("devices-list", ["trainer.devices=[" + ",".join(str(i) for i in range(40)) + "]"], "trainer.devices"),
        ("parallel", ["sweep.parallel=100000"], "sweep.parallel"),
        ("epochs", ["finetune.max_epochs=1000000"], "finetune.max_epochs"),
        ("sweep-points", ["sweep.enabled=true", f"sweep.budgets=[{big}]", f"sweep.seeds=[{big}]"], "sweep.budgets"),
        ("batch", ["pretrain.batch_size=65536"], "pretrain.batch_size"),
        ("corpus", ["data.corpus_documents=1000000000"], "data.corpus_documents"),
        ("params", ["model.n_layer=48", "model.n_embd=4096", "model.n_head=64", "model.n_inner=16384"],
         "model.parameters"),
    ]


ATTACK_IDS = [case[0] for case in _attack_overrides({k: Path("/x") for k in ("state", "data", "sibling")})]


@pytest.mark.parametrize("case", ATTACK_IDS)
def test_ui_attacks_are_refused_in_one_line_naming_the_key(case: str, site: dict[str, Path], secret_env: None,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(site["state"])  # relative paths are judged from here, as the flow-run process would
    overrides, key = next((o, k) for name, o, k in _attack_overrides(site) if name == case)
    with pytest.raises(ConfigError) as err:
        untrusted_config(tiny_overrides(site["state"]), overrides, [str(site["data"])])
    message = str(err.value)
    assert "\n" not in message and len(message) < 600
    assert key in message
    assert SECRET not in message
    assert "rejected" in message or "unknown config key" in message


def test_there_are_at_least_30_attacks() -> None:
    assert len(ATTACK_IDS) >= 30 and len(set(ATTACK_IDS)) == len(ATTACK_IDS)


def test_a_limit_names_itself_and_the_option_that_raises_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        untrusted_config(tiny_overrides(tmp_path), ["pretrain.max_steps=1e12"], [])
    assert str(err.value) == ("rejected value for 'pretrain.max_steps': 1000000000000 exceeds this service's limit "
                              "100000 (the operator raises it with transferlab up/serve --max pretrain.max_steps=N)")


def _ok_overrides(site: dict[str, Path]) -> list[list[str]]:
    data = site["data"]
    return [
        [],
        ["experiment=quickstart_bert"],
        ["model=bert_tiny", "finetune.inits=[pretrained,scratch]"],
        ["pretrain.max_steps=500", "finetune.max_epochs=3", "seed=7"],
        ["tracking.run_name=my-run", "tracking.experiment='Versuch ä 1'"],
        ["data=local_labeled", f"data.path={data}/train.csv"],
        ["data=local_labeled", f"data.path='{data}/*.csv'"],
        ["data=hub", "data.hub_path=stanfordnlp/sst2"],
        ["finetune.zero_shot_template='Review: {text} Label:'"],
        ["sweep.enabled=true", "sweep.budgets=[16,64,all]", "sweep.seeds=[0,1]", "sweep.parallel=1"],
        [f"paths.home={site['state']}/sub"],
        ["finetune.lr=1e-3", "trainer.devices=1", "tracking.run_name=null"],
        # issue 14's options reach deployed flows too: LoRA, distillation, registration, inference cost
        ["finetune.strategy=lora", "finetune.lora_rank=4", "finetune.lora_target_modules=[c_attn]"],
        ["distill.teacher=pretrained", "distill.alpha=0.7", "distill.temperature=3", "distill.unlabeled=100"],
        ["finetune.register_as=my-classifier", "evaluate.inference_examples=64", "evaluate.inference_precision=fp32"],
    ]


@pytest.mark.parametrize("index", range(15))
def test_legitimate_ui_input_is_accepted(index: int, site: dict[str, Path], secret_env: None) -> None:
    overrides = _ok_overrides(site)[index]
    cfg = untrusted_config(tiny_overrides(site["state"]), overrides, [str(site["data"])])
    assert SECRET not in json.dumps(dataclasses.asdict(cfg))


@pytest.mark.parametrize(("override", "message"), [
    ("hydra.run.dir=/tmp/x", "hydra.* configures Hydra's runtime"),
    ("hydra/launcher=basic", "hydra.* configures Hydra's runtime"),
    ("+_target_=os.system", "keys starting with '_'"),
    ("model._target_=builtins.exec", "keys starting with '_'"),
    ("~finetune.inits", "deleting keys"),
    ("tracking.run_name=${oc.env:POSTGRES_PASSWORD}", "interpolations"),
    ("tracking.experiment=a${paths.home}", "interpolations"),
    ("tracking.uri=http://elsewhere:5000", "tracking.uri is set by whoever started the service"),
    ("tracking.ui_url=http://elsewhere:5000", "tracking.ui_url is set by whoever started the service"),
    ("model.trust_remote_code=true", "model.trust_remote_code is set by whoever started the service"),
    ("model.init_path=/tmp", "model.init_path is set by whoever started the service"),
    ("sweep.cluster=tcp://evil.example:8786", "sweep.cluster is set by whoever started the service"),
    ("+finetune.extra=1", "adding keys (+)"),
    ("finetune.max_epochs", "expected KEY=VALUE"),
])
def test_refused_overrides_name_themselves(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match="rejected override") as err:
        check_syntax(["finetune.max_epochs=2", override])
    assert override in str(err.value) and message in str(err.value)


def test_ordinary_overrides_pass() -> None:
    check_syntax(["experiment=quickstart_bert", "model=bert_tiny", "finetune.inits=[pretrained,scratch]",
                  "tracking.experiment=mine", "sweep.budgets=[16,64]", "data.path='data/*.csv'"])


def test_home_must_stay_in_the_state_dir(tmp_path: Path) -> None:
    server = tiny_overrides(tmp_path / "state")
    inside = untrusted_config(server, [f"paths.home={tmp_path / 'state' / 'sub'}"], [])
    assert inside.paths.home == str(tmp_path / "state" / "sub")
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
    with pytest.raises(ConfigError, match="'data.path'"):  # '<data>*' reaches siblings such as data-old/
        untrusted_config(server, [*read, f"data.path='{data}*/corpus.txt'"], [str(data)])
    (data / "link").symlink_to(tmp_path)  # a symlink out of an allowed dir is followed, then refused
    with pytest.raises(ConfigError, match="'data.path'"):
        untrusted_config(server, [*read, f"data.path={data / 'link' / 'secret.txt'}"], [str(data)])
    with pytest.raises(ConfigError, match="'data.path'"):  # ... also when only a glob match goes through it
        untrusted_config(server, [*read, f"data.path='{data}/*/secret.txt'"], [str(data)])
    with pytest.raises(ConfigError, match="'finetune.inits'"):
        untrusted_config(server, [f"finetune.inits=[pretrained,{tmp_path / 'ckpt'}]"], [str(data)])
    cfg = untrusted_config(server, [*read, f"data.path={data / 'corpus.txt'}"], [str(data)])
    assert cfg.data.path == str(data / "corpus.txt")


def test_a_hub_id_that_exists_on_disk_is_judged_as_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "org" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    server = tiny_overrides(tmp_path / "state")
    with pytest.raises(ConfigError, match="'model.init': 'org/name' is outside the directories"):
        untrusted_config(server, ["model.init=org/name"], [])
    with pytest.raises(ConfigError, match="'data.hub_path': 'org/name' is a path on the server"):
        untrusted_config(server, ["data=hub", "data.hub_path=org/name"], [])
    cfg = untrusted_config(server, ["data=hub", "data.hub_path=other/name"], [])
    assert cfg.data.hub_path == "other/name"


def test_validation_errors_come_through_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no_such_key"):
        untrusted_config(tiny_overrides(tmp_path), ["no_such_key=1"], [])
    with pytest.raises(ConfigError, match="finetune.max_epochs"):
        untrusted_config(tiny_overrides(tmp_path), ["finetune.max_epochs=0"], [])


def test_operator_overrides_are_trusted_and_come_first(tmp_path: Path) -> None:
    server = [*tiny_overrides(tmp_path), "model.trust_remote_code=true"]  # the operator may
    cfg = untrusted_config(server, ["finetune.max_epochs=3"], [])
    assert cfg.model.trust_remote_code is True and cfg.finetune.max_epochs == 3


# ------------------------------------------------------------------------------------ limits


def test_the_operator_raises_limits_and_the_ui_cannot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.config.limits import LIMITS_ENV, parse_operator_limits

    server = tiny_overrides(tmp_path)
    limits = parse_operator_limits(["pretrain.max_steps=300000", "sweep.points=2"])
    assert untrusted_config(server, ["pretrain.max_steps=200000"], [], limits).pretrain.max_steps == 200000
    with pytest.raises(ConfigError, match=r"'sweep.seeds': a sweep of 27 points exceeds this service's limit 2 .*--max "
                                          "sweep.points=N"):
        untrusted_config(server, ["experiment=data_efficiency"], [], limits)
    monkeypatch.setenv(LIMITS_ENV, json.dumps(limits))  # how up/serve hand them to the flow-run processes
    assert untrusted_config(server, ["pretrain.max_steps=200000"], []).pretrain.max_steps == 200000
    with pytest.raises(ConfigError, match="not a config key|unknown config key"):
        untrusted_config(server, ["limits.pretrain.max_steps=1"], [])
    for bad in (["no.such=1"], ["pretrain.max_steps=lots"], ["pretrain.max_steps"], ["pretrain.max_steps=-1"]):
        with pytest.raises(UserError, match="bad value for --max"):
            parse_operator_limits(bad)


def test_up_and_serve_take_max_and_refuse_defaults_over_the_limits(tmp_path: Path) -> None:
    from pipelines.cli import build_parser
    from pipelines.serve.services import operator_limits

    args = build_parser().parse_args(["serve", "--max", "pretrain.max_steps=50", "--max", "trainer.devices=2"])
    assert args.max_entries == ["pretrain.max_steps=50", "trainer.devices=2"]
    assert "--max KEY=N" in build_parser()._subparsers._group_actions[0].choices["up"].format_help()
    from pipelines.config.compose import compose

    cfg = compose(tiny_overrides(tmp_path))
    assert operator_limits(cfg, args.max_entries)["trainer.devices"] == 2
    with pytest.raises(ConfigError, match="pretrain.max_steps': 6 exceeds this service's limit 5"):
        operator_limits(cfg, ["pretrain.max_steps=5"])


def test_default_limits_fit_the_machine_and_the_presets(tmp_path: Path) -> None:
    from pipelines.config.compose import compose, group_options
    from pipelines.config.limits import check_limits

    limits = default_limits()
    assert limits["sweep.parallel"] == os.cpu_count() and limits["trainer.num_nodes"] == 1
    for experiment in group_options("experiment"):
        for model in group_options("model"):  # every shipped preset runs within the defaults
            check_limits(compose([f"experiment={experiment}", f"model={model}", f"paths.home={tmp_path}"]), limits)


# ----------------------------------------------------------------- MLflow URIs, for everyone


@pytest.mark.parametrize("uri", ["models:/m/1/../../../etc", "models:/m@champion/../x", "runs:/abc/../../..",
                                 "runs:/abc/./hf_model", "models:/m/1/a\\..\\b", "models:/m/1/%2e%2e/x",
                                 "runs:/abc/hf_model%2F..%2F..%2Fetc"])
def test_mlflow_uris_cannot_climb_out_of_their_artifacts(uri: str, tmp_path: Path) -> None:
    from pipelines.checkpoint_refs import locate_checkpoint
    from pipelines.config.compose import compose

    cfg = compose(tiny_overrides(tmp_path))
    with pytest.raises(UserError, match=r"may not contain '\.' or '\.\.' segments"):
        locate_checkpoint(cfg, uri, "finetune.inits")
    assert not (tmp_path / "cache").exists()  # refused before anything was looked up or copied


def test_a_symlink_in_a_local_artifact_dir_is_not_followed_out(tmp_path: Path) -> None:
    from pipelines.checkpoint_refs import _check_contained

    artifacts, outside = tmp_path / "artifacts", tmp_path / "outside"
    artifacts.mkdir()
    outside.mkdir()
    (artifacts / "hf_model").mkdir()
    (artifacts / "escape").symlink_to(outside)
    _check_contained(str(artifacts), "hf_model", "models:/m/1/hf_model", "model.init")
    _check_contained(f"file://{artifacts}", "hf_model", "models:/m/1/hf_model", "model.init")
    with pytest.raises(UserError, match="leads outside the artifacts"):
        _check_contained(f"file://{artifacts}", "escape", "models:/m/1/escape", "model.init")
    _check_contained("mlflow-artifacts:/1/abc/artifacts", "escape", "models:/m/1/escape", "model.init")  # remote


# ------------------------------------------------------------------ errors shown to the UI


def test_ui_errors_name_the_key_and_file_not_the_contents(tmp_path: Path) -> None:
    from pipelines.config.compose import compose
    from pipelines.preflight import check_inputs

    data = tmp_path / "data"
    data.mkdir()
    (data / "leak.csv").write_text(f"{SECRET},other\nx,y\n")
    cfg = compose(tiny_overrides(tmp_path / "state", "data=local_labeled", f"data.path={data / 'leak.csv'}"))
    with pytest.raises(UserError) as err:
        check_inputs(cfg, "finetune")
    assert SECRET in str(err.value)  # the CLI user owns the file: the columns help them
    shown = shown_to_ui(err.value)
    assert SECRET not in shown and "data.text_column" in shown and "leak.csv" in shown


def test_a_failed_ui_run_shows_the_message_without_contents() -> None:
    from modules.data.errors import DataError
    from pipelines.serve.deployments import _user_errors_fail_cleanly

    def flow_body() -> None:
        try:
            raise DataError(f"data.label_column: labels ['{SECRET}'] are not among the class names ['a']",
                            f"['{SECRET}']", "['a']")
        except DataError as exc:
            raise UserError(str(exc)) from exc

    state = _user_errors_fail_cleanly(flow_body)()
    assert state.is_failed() and "data.label_column" in state.message and SECRET not in state.message


def test_an_mlflow_artifact_that_is_no_model_is_never_published_in_the_init_cache(tmp_path: Path) -> None:
    from pipelines.checkpoint_refs import resolve_init
    from pipelines.config.compose import compose
    from pipelines.tracking.runs import Tracker

    cfg = compose(tiny_overrides(tmp_path))
    tracker = Tracker.from_config(cfg)
    run_id = tracker.start_run("x", {})
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("not a model\n")
    tracker.client.log_artifact(run_id, str(notes))
    cfg = compose(tiny_overrides(tmp_path, f"model.init=runs:/{run_id}/notes"))
    with pytest.raises(UserError, match="has no config.json"):
        resolve_init(cfg)
    cfg = compose(tiny_overrides(tmp_path, f"model.init=runs:/{run_id}/notes/../../../.."))
    with pytest.raises(UserError, match=r"'\.\.' segments"):
        resolve_init(cfg)
    init_cache = tmp_path / "cache" / "init"
    assert not init_cache.exists() or not any(init_cache.iterdir())  # nothing copied or left half-written


def test_the_hidden_form_survives_a_process_boundary() -> None:
    import pickle

    from modules.data.errors import DataError
    from modules.models.freeze import StrategyError

    err = pickle.loads(pickle.dumps(DataError(f"data.text_column: column 'x' not in f.csv (columns: {SECRET})",
                                              SECRET)))
    assert SECRET in str(err) and SECRET not in err.without_content and "f.csv" in err.without_content
    assert type(pickle.loads(pickle.dumps(StrategyError("bad strategy")))) is StrategyError


def test_served_flows_refuse_before_any_work_and_show_no_secret(tmp_path: Path, prefect_harness: None,
                                                                secret_env: None,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.config.limits import LIMITS_ENV, parse_operator_limits
    from pipelines.serve.deployments import SERVER_OVERRIDES_ENV, ui_data_efficiency, ui_transfer_learning

    monkeypatch.setenv(SERVER_OVERRIDES_ENV, json.dumps(tiny_overrides(tmp_path)))
    monkeypatch.setenv(LIMITS_ENV, json.dumps(parse_operator_limits(["pretrain.max_steps=1000"])))
    state = ui_transfer_learning(overrides=[r"tracking.run_name=$\{oc.env:SECRET\}"], return_state=True)
    assert state.is_failed() and "tracking.run_name" in state.message and SECRET not in state.message
    state = ui_transfer_learning(max_steps=5000, return_state=True)  # a typed parameter meets the operator's limit
    assert state.is_failed() and state.message == (
        "transferlab: rejected value for 'pretrain.max_steps': 5000 exceeds this service's limit 1000 (the operator "
        "raises it with transferlab up/serve --max pretrain.max_steps=N)")
    state = ui_data_efficiency(budgets=list(range(1, 40)), seeds=list(range(40)), return_state=True)
    assert state.is_failed() and "--max sweep.points=N" in state.message
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "cache").exists()  # nothing started
