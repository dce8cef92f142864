"""The flows as the Prefect UI offers them: typed parameters, and untrusted input checked first.

Each deployed flow takes the parameters people change most as typed fields (the UI renders
dropdowns and number inputs for them) plus free-form ``overrides``. The operator's own
overrides (given to ``transferlab up``/``serve``) come first; the UI's are checked by
``pipelines.serve.ui_input`` before anything runs, against the operator's limits too
(``pipelines.config.limits``, handed over in ``TRANSFERLAB_LIMITS``), and a rejection fails the flow
run with one line naming the override or limit.

The Python names start with ``ui_`` (``ui_transfer_learning``, ``ui_prep``, ...,
``ui_data_efficiency``): the flows the CLI runs are ``pipelines.flows.transfer_learning`` and
``pipelines.sweep.data_efficiency``, the stages are ``pipelines.stages.prep`` etc. The Prefect
flow and deployment names people see stay ``transfer_learning``, ``prep``, ...

No ``from __future__ import annotations`` here: Prefect builds each deployment's parameter
schema from the live annotations (the ``Literal`` choices below become dropdowns).
"""

import functools
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from prefect import Flow, flow
from prefect.states import Failed

from pipelines.config.compose import CONF_DIR
from pipelines.config.schema import TransferLabConfig
from pipelines.errors import ConfigError
from pipelines.serve.ui_input import DATA_DIRS_ENV, SERVER_OVERRIDES_ENV

log = logging.getLogger("transferlab")


def _choices(group: str) -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml")))


# The presets, as a Literal so the Prefect UI offers a dropdown. Its values are the conf/
# files, known only at run time: to the type checker they are strings.
if TYPE_CHECKING:
    Experiment = str
    Model = str
else:
    Experiment = Literal[_choices("experiment")]
    Model = Literal[_choices("model")]

ARGS_DOC = """

    Args:
        experiment: an experiment preset (conf/experiment); empty: the service's default
        model: a model preset (conf/model); empty: the preset's model
        max_steps: pretraining optimizer steps (pretrain.max_steps); empty: the preset's
        label_budget: labeled examples to fine-tune on (finetune.train_examples); empty: the preset's
        overrides: more Hydra overrides, one per entry, e.g. finetune.max_epochs=3
"""


def _documented(summary: str) -> Any:
    """Set the docstring before @flow reads it: Prefect turns its Args into field descriptions."""
    def set_doc(fn: Any) -> Any:
        fn.__doc__ = summary + ARGS_DOC
        return fn
    return set_doc


def server_overrides() -> list[str]:
    raw = os.environ.get(SERVER_OVERRIDES_ENV) or "[]"
    value = json.loads(raw)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"bad value for {SERVER_OVERRIDES_ENV}: {raw!r} (a JSON list of overrides)")
    return value


def data_dirs() -> list[str]:
    return [d for d in (os.environ.get(DATA_DIRS_ENV) or "").split(os.pathsep) if d]


def ui_overrides(experiment: str | None, model: str | None, max_steps: int | None, label_budget: int | None,
                 overrides: list[str] | None) -> list[str]:
    """The typed parameters as overrides, then the free-form ones (which may refine them)."""
    out = []
    if experiment:
        out.append(f"experiment={experiment}")
    if model:
        out.append(f"model={model}")
    if max_steps is not None:
        out.append(f"pretrain.max_steps={max_steps}")
    if label_budget is not None:
        out.append(f"finetune.train_examples={label_budget}")
    return [*out, *(overrides or [])]


def checked_config(ui: list[str]) -> TransferLabConfig:
    """Compose the operator's overrides + the UI's, refusing bad UI input before any work."""
    from pipelines.runtime.env import quiet_libraries
    from pipelines.serve.ui_input import untrusted_config

    quiet_libraries()  # this is a fresh flow-run process: Lightning/transformers to warnings only
    cfg = untrusted_config(server_overrides(), ui, data_dirs())
    log.info("transferlab: overrides from the UI %s (service defaults %s)", ui or "none", server_overrides() or "none")
    return cfg


