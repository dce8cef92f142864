"""Overrides that arrive from the Prefect UI are untrusted input.

Whoever can open the UI can start a run with any parameters, so a deployed flow checks
them before any work, with one clear line naming the offending override:

- ``hydra.*`` (Hydra's own runtime) and any ``_``-prefixed key (``_target_``, ``_args_``:
  instantiation hooks) are refused, as are ``~key`` deletions;
- ``${...}`` interpolations are refused: a resolver such as ``oc.env`` would copy the
  server's environment (its passwords) into MLflow params;
- keys only the operator may set: ``tracking.uri`` (runs log to the server the service was
  started with), ``model.trust_remote_code`` (runs code from a checkpoint) and
  ``model.init_path`` (filled in by transferlab);
- after composing and validating, ``paths.home`` must stay inside the service's state dir,
  and every local file the run would read (data files, a tokenizer or checkpoint dir) must
  lie inside the state dir or a directory the operator allowed (``--data-dir``).

The CLI and tests call the flows in ``pipelines.flows`` directly and are not limited.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipelines.config import DATA_PATH_KEYS, compose
from pipelines.errors import ConfigError

OPERATOR_ONLY = ("tracking.uri", "model.trust_remote_code", "model.init_path")
# How `transferlab up`/`serve` hand the operator's choices to the flow-run processes.
SERVER_OVERRIDES_ENV = "TRANSFERLAB_SERVER_OVERRIDES"  # JSON list of overrides
DATA_DIRS_ENV = "TRANSFERLAB_DATA_DIRS"  # os.pathsep-separated dirs a UI run may read files from


def check_syntax(overrides: list[str]) -> None:
    """Refuse what must never reach Hydra from a browser (before composing anything)."""
    for item in overrides:
        if isinstance(item, str) and item.strip().startswith("~"):
            raise ConfigError(f"rejected override {item!r}: deleting keys (~) is not accepted from the UI")
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(f"rejected override {item!r}: expected KEY=VALUE")
        bare = item.split("=", 1)[0].strip().lstrip("+")
        parts = bare.replace("/", ".").split(".")
        if parts[0] == "hydra":
            raise ConfigError(f"rejected override {item!r}: hydra.* configures Hydra's runtime and is not accepted")
        if any(p.startswith("_") for p in parts):
            raise ConfigError(f"rejected override {item!r}: keys starting with '_' (such as _target_) are not accepted")
        if "${" in item:
            raise ConfigError(f"rejected override {item!r}: interpolations (${{...}}) are not accepted from the UI")
        if bare in OPERATOR_ONLY or any(bare.startswith(k + ".") for k in OPERATOR_ONLY):
            raise ConfigError(f"rejected override {item!r}: {bare} is set by whoever started the service, "
                              "not from the UI")


def _inside(path: str, roots: list[Path]) -> bool:
    # The part before the first glob character is the directory a pattern can reach.
    literal = path[: min((i for i, c in enumerate(path) if c in "*?["), default=len(path))]
    real = Path(os.path.realpath(literal or "/"))
    return any(real == r or real.is_relative_to(r) for r in roots)


def _local_refs(cfg: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, local path) for everything the run would read from the server's disk."""
    from pipelines.model_init import kind_of

    out: list[tuple[str, str]] = []
    for key in DATA_PATH_KEYS:
        value = cfg["data"][key]
        for v in value if isinstance(value, list) else [value] if value else []:
            out.append((f"data.{key}", str(v)))
    tok = cfg["tokenizer"]["path"]
    if tok and kind_of(tok) == "local":
        out.append(("tokenizer.path", tok))
    if kind_of(cfg["model"]["init"]) == "local":
        out.append(("model.init", cfg["model"]["init"]))
    out += [("finetune.inits", i) for i in cfg["finetune"]["inits"] if kind_of(i) == "local"]
    return out


def allowed_roots(home: str, data_dirs: list[str]) -> list[Path]:
    return [Path(os.path.realpath(p)) for p in [home, *data_dirs]]


def untrusted_config(server_overrides: list[str], ui_overrides: list[str], data_dirs: list[str]) -> dict[str, Any]:
    """The config for a UI-triggered run: the operator's overrides, then the UI's, checked.

    Raises ``ConfigError`` naming the override or key at fault, before any work.
    """
    check_syntax(ui_overrides)
    home = compose(server_overrides)["paths"]["home"]
    cfg = compose([*server_overrides, *ui_overrides])  # validation errors name the key
    roots = allowed_roots(home, data_dirs)
    if not _inside(cfg["paths"]["home"], roots[:1]):
        raise ConfigError(f"rejected value for 'paths.home': {cfg['paths']['home']!r} is outside the service's "
                          f"state dir {home}")
    for key, path in _local_refs(cfg):
        if not _inside(path, roots):
            where = ", ".join(str(r) for r in roots)
            raise ConfigError(f"rejected value for '{key}': {path!r} is outside the directories this service "
                              f"reads from ({where}; the operator adds more with --data-dir)")
    return cfg

