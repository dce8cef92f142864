"""One home per ML choice: the light tables config validation reads agree with the code that acts on them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from modules.data.tokenizer_kinds import AUTO_KIND, TOKENIZER_KINDS, TRAINED_KINDS, trained_kind
from modules.models.choices import ARCHS, FAMILIES
from modules.tasks import HEADLINE, TASK_FAMILIES, TASKS, get_task


def test_every_arch_is_built_and_every_family_has_an_lm_head() -> None:
    from modules.data.tokenization import FAMILY_SPECIAL
    from modules.models.factory import ARCH_KEYS, LM_AUTO

    assert set(ARCHS) == set(ARCH_KEYS)
    assert set(ARCHS.values()) == set(FAMILIES) == set(LM_AUTO) == set(FAMILY_SPECIAL) == set(AUTO_KIND)
    assert all(set(families) <= set(FAMILIES) for families in TASK_FAMILIES.values())


def test_tokenizer_kinds() -> None:
    from modules.data.tokenization import tokenizer_kind_for

    assert set(TRAINED_KINDS) | {"auto", "pretrained"} == set(TOKENIZER_KINDS)
    for family in FAMILIES:
        assert tokenizer_kind_for(family, "auto") == trained_kind("auto", family) == AUTO_KIND[family]
        assert tokenizer_kind_for(family, "auto", "some/checkpoint") == "pretrained"
    assert trained_kind("unigram", "causal") == "unigram"


def test_every_task_loads_by_its_name_with_its_tables() -> None:
    for name in TASKS:
        task = get_task(name)
        assert task.name == name
        assert task.families == TASK_FAMILIES[name]
        assert task.headline == HEADLINE[name] == task.report_columns[0][0]  # the report's first column
    assert set(HEADLINE) == set(TASKS)


def test_unknown_task_names_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown finetune.task 'ner' \(choices: classification, "):
        get_task("ner")


def test_config_validation_imports_no_torch() -> None:
    """compose reads the ML tables from modules/ without importing torch (validation stays instant)."""
    code = ("import sys; import pipelines.config.compose, modules.tasks, modules.models.checkpoints; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'lightning', 'transformers'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