def _user_errors_fail_cleanly(fn: Any) -> Any:
    """Bad input (a rejected override, a missing file) ends the flow run Failed with one line
    as its state message, instead of a traceback: it is the user's to fix, not a crash. The
    line never quotes a file's contents (``pipelines.serve.ui_input.shown_to_ui``)."""
    from modules.data.errors import DataError
    from pipelines.errors import UserError
    from pipelines.serve.ui_input import shown_to_ui

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (UserError, DataError) as exc:
            message = shown_to_ui(exc)  # the key and file, never what the file contains
            log.error("transferlab: %s", message)
            return Failed(message=f"transferlab: {message}")
    return wrapper


@flow(name="transfer_learning", description="prep -> pretrain -> finetune (pretrained, scratch, tfidf) -> evaluate")
@_documented("The whole pipeline, pretrained vs scratch, with the report.")
@_user_errors_fail_cleanly
def ui_transfer_learning(experiment: Experiment | None = None, model: Model | None = None, max_steps: int | None = None,
                      label_budget: int | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    from pipelines.flows import run_pipeline

    cfg = checked_config(ui_overrides(experiment, model, max_steps, label_budget, overrides))
    if cfg.sweep.enabled:
        raise ConfigError(f"experiment={cfg.experiment_name} is a sweep: start the data_efficiency deployment")
    return run_pipeline(cfg, "evaluate")


def _stage_flow(stage: str, what: str) -> Flow[..., dict[str, Any]]:
    def stage_flow(experiment: Experiment | None = None, model: Model | None = None, max_steps: int | None = None,
                   label_budget: int | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
        from pipelines.flows import run_pipeline

        return run_pipeline(checked_config(ui_overrides(experiment, model, max_steps, label_budget, overrides)), stage)

    # Prefect loads a deployment's flow by module path: the function needs its own name.
    stage_flow.__name__ = stage_flow.__qualname__ = f"ui_{stage}"
    doc = _documented(f"{what} (upstream stages run first or come from cache).")
    return flow(name=stage, description=what)(doc(_user_errors_fail_cleanly(stage_flow)))


ui_prep = _stage_flow("prep", "Prepare the corpus, labeled data and tokenizer")
ui_pretrain = _stage_flow("pretrain", "Pretrain the language model")
ui_finetune = _stage_flow("finetune", "Fine-tune from the pretrained model and from scratch")
ui_evaluate = _stage_flow("evaluate", "Evaluate and write the report")


@flow(name="data_efficiency", description="pretrain once; fine-tune over label budgets x inits x seeds; report")
@_user_errors_fail_cleanly
def ui_data_efficiency(experiment: Experiment | None = None, model: Model | None = None, max_steps: int | None = None,
                    budgets: list[int] | None = None, seeds: list[int] | None = None,
                    overrides: list[str] | None = None) -> dict[str, Any]:
    """Learning curves: the headline test metric vs the number of labels, per init.

    Args:
        experiment: an experiment preset (conf/experiment); empty: the service's default
        model: a model preset (conf/model); empty: the preset's model
        max_steps: pretraining optimizer steps (pretrain.max_steps); empty: the preset's
        budgets: label budgets to sweep (sweep.budgets), e.g. [16, 64, 256]; empty: the preset's
        seeds: seeds per point (sweep.seeds); empty: the preset's
        overrides: more Hydra overrides, one per entry, e.g. sweep.parallel=1
    """
    from pipelines.sweep import run_sweep

    ui = ui_overrides(experiment, model, max_steps, None, overrides)
    if budgets:
        ui.append(f"sweep.budgets=[{','.join(str(int(b)) for b in budgets)}]")
    if seeds:
        ui.append(f"sweep.seeds=[{','.join(str(int(s)) for s in seeds)}]")
    return run_sweep(checked_config([*ui, "sweep.enabled=true"]))


FLOWS: tuple[Flow[..., Any], ...] = (ui_transfer_learning, ui_prep, ui_pretrain, ui_finetune, ui_evaluate,
                                     ui_data_efficiency)
