"""``transferlab compare``: runs side by side, from MLflow only.

Gathering (MLflow -> a ``Comparison``) and rendering (a ``Comparison`` -> text) are
separate pure steps so tests can check the rows without parsing a table, and so the
command never starts Prefect or imports torch: it only reads the tracking store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modules.tasks import HEADLINE
from pipelines.errors import UserError
from pipelines.tracking.runs import TAG_INIT, TAG_KIND, TAG_PARENT, TAG_RUN_NAME, TAG_STAGE

# Key metrics, in display order. An entry ending in "*" matches that metric per init
# (``test/accuracy/pretrained``, ``test/chrf/scratch``, ...) and its variants (``test/accuracy_gain``),
# sorted by name. The tasks' headline metrics (accuracy, entity F1, chrF) come first.
KEY_METRICS = (
    *(f"test/{metric}*" for metric in HEADLINE.values()), "test/f1_macro*", "val/loss", "val/perplexity",
    "train/tokens_per_sec", "carbon/emissions_kg", "carbon/energy_kwh", "carbon/duration_s",
)
# A pipeline parent run carries the totals and test metrics; the LM figures (val/*,
# throughput) live on its stage runs. Missing keys are taken from the children in this order.
CHILD_STAGE_ORDER = ("evaluate", "pretrain", "prep", "finetune")
# A parent whose children's metrics may fill its gaps. A sweep's fine-tunes are many points per
# init (budgets, seeds): none of them speaks for the sweep, so it takes only its stage runs' figures.
PARENT_KINDS = ("pipeline", "sweep")
FINETUNE_RUN_PREFIX = "finetune-"  # pipelines.stages.finetune names its runs finetune-<init label>
MISSING = "-"
SHORT_ID = 8


@dataclass
class RunInfo:
    run_id: str
    name: str
    params: dict[str, str]
    metrics: dict[str, float]
    inits: tuple[str, ...] = ()  # the init labels of a parent's fine-tunes (``test/<metric>/<init>`` keys)


@dataclass
class Comparison:
    runs: list[RunInfo]
    param_rows: list[tuple[str, list[str]]] = field(default_factory=list)  # differing params only
    identical_params: int = 0
    metric_rows: list[tuple[str, list[str]]] = field(default_factory=list)


def _client(uri: str) -> Any:
    """A client on an existing store; a missing sqlite file is an error, not a new empty store."""
    import logging

    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise UserError(f"no MLflow store at {uri} (set paths.home=... or tracking.uri=...)")
    for name in ("alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri)


def _init_of(child: Any) -> str | None:
    """The init label a fine-tune child run's test metrics belong to (None: not a fine-tune).

    Built-in inits are their ``transferlab.init`` tag; a checkpoint init is tagged ``checkpoint``
    and told apart by its run name, ``finetune-<label>``, the label the evaluate stage keys by.
    """
    tags = child.data.tags
    init = tags.get(TAG_INIT)
    if init is None and tags.get(TAG_STAGE) != "finetune":
        return None
    name = tags.get(TAG_RUN_NAME) or child.info.run_name or ""
    if (init is None or init == "checkpoint") and name.startswith(FINETUNE_RUN_PREFIX):
        return name.removeprefix(FINETUNE_RUN_PREFIX)
    return init


def _child_metrics(client: Any, run: Any, kind: str) -> tuple[dict[str, float], tuple[str, ...]]:
    """Metrics of a parent's stage runs (the preferred stage winning a shared key), and its inits.

    A fine-tune's metrics are never lifted under their bare name: the parent's ``test/accuracy``
    would be whichever init's run came first. A pipeline's fine-tune test metrics are keyed by
    their init instead (``test/chrf`` of the scratch run -> ``test/chrf/scratch``), as the
    evaluate stage logs them; a sweep takes none (many points per init).
    """
    children = client.search_runs([run.info.experiment_id],
                                  filter_string=f"tags.`{TAG_PARENT}` = '{run.info.run_id}'")
    rank = {stage: i for i, stage in enumerate(CHILD_STAGE_ORDER)}
    children.sort(key=lambda c: rank.get(c.data.tags.get(TAG_STAGE, ""), len(rank)))
    out: dict[str, float] = {}
    inits: list[str] = []
    for child in children:
        init = _init_of(child)
        if init is None:
            for key, value in child.data.metrics.items():
                out.setdefault(key, value)
        elif kind == "pipeline":
            inits += [] if init in inits else [init]
            for key, value in child.data.metrics.items():
                if key.startswith("test/"):
                    out.setdefault(f"{key}/{init}", value)
    return out, tuple(inits)


def _run_info(client: Any, run: Any) -> RunInfo:
    metrics = dict(run.data.metrics)
    inits: tuple[str, ...] = ()
    kind = run.data.tags.get(TAG_KIND)
    if kind in PARENT_KINDS:
        lifted, inits = _child_metrics(client, run, kind)
        for key, value in lifted.items():
            metrics.setdefault(key, value)
    name = run.data.tags.get(TAG_RUN_NAME) or run.info.run_name or ""
    return RunInfo(run.info.run_id, name, dict(run.data.params), metrics, inits)


def _is_run_id(client: Any, text: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(text)
    except MlflowException:
        return False
    return True


def runs_by_id(uri: str, run_ids: list[str]) -> list[RunInfo]:
    """The runs with these ids, in the given order; an unknown id is a ``UserError``."""
    from mlflow.exceptions import MlflowException

    client = _client(uri)
    out = []
    for run_id in run_ids:
        try:
            run = client.get_run(run_id)
        except MlflowException:
            raise UserError(f"unknown run id {run_id!r} in {uri}") from None
        out.append(_run_info(client, run))
    return out


def runs_of_experiment(uri: str, experiment: str, max_runs: int = 10) -> list[RunInfo]:
    """The pipeline parent runs of an MLflow experiment, newest first, at most ``max_runs``."""
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        if _is_run_id(client, experiment):
            raise UserError(f"need at least two runs to compare, got one run id ({experiment})")
        names = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
        raise UserError(f"no MLflow experiment named {experiment!r} in {uri} (experiments: {names})")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{TAG_KIND}` = 'pipeline'",
                              order_by=["attributes.start_time DESC"], max_results=max_runs)
    if not runs:
        raise UserError(f"MLflow experiment {experiment!r} has no pipeline runs")
    return [_run_info(client, r) for r in runs]


def _fmt_metric(value: float | None) -> str:
    if value is None:
        return MISSING
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
        return f"{value:.3e}"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"


def _matches(key: str, prefix: str, inits: set[str]) -> bool:
    """``key`` is ``prefix`` itself, a variant (``test/accuracy_gain``) or the metric of an init.

    With the runs' inits known, a deeper key is left out: ``test/entity_f1/PER/pretrained`` (one
    entity type) is in MLflow, not in the table. An init label may hold "/" (``checkpoint:org/name``).
    """
    rest = key.removeprefix(prefix)
    if key == rest:
        return False
    return rest == "" or rest.startswith("_") or (rest.startswith("/") and (not inits or rest[1:] in inits))


def _metric_keys(runs: list[RunInfo]) -> list[str]:
    present = set().union(*(r.metrics for r in runs))
    inits = set().union(*(r.inits for r in runs))
    keys: list[str] = []
    for pattern in KEY_METRICS:
        if pattern.endswith("*"):
            keys += sorted(k for k in present if _matches(k, pattern[:-1], inits) and k not in keys)
        elif pattern in present and pattern not in keys:
            keys.append(pattern)
    return keys


def compare(runs: list[RunInfo]) -> Comparison:
    """Rows for the table: params whose values differ (missing counts as a value), key metrics."""
    if len(runs) < 2:
        raise UserError(f"need at least two runs to compare, got {len(runs)}")
    result = Comparison(runs)
    for key in sorted(set().union(*(r.params for r in runs))):
        values = [r.params.get(key) for r in runs]
        if len(set(values)) == 1:
            result.identical_params += 1
        else:
            result.param_rows.append((key, [MISSING if v is None else v for v in values]))
    result.metric_rows = [(k, [_fmt_metric(r.metrics.get(k)) for r in runs]) for k in _metric_keys(runs)]
    return result


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 3, 0)] + "..."


def render(comp: Comparison, width: int = 100) -> str:
    """A plain-text table, at most ``width`` columns wide.

    Row labels on the left, one column per run. When the runs do not fit side by side
    the table is split into blocks of runs, each repeating the row labels, rather than
    squeezing every value into a few unreadable characters.
    """
    rows = comp.param_rows + comp.metric_rows
    labels = ["run", "name", *(k for k, _ in comp.param_rows), *("  " + k for k, _ in comp.metric_rows)]
    label_w = min(max(map(len, labels)), 34)
    cells = [[r.run_id[:SHORT_ID], r.name] + [vals[i] for _, vals in rows] for i, r in enumerate(comp.runs)]
    col_w = max(SHORT_ID, min(24, max(len(c) for col in cells for c in col)))
    per_block = max(1, (width - label_w) // (col_w + 2))
    col_w = min(col_w, width - label_w - 2) if per_block == 1 else col_w

    def line(label: str, values: list[str]) -> str:
        return (_cut(label, label_w).ljust(label_w)
                + "".join("  " + _cut(v, col_w).ljust(col_w) for v in values)).rstrip()

    out: list[str] = []
    for start in range(0, len(comp.runs), per_block):
        block = cells[start : start + per_block]
        if out:
            out.append("")
        out.append(line("run", [c[0] for c in block]))
        out.append(line("name", [c[1] for c in block]))
        out.append("-" * min(width, label_w + len(block) * (col_w + 2)))
        for j, (key, _) in enumerate(comp.param_rows, start=2):
            out.append(line(key, [c[j] for c in block]))
        if comp.metric_rows:
            out.append(line("metrics", []))
            for j, (key, _) in enumerate(comp.metric_rows, start=2 + len(comp.param_rows)):
                out.append(line("  " + key, [c[j] for c in block]))
    n = len(comp.param_rows)
    out.append("")
    out.append(f"{n} param{' differs' if n == 1 else 's differ'}, {comp.identical_params} identical (not shown); "
               f"missing values are '{MISSING}'")
    return "\n".join(out) + "\n"
