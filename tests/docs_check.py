"""The docs check: every command shown in README.md and docs/*.md, verified against the code.

Used by tests/test_docs.py. The rule for what counts as a command, and how each kind is checked, is in
docs/development.md ("The docs check"). In short: fenced blocks labelled bash/sh/shell
are commands line by line, console blocks are commands on their ``$ `` lines, a usage
block is the ``transferlab`` synopsis, and a block without a label fails. Each command is
parsed by the real parser of its program (``transferlab``'s argparse, the Makefile, a
bench script's ``add_argument`` calls, MLflow's and Dask's click CLIs, torchrun's parser) and its
Hydra overrides are composed by the real config; nothing trains. A command of a kind this
file does not know fails, so a new kind of command cannot slip into the docs unchecked.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import importlib.util
import io
import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 200
COMMAND_LANGS = {"bash", "sh", "shell"}
# Lines that start like a command: not allowed in blocks that are not checked.
LOOKS_LIKE_COMMAND = re.compile(r"^(\$ |transferlab |make |\.venv/bin/)")
PLACEHOLDER = re.compile(r"<([A-Za-z][\w .-]*)>")
VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
# Environment variables the docs may set that no file of this repository names: read by a library.
LIBRARY_ENV = {"CUDA_VISIBLE_DEVICES", "HF_HUB_OFFLINE", "PREFECT_API_URL", "MLFLOW_TRACKING_URI"}
COMPOSE_SUBCOMMANDS = {"up", "down", "ps", "logs", "config", "build", "exec", "run", "pull", "restart", "stop",
                       "start", "top", "images", "rm", "kill", "port", "events"}
PYTEST_FLAGS = {"-q", "-s", "-x", "-v", "-ra", "--lf"}


class DocProblem(Exception):
    """A shown command (or link) that does not match the code; the message says what to fix."""


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    lines: list[str]


@dataclass
class Command:
    page: Path
    line: int
    words: list[str]  # after variable expansion; env prefixes removed
    env: dict[str, str]
    cwd: Path
    expected_error: str | None = None  # a console block's `transferlab: error: ...` output line
    created: set[Path] = field(default_factory=set)  # paths made by earlier `cp`s on the page

    def where(self) -> str:
        return f"{shown(self.page)}:{self.line}"


def shown(path: Path) -> str:
    """A page's name in messages: relative to the repository when inside it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


# -- reading the pages ---------------------------------------------------------------------------

def fenced_blocks(page: Path) -> list[Block]:
    blocks: list[Block] = []
    current: Block | None = None
    fence, indent = "", 0
    for number, raw in enumerate(page.read_text().splitlines(), 1):
        stripped = raw.strip()
        if current is None and stripped.startswith("```"):
            fence = stripped[: len(stripped) - len(stripped.lstrip("`"))]
            indent = len(raw) - len(raw.lstrip())  # a block inside a list item is indented
            current = Block(page, number, stripped[len(fence):].strip(), [])
        elif current is not None and stripped == fence:
            blocks.append(current)
            current = None
        elif current is not None:
            current.lines.append(raw[indent:] if not raw[:indent].strip() else raw.lstrip())
    if current is not None:
        raise DocProblem(f"{shown(page)}:{current.line}: code block never closed")
    return blocks


