"""Overrides that arrive from the Prefect UI are untrusted input.

Whoever can open the UI can start a run with any parameters, so a deployed flow checks
them before any work, with one clear line naming the key at fault. The check is a rule
about what a UI override may be, applied to the override as Hydra's own parser reads it
(Hydra unescapes ``\\$``/``\\{`` after any look at the raw text, so the raw string proves
nothing):

- **one known key, one plain value**: ``KEY=VALUE`` where KEY is a config group
  (``model=bert_tiny``, VALUE one of its presets) or a key of the schema
  (``pipelines/config/schema.py``) made of lowercase names; no ``+``/``++`` (adding keys), ``~``
  (deleting), ``@package``, ``hydra.*`` or ``_``-prefixed parts (``_target_``), no sweeps
  (``a=1,2``, ``choice()``, ``range()``, ``interval()``, ``glob()``), no mappings;
- **values are data, never expressions**: strings, numbers, booleans, null, or a flat list
  of them; no string may contain ``$``, ``\\``, ``{`` or ``}`` (so no ``${...}``
  interpolation can exist after parsing; ``finetune.zero_shot_template`` may hold its one
  placeholder ``{text}``), control or invisible characters; numbers are finite;
- **sizes**: at most ``MAX_OVERRIDES`` overrides of ``MAX_OVERRIDE_CHARS`` characters,
  strings of ``MAX_VALUE_CHARS``, lists of ``MAX_LIST_ITEMS`` entries;
- keys only the operator may set: ``tracking.uri`` (runs log to the server the service was
  started with), ``tracking.ui_url`` (the link in every run's summary),
  ``model.trust_remote_code`` (runs code from a checkpoint), ``model.init_path`` (filled in
  by transferlab), ``sweep.cluster`` (a Dask scheduler exchanges pickles with the service:
  one at an address of the user's choosing could run code in it and read its configs);
- a ``distill.teacher``/``distill.student`` checkpoint is checked like ``model.init``;
- after composing and validating: the operator's limits (``pipelines.config.limits``); ``paths.home``
  without glob characters and inside the service's state dir; every local file or dir the
  run would read (data files, each match of a glob, a tokenizer or checkpoint dir) resolved
  through symlinks and inside the state dir (not its ``SERVICE_FILES``) or a ``--data-dir``;
  no URLs other than ``runs:/``/``models:/``; hub ids (``data.hub_path``,
  ``model.init``, ``tokenizer.path``) of the form ``name`` or ``org/name`` and not a path
  that exists; ``runs:/``/``models:/`` URIs without ``.``/``..`` path segments.

Messages name the key and show at most the first ``SHOWN_CHARS`` characters of the
override as typed (never a resolved value or a file's contents). The CLI and tests call
the flows in ``pipelines.flows`` directly and are not limited.
"""

from __future__ import annotations

import glob
import math
import os
import re
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Any

from pipelines.config.compose import DATA_PATH_KEYS, compose, config_groups, group_options
from pipelines.config.schema import TransferLabConfig
from pipelines.errors import ConfigError, UserError

OPERATOR_ONLY = ("tracking.uri", "tracking.ui_url", "model.trust_remote_code", "model.init_path", "sweep.cluster")
# How `transferlab up`/`serve` hand the operator's choices to the flow-run processes.
SERVER_OVERRIDES_ENV = "TRANSFERLAB_SERVER_OVERRIDES"  # JSON list of overrides
DATA_DIRS_ENV = "TRANSFERLAB_DATA_DIRS"  # os.pathsep-separated dirs a UI run may read files from

MAX_OVERRIDES = 64
MAX_OVERRIDE_CHARS = 4096
MAX_VALUE_CHARS = 1024
MAX_LIST_ITEMS = 64
SHOWN_CHARS = 120
FORBIDDEN_CHARS = "$\\{}"
GLOB_CHARS = "*?["
# Unicode categories that are not visible text: controls (NUL, newline), format characters
# (zero-width, bidi overrides), surrogates, private use, unassigned, line/paragraph separators.
INVISIBLE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
KEY_PART = re.compile(r"[a-z][a-z0-9_]*\Z")
# Hugging Face repo ids: `name` or `org/name`, letters, digits, `-`, `_`, `.`, no `--`/`..`.
_ID_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
HUB_ID = re.compile(rf"{_ID_PART}(?:/{_ID_PART})?\Z")
TEMPLATE_KEY = "finetune.zero_shot_template"


def _shown(text: str) -> str:
    """An override as typed, quoted on one line (repr escapes newlines), cut to SHOWN_CHARS."""
    return repr(text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "...")


@lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    from omegaconf import OmegaConf

    from pipelines.config.schema import TransferLabConfig

    return OmegaConf.to_container(OmegaConf.structured(TransferLabConfig))  # type: ignore[return-value]


