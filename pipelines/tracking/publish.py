"""What a flow run shows in the Prefect UI: a markdown summary that points at MLflow.

People trigger runs from the Prefect UI and read results in MLflow; the artifact is the
bridge: the headline numbers at a glance, and one click to the parent run with everything.
"""

from __future__ import annotations

import logging
from typing import Any

from pipelines.config.schema import TransferLabConfig
from pipelines.tracking.ui_links import experiment_url, run_url

log = logging.getLogger("transferlab")

SUMMARY_KEY = "transferlab-summary"


def mlflow_ui_base(cfg: TransferLabConfig, uri: str) -> str | None:
    """The MLflow UI address a browser can open: ``tracking.ui_url``, else an http(s) store."""
    base = cfg.tracking.ui_url or (uri if uri.startswith(("http://", "https://")) else None)
    return base.rstrip("/") if base else None


def run_link(cfg: TransferLabConfig, uri: str, experiment_id: str, run_id: str) -> str:
    """Markdown naming the parent run: links into the MLflow UI (the run, and the experiment's
    runs table), or the store and run id. The links open MLflow's model-training layout."""
    base = mlflow_ui_base(cfg, uri)
    if base:
        return (f"[MLflow parent run `{run_id}`]({run_url(base, experiment_id, run_id)}) · "
                f"[all runs]({experiment_url(base, experiment_id)})")
    from pipelines.tracking.runs import redact

    return f"MLflow store `{redact(uri)}`, parent run `{run_id}` (open it with `mlflow ui --backend-store-uri ...`)"


def publish(markdown: str, description: str) -> None:
    """Attach ``markdown`` to the current Prefect flow run (a no-op outside one)."""
    try:
        from prefect.artifacts import create_markdown_artifact
        from prefect.context import FlowRunContext

        if FlowRunContext.get() is None:
            return
        create_markdown_artifact(markdown=markdown, key=SUMMARY_KEY, description=description)
    except Exception as exc:  # an API hiccup must not fail a finished pipeline: MLflow has it all
        log.warning("no Prefect summary artifact: %s", exc)


def _num(value: float | None, scale: float = 1.0, fmt: str = ".3g") -> str:
    return "–" if value is None else format(value * scale, fmt)


def pretraining_gain(by_init: dict[str, float | None]) -> float | None:
    """Points (x100) the pretrained init scored over scratch on the headline metric; None without both."""
    pretrained, scratch = by_init.get("pretrained"), by_init.get("scratch")
    return None if pretrained is None or scratch is None else (pretrained - scratch) * 100


def pipeline_markdown(summary: dict[str, Any], link: str, report: str | None = None) -> str:
    """The summary of one ``run_pipeline`` as markdown: headline metric per init, stages, link."""
    lines = [f"## transferlab: {summary['until']} finished in {summary['wall_s']:.1f} s", "", f"**{link}**", ""]
    headline = summary.get("headline")
    if headline and headline["by_init"]:
        metric, by_init = headline["metric"], headline["by_init"]
        lines += [f"| init | test {metric} |", "|---|---|"]
        lines += [f"| {init} | {_num(v, fmt='.4f')} |" for init, v in by_init.items()]
        gain = pretraining_gain(by_init)
        if gain is not None:
            lines += ["", f"Pretraining changed test {metric} by **{gain:+.1f} points** over scratch."]
        lines.append("")
    lines += ["| stage | cache | CO2e (g) | energy (Wh) | time (s) |", "|---|---|---|---|---|"]
    for s in summary["stages"]:
        lines.append(f"| {s['stage']} | {'hit' if s['cache_hit'] else 'ran'} | {_num(s['emissions_kg'], 1000)} | "
                     f"{_num(s['energy_kwh'], 1000)} | {_num(s['duration_s'], fmt='.1f')} |")
    totals = summary.get("totals") or {}
    if "carbon/emissions_kg" in totals:
        lines += ["", f"Total: {_num(totals['carbon/emissions_kg'], 1000)} g CO2e, "
                      f"{_num(totals.get('carbon/energy_kwh'), 1000)} Wh."]
    if report:  # the evaluate report, minus its images (they live in MLflow)
        body = "\n".join(line for line in report.splitlines() if not line.lstrip().startswith("!["))
        lines += ["", "---", "", body]
    return "\n".join(lines) + "\n"