def _strip_comment(line: str) -> str:
    """Drop a shell comment: `#` at the start of a word, outside quotes."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _extract_substitutions(text: str, found: list[str]) -> str:
    """Replace each `$(...)` with a marker; the inner commands go to ``found`` (checked too)."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("$(", i):
            depth, j, quote = 1, i + 2, ""
            while j < len(text) and depth:
                ch = text[j]
                if quote:
                    quote = "" if ch == quote else quote
                elif ch in "'\"":
                    quote = ch
                elif ch == "(":
                    depth += 1
                elif ch == ")":
                    depth -= 1
                j += 1
            found.append(text[i + 2: j - 1])
            out.append("SUBSTITUTED")
            i = j
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _logical_lines(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Join `\\`-continued lines; drop comments and blank lines. Keeps the first line's number."""
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in lines:
        text = _strip_comment(raw).rstrip()
        if not pending:
            start = number
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        pending += text
        if pending.strip():
            out.append((start, pending.strip()))
        pending = ""
    if pending.strip():
        out.append((start, pending.strip()))
    return out


def _tokens(text: str) -> list[str]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = ""
    return list(lexer)


def _segments(lines: list[tuple[int, str]]) -> list[tuple[int, list[str], list[str]]]:
    """(line, words, inner $(...) commands) per simple command, split on ; && || | and newlines."""
    segments: list[tuple[int, list[str], list[str]]] = []
    for number, text in lines:
        inner: list[str] = []
        text = PLACEHOLDER.sub(lambda m: m.group(1).replace(" ", "-").upper(), text)
        text = _extract_substitutions(text, inner)
        words: list[str] = []
        for token in _tokens(text):
            if token in {";", "&&", "||", "|", "&"}:
                if words:
                    segments.append((number, words, inner))
                words, inner = [], []
            else:
                words.append(token)
        if words or inner:
            segments.append((number, words, inner))
    return segments


def _expand(word: str, variables: dict[str, str], where: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name in variables:
            return variables[name]
        if name == "PWD":
            return str(REPO)
        if name == "HOME":
            return str(Path.home())
        if env_var_is_known(name):
            return f"/{name}"
        raise DocProblem(f"{where}: ${name} is set nowhere on this page and read nowhere in the code")
    return VARIABLE.sub(value, word)


def block_commands(block: Block, created: set[Path]) -> list[Command]:
    """The commands of one bash or console block, with for-loops unrolled and variables expanded."""
    if block.lang == "console":
        numbered, outputs = [], {}
        last = None
        for offset, raw in enumerate(block.lines, 1):
            if raw.startswith("$ "):
                last = block.line + offset
                numbered.append((last, raw[2:]))
            elif last is not None and last not in outputs and raw.strip():
                outputs[last] = raw.strip()
    else:
        numbered = [(block.line + offset, raw) for offset, raw in enumerate(block.lines, 1)]
        outputs = {}
    cwd = REPO
    variables: dict[str, str] = {}
    commands: list[Command] = []
    segments = _segments(_logical_lines(numbered))
    i = 0
    while i < len(segments):
        number, words, inner = segments[i]
        where = f"{shown(block.page)}:{number}"
        for sub in inner:  # `$(...)`: a command of its own
            sub_segments = _segments([(number, sub)])
            for _, sub_words, _ in sub_segments:
                commands.append(Command(block.page, number, [_expand(w, variables, where) for w in sub_words], {}, cwd,
                                        created=created))
        if words and words[0] == "for":
            # for VAR in a b c; do BODY; done  ->  BODY once per value
            if len(words) < 3 or words[2] != "in":
                raise DocProblem(f"{where}: a for-loop the docs check reads as `for X in a b c; do ...; done`")
            name, values = words[1], words[3:]
            body: list[tuple[int, list[str], list[str]]] = []
            i += 1
            while i < len(segments) and segments[i][1] != ["done"]:
                seg_words = segments[i][1]
                body.append((segments[i][0], seg_words[1:] if seg_words[:1] == ["do"] else seg_words, segments[i][2]))
                i += 1
            if i == len(segments):
                raise DocProblem(f"{where}: for-loop without `done`")
            for value in values:
                for body_number, body_words, _ in body:
                    if body_words:
                        expanded = [_expand(w, {**variables, name: value}, where) for w in body_words]
                        commands.append(_command(block, body_number, expanded, cwd, None, created))
            i += 1
            continue
        expanded = [_expand(w, variables, where) for w in words]
        assignments = [w for w in expanded if re.match(r"^[A-Za-z_]\w*=", w)]
        if expanded and len(assignments) == len(expanded):  # `M=...` alone: a shell variable for later lines
            for word in words:
                key, _, val = word.partition("=")
                variables[key] = _expand(val, variables, where).replace("SUBSTITUTED", f"/{key}")
        elif expanded:
            command = _command(block, number, expanded, cwd, outputs.get(number), created)
            commands.append(command)
            if command.words[:1] == ["cd"]:
                cwd = (cwd / command.words[1]).resolve() if len(command.words) > 1 else REPO
        i += 1
    return commands


def _command(block: Block, number: int, words: list[str], cwd: Path, output: str | None,
             created: set[Path]) -> Command:
    env: dict[str, str] = {}
    while words and re.match(r"^[A-Za-z_]\w*=", words[0]):
        key, _, value = words[0].partition("=")
        env[key] = value
        words = words[1:]
    expected = output if output and output.startswith("transferlab: error:") else None
    return Command(block.page, number, words, env, cwd, expected, created)


def page_commands(page: Path) -> list[Command]:
    created: set[Path] = set()
    commands: list[Command] = []
    for block in fenced_blocks(page):
        if block.lang in COMMAND_LANGS or block.lang == "console":
            commands.extend(block_commands(block, created))
    return commands


def all_commands() -> list[Command]:
    return [c for page in PAGES for c in page_commands(page)]


# -- knowledge of the repository -----------------------------------------------------------------

@functools.cache
def _source_text() -> str:
    """The code that may read an environment variable (not these docs checks themselves)."""
    files = [REPO / "Makefile", *(REPO / ".ci").glob("*")]
    for folder in ("pipelines", "modules", "docker", "bench", "tests"):
        files += [p for p in (REPO / folder).rglob("*") if p.is_file() and p.suffix in {".py", ".yml", ".sh", ""}
                  and p.name not in ("test_docs.py", "docs_check.py")]
    return "\n".join(p.read_text(errors="replace") for p in files if p.is_file())


def env_var_is_known(name: str) -> bool:
    return name in LIBRARY_ENV or re.search(rf"\b{re.escape(name)}\b", _source_text()) is not None


@functools.cache
def top_level_entries() -> set[str]:
    try:
        files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
        return {line.split("/", 1)[0] for line in files.splitlines() if line}
    except (OSError, subprocess.CalledProcessError):
        return {p.name for p in REPO.iterdir() if not p.name.startswith(".")}


@functools.cache
def makefile_targets() -> dict[str, list[str]]:
    """target -> its recipe lines."""
    targets: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in (REPO / "Makefile").read_text().splitlines():
        match = re.match(r"^([\w-][\w.-]*):(?!=)", line)  # not .PHONY
        if match:
            current = targets.setdefault(match.group(1), [])
        elif line.startswith("\t") and current is not None:
            current.append(line.strip())
        elif line and not line.startswith("\t"):
            current = None
    return targets


@functools.cache
def registered_markers() -> set[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    return {m.split(":", 1)[0].strip() for m in config["tool"]["pytest"]["ini_options"]["markers"]}


def check_paths(command: Command, words: list[str]) -> None:
    """Repository paths in arguments (and override values) exist; the user's data may not."""
    if command.cwd != REPO:
        return
    tops = top_level_entries()
    for word in words:
        candidate = word.split("=", 1)[1] if "=" in word and not word.startswith("-") else word
        candidate = candidate.strip("'\"")
        first = candidate.split("/", 1)[0]
        if first in tops and first not in {".venv"} and "/" in candidate:
            path = REPO / candidate
            if not path.exists() and path not in command.created:
                raise DocProblem(f"{command.where()}: {candidate} does not exist in the repository")


# -- checks per kind of command ------------------------------------------------------------------

def _expect(command: Command, error: str | None) -> None:
    """A shown command either succeeds or fails exactly as its console output says."""
    if command.expected_error is None and error is not None:
        raise DocProblem(f"{command.where()}: `{' '.join(command.words)}` fails: {error}")
    if command.expected_error is not None:
        if error is None:
            raise DocProblem(f"{command.where()}: the docs show `{command.expected_error}`, but the command succeeds")
        shown = command.expected_error
        same = error.startswith(shown[:-3].rstrip()) if shown.endswith("...") else error == shown
        if not same:
            raise DocProblem(f"{command.where()}: the docs show\n  {shown}\nbut the code says\n  {error}")


def _compose_error(overrides: list[str]) -> str | None:
    from pipelines.config.compose import compose
    from pipelines.errors import UserError

    try:
        compose(overrides)
    except UserError as exc:
        return f"transferlab: error: {exc}"
    return None


def check_transferlab(command: Command, argv: list[str]) -> None:
    from pipelines import cli

    parser = cli.build_parser()
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args, extra = parser.parse_known_args(argv)
            if extra and (args.command not in ("compare", "predict") or any(e.startswith("-") for e in extra)):
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit:
        raise DocProblem(f"{command.where()}: `transferlab {' '.join(argv)}`: "
                         f"{stderr.getvalue().strip().splitlines()[-1]}") from None
    check_paths(command, argv)
    if args.command == "config":  # cheap: run it for real
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main(argv)
        _expect(command, err.getvalue().strip() or None if rc else None)
        if rc == 0 and "model:" not in out.getvalue():
            raise DocProblem(f"{command.where()}: `transferlab config` printed no config")
        return
    overrides = getattr(args, "overrides", None)
    if args.command == "compare":
        overrides = [t for t in [*args.targets, *extra] if "=" in t]
    error = _compose_error(list(overrides or []))
    if error is None and args.command in ("up", "serve"):
        from pipelines.config.limits import parse_operator_limits
        from pipelines.errors import UserError

        try:
            parse_operator_limits(args.max_entries)
        except UserError as exc:
            error = f"transferlab: error: {exc}"
    if error is None and args.command == "cache" and args.cache_command == "prune":
        from pipelines.cache.admin import parse_duration, parse_size
        from pipelines.errors import UserError

        try:
            for value, option in ((args.older_than, "--older-than"), (args.orphans_older_than,
                                                                       "--orphans-older-than")):
                if value:
                    parse_duration(value, option)
            if args.max_size:
                parse_size(args.max_size, "--max-size")
        except UserError as exc:
            error = f"transferlab: error: {exc}"
    _expect(command, error)


def check_make(command: Command, argv: list[str]) -> None:
    targets = makefile_targets()
    names = [a for a in argv if "=" not in a and not a.startswith("-")]
    variables = dict(a.split("=", 1) for a in argv if "=" in a)
    if not names:
        raise DocProblem(f"{command.where()}: `make` without a target: name one")
    makefile = (REPO / "Makefile").read_text()
    for name in names:
        if name not in targets:
            raise DocProblem(f"{command.where()}: `make {name}`: no such target in the Makefile "
                             f"(targets: {', '.join(sorted(targets))})")
    for key in variables:
        if not re.search(rf"^{key}\s*[?:]?=", makefile, re.M):
            raise DocProblem(f"{command.where()}: `make ... {key}=`: the Makefile has no variable {key}")
    for name in names:  # make run ARGS="...": the arguments reach transferlab
        for recipe in targets[name]:
            match = re.search(r"transferlab (\w+) \$\(ARGS\)", recipe)
            if match:
                check_transferlab(command, [match.group(1), *shlex.split(variables.get("ARGS", ""))])


def _script_parser(script: Path) -> argparse.ArgumentParser:
    """The script's argparse, rebuilt from its ``add_argument`` calls (no import: no torch)."""
    types = {"int": int, "float": float, "str": str, "Path": str}
    parser = argparse.ArgumentParser(prog=script.name, add_help=False, exit_on_error=False)
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument":
            names = [ast.literal_eval(a) for a in node.args]
            kwargs = {}
            for kw in node.keywords:
                if kw.arg in ("nargs", "action", "choices", "dest"):
                    kwargs[kw.arg] = ast.literal_eval(kw.value)
                elif kw.arg == "type" and isinstance(kw.value, ast.Name):
                    kwargs["type"] = types[kw.value.id]
            parser.add_argument(*names, **kwargs)
    return parser


def check_bench(command: Command, script_arg: str, argv: list[str]) -> None:
    script = (command.cwd / script_arg).resolve()
    if not script.is_file():
        raise DocProblem(f"{command.where()}: {script_arg} does not exist")
    parser = _script_parser(script)
    try:
        args = parser.parse_args(argv)
    except (argparse.ArgumentError, SystemExit) as exc:
        raise DocProblem(f"{command.where()}: {script_arg} does not accept `{' '.join(argv)}`: {exc}") from None
    check_paths(command, argv)
    overrides = getattr(args, "overrides", None)
    if overrides:
        _expect(command, _compose_error(list(overrides)))


def check_python_c(command: Command, code: str) -> None:
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        raise DocProblem(f"{command.where()}: python -c code does not compile: {exc}") from None
    for node in ast.walk(tree):
        modules = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
        for module in modules:
            if importlib.util.find_spec(module.split(".")[0]) is None:
                raise DocProblem(f"{command.where()}: python -c imports {module}, which is not installed")


def check_pytest(command: Command, argv: list[str]) -> None:
    markers = registered_markers()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-m", "-k", "-p"):
            if arg == "-m":
                unknown = set(re.findall(r"\w+", argv[i + 1])) - {"and", "or", "not"} - markers
                if unknown:
                    raise DocProblem(f"{command.where()}: pytest -m names unregistered markers {sorted(unknown)}")
            i += 2
            continue
        if arg.startswith("-"):
            if arg not in PYTEST_FLAGS:
                raise DocProblem(f"{command.where()}: pytest option {arg} is not one the docs check knows "
                                 f"({', '.join(sorted(PYTEST_FLAGS))}); add it to PYTEST_FLAGS in tests/docs_check.py")
        else:
            path, _, node = arg.partition("::")
            if not (command.cwd / path).exists():
                raise DocProblem(f"{command.where()}: pytest path {path} does not exist")
            if node and not re.search(rf"^(async )?def {re.escape(node.split('[')[0])}\b",
                                      (command.cwd / path).read_text(), re.M):
                raise DocProblem(f"{command.where()}: {path} has no test {node}")
        i += 1


def check_python(command: Command, argv: list[str]) -> None:
    if argv[:2] == ["-m", "pipelines.cli"]:
        return check_transferlab(command, argv[2:])
    if argv[:2] == ["-m", "pytest"]:
        return check_pytest(command, argv[2:])
    if argv[:1] == ["-c"] and len(argv) >= 2:
        return check_python_c(command, argv[1])
    if argv and argv[0].endswith(".py") and argv[0].startswith("bench/"):
        return check_bench(command, argv[0], argv[1:])
    raise DocProblem(f"{command.where()}: `python {' '.join(argv)}`: the docs check knows `python -m pipelines.cli`, "
                     "`python -m pytest`, `python -c CODE` and `python bench/X.py`; teach tests/docs_check.py the rest")


def check_compose(command: Command, argv: list[str]) -> None:
    compose_file: Path | None = None
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        option = argv[i]
        if option in ("-f", "--file"):
            compose_file = command.cwd / argv[i + 1]
        elif option == "--env-file":
            env_file = command.cwd / argv[i + 1]
            if not env_file.exists() and not Path(f"{env_file}.example").exists() and env_file not in command.created:
                raise DocProblem(f"{command.where()}: --env-file {argv[i + 1]} does not exist (nor its .example)")
        elif option not in ("-p", "--project-name", "--project-directory"):
            raise DocProblem(f"{command.where()}: docker compose option {option} is unknown to the docs check")
        i += 2
    if compose_file is None:
        candidates = [command.cwd / n for n in ("docker-compose.yml", "compose.yaml", "compose.yml")]
        compose_file = next((c for c in candidates if c.exists()), candidates[0])
    if not compose_file.exists():
        raise DocProblem(f"{command.where()}: no compose file {shown(compose_file)}")
    if i >= len(argv) or argv[i] not in COMPOSE_SUBCOMMANDS:
        raise DocProblem(f"{command.where()}: `docker compose` needs a subcommand of {sorted(COMPOSE_SUBCOMMANDS)}")
    services = set(yaml.safe_load(compose_file.read_text())["services"])
    named = [a for a in argv[i + 1:] if not a.startswith("-")]
    unknown = [n for n in named if n not in services]
    if unknown:
        raise DocProblem(f"{command.where()}: no service {unknown} in {compose_file.name} "
                         f"({', '.join(sorted(services))})")


def check_mlflow(command: Command, argv: list[str]) -> None:
    import click
    from mlflow.cli import cli

    if not argv:
        raise DocProblem(f"{command.where()}: `mlflow` without a subcommand")
    sub = cli.get_command(click.Context(cli), argv[0])
    if sub is None:
        raise DocProblem(f"{command.where()}: `mlflow {argv[0]}`: no such mlflow command")
    try:
        sub.make_context(argv[0], list(argv[1:]))
    except click.ClickException as exc:
        raise DocProblem(f"{command.where()}: `mlflow {' '.join(argv)}`: {exc.format_message()}") from None


def check_dask(command: Command, argv: list[str]) -> None:
    """`dask scheduler` / `dask worker` (a sweep's cluster), parsed by distributed's click commands."""
    import click
    from distributed.cli import dask_scheduler, dask_worker

    commands = {"scheduler": dask_scheduler.main, "worker": dask_worker.main}
    if not argv or argv[0] not in commands:
        raise DocProblem(f"{command.where()}: `dask {' '.join(argv[:1])}`: the docs check knows `dask scheduler` "
                         "and `dask worker`")
    try:
        commands[argv[0]].make_context(argv[0], list(argv[1:]))
    except click.ClickException as exc:
        raise DocProblem(f"{command.where()}: `dask {' '.join(argv)}`: {exc.format_message()}") from None


def check_launcher(command: Command, program: str, argv: list[str]) -> None:
    if program == "srun":  # SLURM's own options, in --opt=value form, then the command it runs
        i = 0
        while i < len(argv) and argv[i].startswith("-"):
            if argv[i].startswith("--") and "=" not in argv[i]:
                raise DocProblem(f"{command.where()}: write srun options as --opt=value, so the docs check "
                                 "can tell them from the command")
            i += 1
        return check(Command(command.page, command.line, argv[i:], command.env, command.cwd,
                             command.expected_error, command.created))
    from torch.distributed.run import get_args_parser

    try:
        args = get_args_parser().parse_args(argv)
    except SystemExit:
        raise DocProblem(f"{command.where()}: torchrun does not accept `{' '.join(argv)}`") from None
    if args.module and args.training_script == "pipelines.cli":
        return check_transferlab(command, list(args.training_script_args))
    raise DocProblem(f"{command.where()}: torchrun runs {args.training_script}: "
                     "the docs check knows `-m pipelines.cli`")


def check_simple(command: Command, program: str, argv: list[str]) -> None:
    """cp, cd, ruff, mypy: the repository paths they name exist."""
    paths = [a for a in argv if not a.startswith("-")]
    if program == "ruff":
        if paths[:1] != ["check"]:
            raise DocProblem(f"{command.where()}: `ruff {' '.join(argv)}`: the docs check knows `ruff check PATH`")
        paths = paths[1:]
    if program == "cp":
        if len(paths) != 2:
            raise DocProblem(f"{command.where()}: `cp SRC DST` is what the docs check reads")
        paths, target = paths[:1], paths[1]
        command.created.add((command.cwd / target).resolve())
    for path in paths:
        if not (command.cwd / path).exists():
            raise DocProblem(f"{command.where()}: {program} {path}: no such path")


def check(command: Command) -> None:
    for name in command.env:
        if not env_var_is_known(name):
            raise DocProblem(f"{command.where()}: {name}= is read nowhere in this repository's code; if a library "
                             "reads it, add it to LIBRARY_ENV in tests/docs_check.py")
    if not command.words:
        return
    program, argv = command.words[0], command.words[1:]
    program = program.removeprefix(".venv/bin/")
    if program == "export":
        for word in argv:
            name = word.partition("=")[0]
            if not env_var_is_known(name):
                raise DocProblem(f"{command.where()}: export {name}: read nowhere in this repository's code")
        return None
    if program == "transferlab":
        return check_transferlab(command, argv)
    if program == "make":
        return check_make(command, argv)
    if program in ("python", "python3"):
        return check_python(command, argv)
    if program == "docker" and argv[:1] == ["compose"]:
        return check_compose(command, argv[1:])
    if program == "docker-compose":
        return check_compose(command, argv)
    if program == "mlflow":
        return check_mlflow(command, argv)
    if program == "dask":
        return check_dask(command, argv)
    if program in ("srun", "torchrun"):
        return check_launcher(command, program, argv)
    if program in ("cp", "cd", "ruff", "mypy"):
        return check_simple(command, program, argv)
    raise DocProblem(
        f"{command.where()}: `{' '.join(command.words)}`: the docs check does not know `{program}` commands. "
        "Teach tests/docs_check.py how to verify them (a check_* function in `check`), or show the command in "
        "prose instead of a code block"
    )


def check_block_labels(page: Path) -> list[str]:
    problems = []
    for block in fenced_blocks(page):
        where = f"{shown(page)}:{block.line}"
        if not block.lang:
            problems.append(f"{where}: code block without a label: use bash (commands), console ($ lines are "
                            "commands, the rest output), usage (the transferlab synopsis) or text (anything else)")
        elif block.lang not in COMMAND_LANGS | {"console", "usage"}:
            for offset, line in enumerate(block.lines, 1):
                if LOOKS_LIKE_COMMAND.match(line):
                    problems.append(f"{shown(page)}:{block.line + offset}: `{line.strip()}` looks like a "
                                    f"command in a {block.lang!r} block, where it is not checked: label it console")
    return problems


def check_usage(block: Block) -> list[str]:
    """A usage block lists every transferlab subcommand with exactly its options."""
    from pipelines.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))

    def options(p: argparse.ArgumentParser) -> set[str]:
        found = {o for a in p._actions for o in a.option_strings if o.startswith("--") and o != "--help"}
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    found |= options(child)
        return found

    listed: dict[str, set[str]] = {}
    for line in block.lines:
        words = line.split("#", 1)[0].split()
        if words[:1] == ["transferlab"] and len(words) > 1:
            listed[words[1]] = set(re.findall(r"--[\w-]+", " ".join(words[2:])))
    where = f"{shown(block.page)}:{block.line}"
    problems = []
    for name, sub in subparsers.choices.items():
        if name not in listed:
            problems.append(f"{where}: usage does not list `transferlab {name}`")
        elif listed[name] != options(sub):
            problems.append(f"{where}: usage of `transferlab {name}` shows {sorted(listed[name])}, "
                            f"the parser has {sorted(options(sub))}")
    problems += [f"{where}: usage lists `transferlab {n}`, which the CLI does not have"
                 for n in listed if n not in subparsers.choices]
    return problems


def github_slug(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    inside = {n for b in fenced_blocks(page) for n in range(b.line, b.line + len(b.lines) + 2)}
    seen: dict[str, int] = {}
    found = set()
    for number, line in enumerate(page.read_text().splitlines(), 1):
        match = re.match(r"^#{1,6}\s+(.*)$", line)
        if match and number not in inside:
            slug = github_slug(match.group(1))
            found.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return found


def check_links(page: Path) -> list[str]:
    inside = {n for b in fenced_blocks(page) for n in range(b.line, b.line + len(b.lines) + 2)}
    problems = []
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if number in inside:
            continue
        for target in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"`[^`]*`", "", line)):
            if re.match(r"^[a-z]+:", target):
                continue
            path_part, _, anchor = target.partition("#")
            path = (page.parent / path_part).resolve() if path_part else page
            where = f"{shown(page)}:{number}"
            if not path.exists():
                problems.append(f"{where}: link to {target}: no such file")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                problems.append(f"{where}: link to {target}: no heading with that anchor in {path.name}")
    return problems
