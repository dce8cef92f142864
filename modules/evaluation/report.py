"""Render the pipeline report as Markdown."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _milli(value: float | None) -> str:
    """kg -> g, kWh -> Wh; a figure codecarbon did not produce reads "missing", never 0."""
    return "missing" if value is None else f"{value * 1000:.4g}"


def _s(sec: float | None) -> str:
    return "missing" if sec is None else f"{sec:.1f}"


def render_report(
    title: str,
    results: dict[str, dict[str, float]],
    lm: dict[str, float | None],
    stages: Sequence[dict[str, Any]],
    images: Sequence[str],
    notes: Sequence[str] = (),
    columns: Sequence[tuple[str, str]] = (("accuracy", "accuracy"), ("f1_macro", "macro-F1")),
    majority: dict[str, float] | None = None,
    inference: dict[str, dict[str, Any]] | None = None,
) -> str:
    """``results``: init -> task metrics; ``columns``: (metric, title) pairs shown, the
    headline first; ``stages``: rows with name, emissions_kg, energy_kwh, duration_s,
    cache_hit and produced_kg (what building the output cost), the pretrain row ``trained``
    False when the checkpoint only passed through; ``majority``: the task
    metrics of the majority-class rule on the same test split, the table's floor row;
    ``inference``: init -> ``InferenceCost.as_dict()`` (modules/evaluation/inference_cost.py)
    for the inits whose model was timed."""
    headline, headline_title = columns[0]
    lines = [f"# {title}", ""]
    lines += ["## Downstream task (test split)", "", "| init | " + " | ".join(t for _, t in columns) + " |",
              "|---|" + "---:|" * len(columns)]
    for init, m in results.items():
        # zero_shot is scored as classification: a column it lacks reads "-"
        cells = [f"{m[k]:.4f}" if k in m else "-" for k, _ in columns]
        lines.append(f"| {init} | " + " | ".join(cells) + " |")
    if majority is not None:
        cells = [f"{majority[k]:.4f}" if k in majority else "-" for k, _ in columns]
        lines.append("| *majority class* | " + " | ".join(cells) + " |")
    if "pretrained" in results and "scratch" in results:
        gain = results["pretrained"][headline] - results["scratch"][headline]
        lines += ["", f"Pretraining changes test {headline_title} by **{gain * 100:+.1f} points** over the same "
                      "architecture trained from scratch on the same labeled examples."]
    if "pretrained" in results and "tfidf" in results:
        gain = results["pretrained"][headline] - results["tfidf"][headline]
        lines += ["", f"Against the classical baseline (`tfidf`), pretraining changes test {headline_title} by "
                      f"**{gain * 100:+.1f} points**."]
    if "tfidf" in results:
        lines += ["", "`tfidf` trains no network: TF-IDF + logistic regression (classification), each word's most "
                      "frequent training tag (tagging), or copy / nearest-neighbour lookup (text-to-text), fitted "
                      "on the same labeled examples, its setting chosen on the validation split."]
    if majority is not None:
        lines += ["", f"*majority class*: every test example gets the training subset's most frequent label "
                      f"(tagging: its most frequent tag; text-to-text: the source copied), test {headline_title} "
                      f"{majority[headline]:.4f}: the floor below which a model learned nothing."]
    if "zero_shot" in results:
        lines += ["", "`zero_shot` trains nothing: the pretrained causal LM labels each test text by the "
                      "likelihood of each label's verbalisation after a prompt (no labeled examples used)."]
    lines += inference_table(inference or {}, results)
    lines += ["", "## Pretrained language model", ""]
    if lm["loss"] is None:
        lines += ["The pretrained checkpoint has no LM-head weights (e.g. a sentence encoder passed through "
                  "with pretrain.max_steps=0), so its perplexity is not measured.", ""]
    else:
        lines += [f"Validation loss {lm['loss']:.4f}, perplexity **{lm['perplexity']:.2f}** "
                  f"(over {lm['tokens']:.0f} predicted tokens).", ""]
    lines += ["## Cost per stage", "",
              "| stage | cache | this run: g CO2e | Wh | s | building the output: g CO2e |",
              "|---|---|---:|---:|---:|---:|"]
    for row in stages:
        lines.append(f"| {row['name']} | {'hit' if row.get('cache_hit') else 'miss'} "
                     f"| {_milli(row.get('emissions_kg'))} | {_milli(row.get('energy_kwh'))} "
                     f"| {_s(row.get('duration_s'))} | {_milli(row.get('produced_kg'))} |")
    pre_row: dict[str, Any] = next((dict(r) for r in stages if r["name"] == "pretrain"), {})
    # A checkpoint passed through (pretrain.max_steps=0) cost only its export: a share of that
    # would read as "a fine-tune costs 1930% of pretraining".
    trained = pre_row.get("trained", True)
    pre = pre_row.get("produced_kg") if trained else None
    # What a fine-tune of a network costs: zero_shot trains nothing, tfidf trains no network.
    finetunes = [r for r in stages if r["name"].startswith("finetune")
                 and r["name"] not in ("finetune[zero_shot]", "finetune[tfidf]")]
    ft: list[float] = [r["produced_kg"] for r in finetunes if r.get("produced_kg") is not None]
    if pre and ft and len(ft) == len(finetunes):
        lines += ["", f"One fine-tune costs {100 * sum(ft) / len(ft) / pre:.1f}% of pretraining's CO2e."]
    elif pre_row and not trained:
        lines += ["", "Pretraining did not train here (pretrain.max_steps=0: the checkpoint passed through), "
                      "so its row is the export's cost, not a pretraining's, and no fine-tune share of it is given."]
    lines += ["", *notes] if notes else []
    lines += [""] + [f"![{name}]({name})" for name in images] + [""]
    return "\n".join(lines)


def distillation_note(results: dict[str, dict[str, float]], teacher: str, student: str, headline: str,
                      labeled: int, unlabeled: int, alpha: float, temperature: float,
                      parameters: tuple[int | None, int | None] = (None, None)) -> str:
    """The report's line on the ``distilled`` init: what it learned from, how much of the
    teacher's test score it keeps (when the teacher is one of this run's inits), and with how
    many of its parameters (``parameters``: student's, teacher's; non-embedding)."""
    line = (f"`distilled`: the student ({student}) trained on the soft labels of the teacher `{teacher}` "
            f"(distill.alpha {alpha:g}, temperature {temperature:g}) on {labeled} labeled + {unlabeled} unlabeled "
            "texts.")
    ours, theirs = results.get("distilled", {}).get(headline), results.get(teacher, {}).get(headline)
    if ours is not None and theirs:
        line += f" It keeps {100 * ours / theirs:.1f}% of the teacher's test {headline}."
    ours_n, theirs_n = parameters
    if ours_n and theirs_n:
        line += (f" Parameters (non-embedding): student {ours_n:,}, teacher {theirs_n:,} "
                 f"({theirs_n / ours_n:.2g}x the student's).")
    return line


def inference_table(inference: dict[str, dict[str, Any]], results: dict[str, Any]) -> list[str]:
    """The report's section on what using each model costs, in the downstream table's init order."""
    timed = [init for init in results if inference.get(init)]
    if not timed:
        return []
    # The networks' dtype and batch size head the table; tfidf's float64 has its own line below.
    first = inference[next((i for i in timed if i != "tfidf"), timed[0])]
    lines = ["", "## What using each model costs", "",
             f"Predicting the test texts ({first['examples']} of them, repeated as needed) with the served model "
             f"(tokenizer, forward pass, post-processing; {first['dtype']}), one text per call and in batches of "
             f"{first['batch_size']}; CO2 from codecarbon around the batched pass.", "",
             "| init | parameters | ms per example, batch 1 | ms per example, batched | examples/s | "
             "g CO2e per 1k predictions |", "|---|---:|---:|---:|---:|---:|"]
    for init in timed:
        c = inference[init]
        g = c.get("emissions_g_per_1k")
        lines.append(f"| {init} | {c['parameters']:,} | {c['ms_per_example_batch1']:.2f} | "
                     f"{c['ms_per_example_batched']:.2f} | {c['examples_per_sec']:,.0f} | "
                     f"{'missing' if g is None else f'{g:.3g}'} |")
    untimed = [init for init in results if init not in timed]
    if untimed:
        lines += ["", f"Not timed: {', '.join(f'`{i}`' for i in untimed)} (zero_shot and the seq2seq baseline's "
                      "rules are not served as models; or a cache entry built before inference was measured)."]
    if "tfidf" in timed:
        lines += ["", "`tfidf`'s parameters are its logistic-regression coefficients (the TF-IDF vocabulary is not "
                      "counted); it runs on the CPU in float64 whatever the device."]
    return lines
