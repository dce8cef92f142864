"""The docs cannot drift: every command shown in README.md and docs/*.md is checked against the code.

The checker is tests/docs_check.py; the rule for what counts as a command is in
docs/development.md ("The docs check"). Nothing here trains or starts a server.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from docs_check import (
    PAGES,
    README_MAX_LINES,
    REPO,
    Command,
    DocProblem,
    all_commands,
    check,
    check_block_labels,
    check_links,
    check_usage,
    fenced_blocks,
    page_commands,
)

# -- the tests -----------------------------------------------------------------------------------

COMMANDS = all_commands()


@pytest.mark.parametrize("command", COMMANDS, ids=[f"{c.where()} {' '.join(c.words)[:60]}" for c in COMMANDS])
def test_shown_command_matches_the_code(command: Command) -> None:
    try:
        check(command)
    except DocProblem as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_code_blocks_are_labelled_and_links_resolve(page: Path) -> None:
    problems = check_block_labels(page) + check_links(page)
    problems += [p for b in fenced_blocks(page) if b.lang == "usage" for p in check_usage(b)]
    assert not problems, "\n".join(problems)


def test_the_checks_cover_the_pages() -> None:
    kinds = {c.words[0].removeprefix(".venv/bin/") for c in COMMANDS if c.words}
    assert {"transferlab", "make", "python", "docker", "mlflow", "torchrun", "srun", "cp"} <= kinds
    assert any(b.lang == "usage" for b in fenced_blocks(REPO / "README.md"))
    assert any(c.expected_error for c in COMMANDS), "a console block shows an error the check compares"


def test_readme_is_short() -> None:
    lines = len((REPO / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES}): move detail to docs/"


# -- the checker itself fails where it should ----------------------------------------------------

def _problems_in(tmp_path: Path, markdown: str) -> list[str]:
    page = tmp_path / "page.md"
    page.write_text(markdown)
    problems = check_block_labels(page) + check_links(page)
    for command in page_commands(page):
        try:
            check(command)
        except DocProblem as exc:
            problems.append(str(exc))
    return problems


@pytest.mark.parametrize("markdown, says", [
    ("```bash\nfrobnicate --all\n```\n", "does not know `frobnicate`"),
    ("```bash\nmake no-such-target\n```\n", "no such target"),
    ("```bash\n.venv/bin/transferlab run no_such_key=1\n```\n", "unknown config key 'no_such_key'"),
    ("```bash\ntransferlab run --no-such-flag\n```\n", "unrecognized arguments"),
    ("```console\n$ transferlab run model=nope\ntransferlab: error: something else\n```\n", "the code says"),
    ("```bash\npython bench/peak_flops.py --no-such-option 1\n```\n", "does not accept"),
    ("```bash\npython bench/no_such_bench.py\n```\n", "does not exist"),
    ("```bash\ndocker compose -f docker/docker-compose.yml logs nobody\n```\n", "no service"),
    ("```bash\n.venv/bin/dask worker tcp://s:8786 --no-such-option\n```\n", "No such option"),
    ("```bash\ndask cluster-of-my-own\n```\n", "knows `dask scheduler`"),
    ("```bash\nNO_SUCH_VARIABLE_ANYWHERE=1 transferlab config\n```\n", "read nowhere"),
    ("```bash\ntransferlab run data.path=conf/no_such.yaml\n```\n", "does not exist in the repository"),
    ("```\nmake run\n```\n", "without a label"),
    ("```text\n$ transferlab run\n```\n", "looks like a command"),
    ("see [there](no_such_file.md)\n", "no such file"),
    ("see [there](#no-such-heading)\n# Title\n", "no heading with that anchor"),
])
def test_the_check_catches(tmp_path: Path, markdown: str, says: str) -> None:
    problems = _problems_in(tmp_path, markdown)
    assert any(says in p for p in problems), problems


def test_a_good_page_passes(tmp_path: Path) -> None:
    markdown = ("# Title\n\nsee [it](#title)\n\n```bash\nfor m in gpt2 bert; do\n"
                "  .venv/bin/transferlab config model=${m}_tiny   # comment\ndone\nmake run ARGS=\"seed=1\"\n```\n")
    assert _problems_in(tmp_path, markdown) == []


def test_usage_must_list_every_option(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```usage\ntransferlab run [OVERRIDE ...]\ntransferlab up --host H\n```\n")
    problems = check_usage(fenced_blocks(page)[0])
    assert any("does not list `transferlab doctor`" in p for p in problems)
    assert any("`transferlab up` shows ['--host']" in p for p in problems)


def test_the_readme_summary_is_what_the_cli_prints() -> None:
    """The sample end-of-run summary in the README is the CLI's own format, fed the README's numbers."""
    from pipelines.cli import print_summary

    block = next(b for b in fenced_blocks(REPO / "README.md") if b.lines[0].startswith("transferlab: evaluate"))
    stages = [("prep", 1.31e-5), ("pretrain", 3.22e-4), ("finetune[pretrained]", 2.62e-5),
              ("finetune[scratch]", 7.32e-6), ("finetune[tfidf]", 1.25e-6), ("evaluate", 3.25e-6)]
    inference = {"pretrained": (3.37, 1272), "scratch": (4.59, 1334), "tfidf": (2.32, 11309)}
    out = io.StringIO()
    print_summary({
        "until": "evaluate", "wall_s": 140.3,
        "headline": {"metric": "accuracy", "by_init": {"pretrained": 0.981, "scratch": 0.244, "tfidf": 0.296}},
        "inference": {i: {"ms_per_example_batch1": ms, "examples_per_sec": n} for i, (ms, n) in inference.items()},
        "stages": [{"stage": s, "emissions_kg": kg, "cache_hit": False} for s, kg in stages],
        "totals": {"carbon/emissions_kg": 3.73e-4}, "report": "/path/to/.transferlab/runs/<run id>/report.md",
        "registered_model": {"uri": "models:/quickstart-classification/1"},
        "tracking_uri": "sqlite:////path/to/.transferlab/mlflow.db", "experiment": "transferlab",
        "parent_run_id": "<id>",
    }, out)
    assert out.getvalue().strip().splitlines() == block.lines


def test_the_limits_table_is_the_code() -> None:
    """docs/operations.md's table of served-run limits names every limit, with the code's fixed defaults."""
    from pipelines.config.limits import _FIXED, default_limits

    text = (REPO / "docs" / "operations.md").read_text()
    section = text[text.index("### Limits of served runs"):]
    section = section[: section.index("\n#")]
    rows = [line.split("|")[1:3] for line in section.splitlines() if line.startswith("| `")]
    compared = 0
    for keys_cell, values_cell in rows:
        keys = [re.findall(r"`([^`]+)`", part)[0] for part in keys_cell.split(" / ")]
        values = [v.split()[0] for v in values_cell.split(" / ")]  # "1000000 each": the number
        if len(keys) == len(values):
            for key, value in zip(keys, values, strict=True):
                if key in _FIXED:
                    assert value == str(_FIXED[key]), f"{key}: the docs say {value}, the code {_FIXED[key]}"
                    compared += 1
    assert compared >= 20
    for key in default_limits():
        assert f"`{key}`" in section or f"`_{key.rsplit('_', 1)[-1]}`" in section, f"limit {key} is not in the table"


def test_the_readme_lists_every_make_target() -> None:
    from docs_check import makefile_targets

    text = " ".join((REPO / "README.md").read_text().split())
    listed = re.search(r"`make` targets: (.*?)\.", text)
    assert listed, "README.md: the sentence \"`make` targets: ...\" is gone"
    assert set(re.findall(r"`([\w-]+)`", listed.group(1))) == set(makefile_targets())


def test_the_readme_names_the_prefect_tasks_and_flows() -> None:
    """What the README says the Prefect UI shows: the flows' and the stage tasks' names."""
    from prefect import Flow, Task

    from pipelines import flows, sweep

    named = set(re.findall(r"`([\w\[\]]+)`", (REPO / "README.md").read_text()))
    objects = [*vars(flows).values(), *vars(sweep).values()]
    for task in (o for o in objects if isinstance(o, Task) and o.__module__ == flows.__name__):
        assert task.name in named or any(n.startswith(f"{task.name}[") for n in named), task.name
    for flow in (o for o in objects if isinstance(o, Flow) and o.name != "transferlab_stage"):
        assert flow.name in named, flow.name
