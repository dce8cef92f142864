"""The import layering: modules/ below pipelines/, and pipelines/ packages in one direction.

Every import counts, the ones inside functions too: a function-level import hides a cycle
from the interpreter, not from the design. The allowed direction, lowest first (a unit may
import only units in layers below its own):

    modules, errors      ML building blocks; the exception types
    runtime              process plumbing: env, locks, signals, ranks
    config               schema, composition, validation, limits: what every layer reads
    tracking             MLflow runs, carbon, registry: logs the config
    cache                the stage cache and its admin commands: records carry run ids
    checkpoint_refs      model.init refs: resolved through MLflow and cached
    stages               one function per stage
    preflight            input checks before a run: asks the stages what they need
    flows                the transfer_learning flow (and what ranks > 0 run)
    sweep                the data_efficiency flow, made of the flows' tasks
    serve                `up`/`serve`, deployments and the UI's untrusted input
    cli                  the command line, on top of everything
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LAYERS: list[set[str]] = [
    {"modules", "pipelines.errors"},
    {"pipelines.runtime"},
    {"pipelines.config"},
    {"pipelines.tracking"},
    {"pipelines.cache"},
    {"pipelines.checkpoint_refs"},
    {"pipelines.stages"},
    {"pipelines.preflight"},
    {"pipelines.flows"},
    {"pipelines.sweep"},
    {"pipelines.serve"},
    {"pipelines.cli"},
]
RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, root: Path) -> list[tuple[str, int]]:
    """(imported module, line) for every import in a file, at any depth, relative ones resolved.

    ``from a import b`` yields ``a.b`` (b may be a submodule) as well as ``a``."""
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.append((base, node.lineno))
            out += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return out


def _unit(module: str) -> str | None:
    """The layer unit a module belongs to: a package or top-level module of pipelines/, or modules."""
    parts = module.split(".")
    if parts[0] == "modules":
        return "modules"
    if parts[0] == "pipelines" and len(parts) > 1:
        return f"pipelines.{parts[1]}"
    return None


def layer_violations(root: Path) -> list[str]:
    """Imports under root/pipelines that do not go strictly down the layers (or leave them)."""
    problems = []
    for path in sorted((root / "pipelines").rglob("*.py")):
        source = _unit(_module_name(path, root))
        if source is None:  # pipelines/__init__.py
            continue
        if source not in RANK:
            problems.append(f"{path.relative_to(root)}: {source} has no layer in tests/test_layers.py")
            continue
        seen = set()
        for imported, line in _imports(path, root):
            target = _unit(imported)
            if target is None or target == source or (line, target) in seen:
                continue
            seen.add((line, target))
            if RANK.get(target, len(LAYERS)) >= RANK[source]:
                problems.append(f"{path.relative_to(root)}:{line}: {source} imports {target}, not a layer below it")
    return problems


def test_modules_import_nothing_of_pipelines_prefect_or_mlflow():
    banned = {"pipelines", "prefect", "mlflow"}
    found = [f"{path.relative_to(ROOT)}:{line}: {name}"
             for path in sorted((ROOT / "modules").rglob("*.py"))
             for name, line in _imports(path, ROOT) if name.split(".")[0] in banned]
    assert not found, "\n".join(found)


def test_pipelines_imports_go_down_the_layers():
    problems = layer_violations(ROOT)
    assert not problems, "\n".join(problems)


def test_the_layer_check_sees_function_level_and_relative_imports(tmp_path):
    """A planted cycle config -> stages -> config (in a function, and relative) is reported, and a new package."""
    pkg = tmp_path / "pipelines"
    for sub in ("config", "stages", "extra"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "config" / "compose.py").write_text("def f():\n    from pipelines.stages.common import x\n")
    (pkg / "config" / "limits.py").write_text("from ..stages import common\n")
    (pkg / "stages" / "common.py").write_text("from ..config import compose\nx = 1\n")  # allowed: down
    assert layer_violations(tmp_path) == [
        "pipelines/config/compose.py:2: pipelines.config imports pipelines.stages, not a layer below it",
        "pipelines/config/limits.py:1: pipelines.config imports pipelines.stages, not a layer below it",
        "pipelines/extra/__init__.py: pipelines.extra has no layer in tests/test_layers.py",
    ]


ISOLATED_IMPORTS = """
import importlib, json, sys, traceback
failures = {}
for name in json.loads(sys.argv[1]):
    for loaded in [m for m in sys.modules if m == "pipelines" or m.startswith("pipelines.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failures[name] = traceback.format_exc(limit=3)
print(json.dumps(failures))
"""


def test_each_pipelines_module_imports_first():
    """Every module of pipelines/ imports as the first one of ours in a fresh interpreter.

    One subprocess for all of them: before each import, every ``pipelines`` module is dropped
    from ``sys.modules``, so each module is the entry point into our code as in a fresh
    interpreter (an import cycle fails exactly then), while the third-party libraries
    (torch, prefect, mlflow) stay loaded and the check takes seconds, not minutes."""
    names = sorted(_module_name(p, ROOT) for p in (ROOT / "pipelines").rglob("*.py"))
    done = subprocess.run([sys.executable, "-c", ISOLATED_IMPORTS, json.dumps(names)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    failures = json.loads(done.stdout.strip().splitlines()[-1])
    assert not failures, "\n".join(f"{name}:\n{tb}" for name, tb in failures.items())
