"""Each default value lives in exactly one place: the schema (pipelines/config/schema.py).

Definitions the tests enforce, for every YAML file under conf/ (group options, experiment
presets and config.yaml):

* repeat: a key set to exactly the schema's default at that key. It fails even in a preset
  whose point is the value (say it in a comment instead), because a repeat silently stops
  following the schema when the default changes.
* contradiction: a key set in a group's *default* option (the one conf/config.yaml selects)
  to anything but the schema default. The value users get without choosing that group would
  then not be the schema's, so the schema would lie about the default. Keys the schema leaves
  MISSING (model.name, arch, family) are what a default option must fill, so they are exempt.
* unknown: a key the schema does not have.

And composing any option gives the schema's defaults overlaid with exactly that file's keys,
so removing a repeat cannot change what `transferlab config` prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import MISSING, OmegaConf

from pipelines.config.compose import CONF_DIR
from pipelines.config.schema import TransferLabConfig, register_schema

SCHEMA: dict[str, Any] = OmegaConf.to_container(OmegaConf.structured(TransferLabConfig))  # type: ignore[assignment]


def _default_options(conf_dir: Path) -> dict[str, str]:
    """group -> the option conf/config.yaml selects for it."""
    root = yaml.safe_load((conf_dir / "config.yaml").read_text())
    return {k: v for item in root["defaults"] if isinstance(item, dict) for k, v in item.items()}


def _yaml_files(conf_dir: Path) -> list[Path]:
    return sorted(conf_dir.glob("*/*.yaml")) + [conf_dir / "config.yaml"]


def _is_global(path: Path) -> bool:
    return path.name == "config.yaml" or "# @package _global_" in path.read_text()


def _leaves(node: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) for every value a file sets; Hydra's defaults list is not a value."""
    out: list[tuple[str, Any]] = []
    for key, value in node.items():
        if key == "defaults" and not prefix:
            continue
        if isinstance(value, dict):
            out.extend(_leaves(value, f"{prefix}{key}."))
        else:
            out.append((f"{prefix}{key}", value))
    return out


def _file_values(path: Path) -> list[tuple[str, Any]]:
    """The dotted keys (from the config root) and values a file sets."""
    data = yaml.safe_load(path.read_text()) or {}
    prefix = "" if _is_global(path) else f"{path.parent.name}."
    return _leaves(data, prefix)


_UNKNOWN = object()


def _schema_default(dotted: str) -> Any:
    node: Any = SCHEMA
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _UNKNOWN
        node = node[part]
    return node


def _same(value: Any, default: Any) -> bool:
    """Equal as YAML values: 1 and True, or 1 and 1.0, are not the same setting."""
    return bool(value == default) and type(value) is type(default)


def repeats_and_unknown_keys(conf_dir: Path) -> list[str]:
    problems = []
    for path in _yaml_files(conf_dir):
        rel = path.relative_to(conf_dir)
        for key, value in _file_values(path):
            default = _schema_default(key)
            if default is _UNKNOWN:
                problems.append(f"{rel}: {key} is not in the schema")
            elif _same(value, default):
                problems.append(f"{rel}: {key}: {value!r} repeats the schema default")
    return problems


def contradictions(conf_dir: Path) -> list[str]:
    problems = []
    for group, option in _default_options(conf_dir).items():
        path = conf_dir / group / f"{option}.yaml"
        for key, value in _file_values(path):
            default = _schema_default(key)
            if default not in (MISSING, _UNKNOWN) and not _same(value, default):
                problems.append(f"{path.relative_to(conf_dir)}: {key}: {value!r} contradicts the schema default "
                                f"{default!r} (the default option must leave it to the schema)")
    return problems


def test_no_yaml_key_repeats_a_schema_default_or_is_unknown():
    problems = repeats_and_unknown_keys(CONF_DIR)
    assert not problems, "\n".join(problems)


def test_no_default_option_contradicts_the_schema():
    problems = contradictions(CONF_DIR)
    assert not problems, "\n".join(problems)


def test_the_checks_catch_a_repeat_a_contradiction_and_an_unknown_key(tmp_path):
    """The rules above on a planted conf/: a preset's repeat, a default option's changed value, a typo."""
    (tmp_path / "config.yaml").write_text("defaults:\n  - transferlab_schema\n  - trainer: cpu\n  - _self_\n")
    (tmp_path / "trainer").mkdir()
    (tmp_path / "trainer" / "cpu.yaml").write_text("num_nodes: 2\nprecison: auto\n")
    (tmp_path / "trainer" / "gpu.yaml").write_text("accelerator: gpu\nprecision: auto\n")
    assert repeats_and_unknown_keys(tmp_path) == [
        "trainer/cpu.yaml: trainer.precison is not in the schema",
        "trainer/gpu.yaml: trainer.precision: 'auto' repeats the schema default",
    ]
    assert [p.split(" contradicts")[0] for p in contradictions(tmp_path)] == ["trainer/cpu.yaml: trainer.num_nodes: 2"]


def _group_cases() -> list[tuple[str, str]]:
    return [(p.parent.name, p.stem) for p in sorted(CONF_DIR.glob("*/*.yaml")) if p.parent.name != "experiment"]


@pytest.fixture(scope="module")
def hydra_conf():
    """Hydra initialised on conf/, unresolved composition (interpolations compare as written)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_schema()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield
    GlobalHydra.instance().clear()


@pytest.mark.parametrize(("group", "option"), _group_cases())
def test_an_option_composes_to_the_schema_defaults_plus_its_own_keys(hydra_conf, group, option):
    from hydra import compose

    composed = OmegaConf.to_container(compose(config_name="config", overrides=[f"{group}={option}"]))
    expected = dict(SCHEMA[group])
    expected.update({key.split(".", 1)[1]: value for key, value in _file_values(CONF_DIR / group / f"{option}.yaml")})
    assert composed[group] == expected  # type: ignore[index]