def _is_leaf(key: str) -> bool | None:
    """True: a schema key holding a value; False: a node of keys; None: unknown."""
    node: Any = _schema()
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return not isinstance(node, dict)


def _check_string(key: str, item: str, text: str) -> None:
    normal = unicodedata.normalize("NFKC", text)  # fullwidth ＄｛ count as $ {
    if len(text) > MAX_VALUE_CHARS:
        raise ConfigError(f"rejected value for '{key}': longer than {MAX_VALUE_CHARS} characters")
    if key == TEMPLATE_KEY:
        normal = normal.replace("{text}", "")
    if any(c in FORBIDDEN_CHARS for c in normal):
        raise ConfigError(f"rejected override {_shown(item)}: values from the UI may not contain $ \\ {{ or }} "
                          "(interpolations ${...} and escapes are not accepted from the UI)")
    if any(unicodedata.category(c) in INVISIBLE for c in text):
        raise ConfigError(f"rejected value for '{key}': control or invisible characters are not accepted "
                          "from the UI")


def _check_value(key: str, item: str, value: Any, depth: int = 0) -> None:
    """A parsed value: a string, number, bool or null, or a flat list of them."""
    if isinstance(value, dict):
        raise ConfigError(f"rejected value for '{key}': mappings ({{...}}) are not accepted from the UI")
    if isinstance(value, list):
        if depth:
            raise ConfigError(f"rejected value for '{key}': nested lists are not accepted from the UI")
        if len(value) > MAX_LIST_ITEMS:
            raise ConfigError(f"rejected value for '{key}': a list of {len(value)} entries (at most "
                              f"{MAX_LIST_ITEMS} from the UI)")
        for v in value:
            _check_value(key, item, v, depth + 1)
    elif isinstance(value, str):
        _check_string(key, item, value)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"rejected value for '{key}': {value} is not a finite number")
    elif value is not None and not isinstance(value, (bool, int, float)):
        raise ConfigError(f"rejected value for '{key}': not a plain value")


def parse_ui_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """(key, parsed value) of each UI override, after the rule above; ``ConfigError`` otherwise."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ValueType

    if not isinstance(overrides, list) or len(overrides) > MAX_OVERRIDES:
        raise ConfigError(f"rejected overrides: a list of at most {MAX_OVERRIDES} KEY=VALUE entries is accepted")
    parser = OverridesParser.create()
    groups = set(config_groups())
    out: list[tuple[str, Any]] = []
    for item in overrides:
        if not isinstance(item, str) or "=" not in item:
            shown = _shown(item) if isinstance(item, str) else type(item).__name__
            if isinstance(item, str) and item.strip().startswith("~"):
                raise ConfigError(f"rejected override {shown}: deleting keys (~) is not accepted from the UI")
            raise ConfigError(f"rejected override {shown}: expected KEY=VALUE")
        typed_key = item.split("=", 1)[0].strip()
        if len(item) > MAX_OVERRIDE_CHARS:
            raise ConfigError(f"rejected override for {typed_key[:SHOWN_CHARS]!r}: longer than "
                              f"{MAX_OVERRIDE_CHARS} characters")
        try:
            ov = parser.parse_override(item)
        except Exception as exc:  # Hydra's grammar errors: their text may quote the input at length
            raise ConfigError(f"rejected override {_shown(item)}: not a valid KEY=VALUE override (quote values "
                              "with spaces or special characters, e.g. key='a b')") from exc
        key = ov.key_or_group
        parts = re.split(r"[./]", key)
        if parts[0] == "hydra":
            raise ConfigError(f"rejected override {_shown(item)}: hydra.* configures Hydra's runtime and is not "
                              "accepted")
        if any(p.startswith("_") for p in parts):
            raise ConfigError(f"rejected override {_shown(item)}: keys starting with '_' (such as _target_) are "
                              "not accepted")
        if ov.is_delete():
            raise ConfigError(f"rejected override {_shown(item)}: deleting keys (~) is not accepted from the UI")
        if ov.is_add() or ov.is_force_add():
            raise ConfigError(f"rejected override {_shown(item)}: adding keys (+) is not accepted from the UI; "
                              "set a key the config has (`transferlab config` lists them)")
        if ov.package is not None:
            raise ConfigError(f"rejected override {_shown(item)}: package overrides (@) are not accepted from the UI")
        if key in OPERATOR_ONLY or any(key.startswith(k + ".") for k in OPERATOR_ONLY):
            raise ConfigError(f"rejected override {_shown(item)}: {key} is set by whoever started the service, "
                              "not from the UI")
        if not all(KEY_PART.match(p) for p in parts) or "/" in key:
            raise ConfigError(f"rejected override {_shown(item)}: not a config key (lowercase names joined by dots)")
        if ov.is_sweep_override() or ov.value_type != ValueType.ELEMENT:
            raise ConfigError(f"rejected value for '{key}': sweeps (a,b / choice() / range() / interval() / "
                              "glob()) are not accepted from the UI; give one value")
        value = ov.value()
        if key in groups:
            if not isinstance(value, str) or value not in group_options(key):
                raise ConfigError(f"rejected value for '{key}': unknown option {_shown(str(value))} for config "
                                  f"group '{key}' (choices: {', '.join(group_options(key))})")
        else:
            leaf = _is_leaf(key)
            if leaf is None:
                raise ConfigError(f"unknown config key '{key}' (see `transferlab config` for the valid keys)")
            if not leaf:
                raise ConfigError(f"rejected override {_shown(item)}: '{key}' is a group of keys; set them one by "
                                  "one (e.g. model.n_layer=2)")
        _check_value(key, item, value)
        out.append((key, value))
    return out


def check_syntax(overrides: list[str]) -> None:
    """Refuse what must never reach Hydra from a browser (before composing anything)."""
    parse_ui_overrides(overrides)


# ------------------------------------------------------------------- paths and references


def _within(real: Path, roots: list[Path]) -> bool:
    return any(real == r or real.is_relative_to(r) for r in roots)


# The service's own stores and logs in the state dir are never a run's input: a corpus read
# from them would carry other people's runs, the servers' logs or the MLflow logins' password
# hashes (mlflow-auth.db) into a tokenizer's vocabulary.
SERVICE_FILES = ("prefect", "logs", "live")


def _readable(real: Path, roots: list[Path]) -> bool:
    state = roots[0]
    if real.parent == state and ".db" in real.name:  # mlflow.db, mlflow-auth.db, -journal, .lock
        return False
    if _within(real, [state / name for name in SERVICE_FILES]):
        return False
    return _within(real, roots)


def _glob_base(pattern: str) -> str:
    """The deepest whole directory before the first glob character: what a pattern can reach
    (``/state*/x`` reaches ``/``, not ``/state``)."""
    first = min(pattern.index(c) for c in GLOB_CHARS if c in pattern)
    head = pattern[:first]
    return head if head.endswith(os.sep) else os.path.dirname(head)


def _inside(path: str, roots: list[Path]) -> bool:
    """Whether ``path`` (a file, dir or glob) reads only inside ``roots``: the path, its glob
    base and every match, each resolved through symlinks; ``roots[0]`` is the state dir, whose
    ``SERVICE_FILES`` are not readable."""
    expanded = os.path.expanduser(path)
    if not any(c in expanded for c in GLOB_CHARS):
        return _readable(Path(os.path.realpath(expanded)), roots)
    if not _within(Path(os.path.realpath(_glob_base(expanded) or ".")), roots):
        return False
    return all(_readable(Path(os.path.realpath(m)), roots) for m in glob.iglob(expanded, recursive=True))


def _distill_refs(cfg: TransferLabConfig) -> list[tuple[str, str]]:
    """(key, reference) of a distillation teacher or student that is a checkpoint, not one of
    this run's inits (those are checked as ``finetune.inits``) or the pretrained export."""
    d = cfg.distill
    if not d.enabled:
        return []
    return [(key, str(ref)) for key, ref in (("distill.teacher", d.teacher), ("distill.student", d.student))
            if ref and ref != "pretrained" and ref not in cfg.finetune.inits]


def _local_refs(cfg: TransferLabConfig) -> list[tuple[str, str]]:
    """(key, local path) for everything the run would read from the server's disk."""
    from modules.models.choices import BUILTIN_INITS
    from pipelines.checkpoint_refs import kind_of

    out: list[tuple[str, str]] = []
    for key in DATA_PATH_KEYS:
        value = getattr(cfg.data, key)
        for v in value if isinstance(value, list) else [value] if value else []:
            out.append((f"data.{key}", str(v)))
    tok = cfg.tokenizer.path
    if tok and kind_of(tok) == "local":
        out.append(("tokenizer.path", tok))
    if kind_of(cfg.model.init) == "local":
        out.append(("model.init", cfg.model.init))
    out += [("finetune.inits", i) for i in cfg.finetune.inits if i not in BUILTIN_INITS and kind_of(i) == "local"]
    out += [(key, ref) for key, ref in _distill_refs(cfg) if kind_of(ref) == "local"]
    return out


def _checkpoint_refs(cfg: TransferLabConfig) -> list[tuple[str, str]]:
    """(key, reference) of every checkpoint/tokenizer reference that is not a built-in init."""
    from modules.models.choices import BUILTIN_INITS

    refs = [("model.init", cfg.model.init or "scratch"), ("tokenizer.path", cfg.tokenizer.path)]
    refs += [("finetune.inits", i) for i in cfg.finetune.inits if i not in BUILTIN_INITS]
    refs += _distill_refs(cfg)
    return [(k, str(v)) for k, v in refs if v and v != "scratch"]


def _check_remote_refs(cfg: TransferLabConfig) -> None:
    """Hub ids must be ids; MLflow URIs must stay inside their artifact dir."""
    from pipelines.checkpoint_refs import check_artifact_path, kind_of

    for key, ref in _checkpoint_refs(cfg):
        kind = kind_of(ref)
        if kind == "hub" and (not HUB_ID.match(ref) or ".." in ref):
            raise ConfigError(f"rejected value for '{key}': {_shown(ref)} is neither a hub id (name or "
                              "org/name) nor a local path")
        if kind in ("runs", "models"):
            try:
                check_artifact_path(ref, key)
            except UserError as exc:
                raise ConfigError(f"rejected value for '{key}': {exc}") from exc


def _builder_names() -> set[str]:
    """``datasets``' packaged builders (csv, json, text, ...): they read local files."""
    try:
        from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES
    except ImportError:
        return set()
    return set(_PACKAGED_DATASETS_MODULES)


def _check_hub_dataset(cfg: TransferLabConfig) -> None:
    """``data.hub_path`` from the UI names a dataset on the hub, never something on this disk."""
    hub_path = cfg.data.hub_path
    if hub_path is None:
        return
    text = str(hub_path)
    problem = None
    if not HUB_ID.match(text) or ".." in text:
        problem = "is not a hub dataset id (name or org/name)"
    elif os.path.lexists(os.path.expanduser(text)):
        problem = "is a path on the server; UI runs read hub datasets by id only"
    elif text.lower() in _builder_names():
        problem = "is a builder that reads local files; UI runs read hub datasets by id only"
    if problem:
        raise ConfigError(f"rejected value for 'data.hub_path': {_shown(text)} {problem}")


def allowed_roots(home: str, data_dirs: list[str]) -> list[Path]:
    return [Path(os.path.realpath(p)) for p in [home, *data_dirs]]


def _check_home(cfg: TransferLabConfig, state: Path) -> None:
    home = cfg.paths.home
    if any(c in home for c in GLOB_CHARS):
        raise ConfigError(f"rejected value for 'paths.home': glob characters ({GLOB_CHARS}) are not accepted")
    if not _within(Path(os.path.realpath(home)), [state]):
        raise ConfigError(f"rejected value for 'paths.home': {_shown(home)} is outside the service's state dir "
                          f"{state}")


def untrusted_config(server_overrides: list[str], ui_overrides: list[str], data_dirs: list[str],
                     limits: dict[str, int] | None = None) -> TransferLabConfig:
    """The config for a UI-triggered run: the operator's overrides, then the UI's, checked.

    ``limits``: the service's (``pipelines.config.limits``); None: those the service handed to this
    process, or this machine's defaults. Raises ``ConfigError`` naming the key at fault, before
    any work (nothing is downloaded, copied or written).
    """
    from pipelines.config.limits import check_limits, check_value, limits_from_env

    limits = limits_from_env() if limits is None else limits
    parsed = parse_ui_overrides(ui_overrides)
    for key, value in parsed:  # before composing: the message shows the number as typed (1e12)
        check_value(key, value, limits)  # lists (trainer.devices=[0,1]) are counted after composing
    home = compose(server_overrides).paths.home
    cfg = compose([*server_overrides, *ui_overrides])  # validation errors name the key
    check_limits(cfg, limits)
    roots = allowed_roots(home, data_dirs)
    _check_home(cfg, roots[0])
    for key, path in _local_refs(cfg):
        if "://" in path:  # file://, http://: a URL read as a relative path would surprise everyone
            raise ConfigError(f"rejected value for '{key}': {_shown(path)} is a URL; UI runs read local paths, "
                              "hub ids and runs:/ or models:/ URIs")
        if not _inside(path, roots):
            where = ", ".join(str(r) for r in roots)
            raise ConfigError(f"rejected value for '{key}': {_shown(path)} is outside the directories this service "
                              f"reads from ({where}; the operator adds more with --data-dir)")
    _check_remote_refs(cfg)
    _check_hub_dataset(cfg)
    return cfg


def shown_to_ui(exc: BaseException) -> str:
    """An error's message as a UI run shows it: file contents that a ``DataError`` quotes
    (column names, labels) are left out, also when a ``UserError`` wraps that message."""
    text = str(exc)
    seen: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in seen:
        seen.append(e)
        hidden = getattr(e, "without_content", None)
        if hidden is not None and str(e) in text:
            text = text.replace(str(e), hidden)
        e = e.__cause__ or e.__context__
    return text
