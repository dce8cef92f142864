"""A fine-tuned checkpoint as a transformers inference pipeline: the object MLflow's
``transformers`` flavor saves and serves (pipelines/tracking/mlflow_models.py).

A fine-tune's ``hf_model/`` is a plain ``save_pretrained`` directory; for a user it is one
``pipeline(task)`` away from predictions. The sequence classifier is saved with
``LABEL_<i>`` names (its head knows only how many labels there are), so the pipeline gets
the dataset's label names here: a served model answers ``positive``, not ``LABEL_1``.

Seq2seq has no transformers pipeline to build: transformers 5 removed
``text2text-generation``, and ``text-generation`` neither loads an encoder-decoder nor
adds the ``source <eos>`` prompt a causal fine-tune was trained on. :class:`TextGenerator`
generates as the fine-tune's test did (modules/training/seq2seq.py), for MLflow's pyfunc
wrapper and ``transferlab predict``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from modules.models.choices import INFERENCE_PRECISIONS

# finetune.task -> the transformers pipeline task that serves it.
PIPELINE_TASK = {"classification": "text-classification", "token_classification": "token-classification"}


def call_options(task: str) -> dict[str, Any]:
    """What every call of the task's pipeline passes. Token classification keeps ``O``: one
    tag per token, so a sentence without entities answers its ``O`` tags, not an empty list
    (which MLflow 3.17's pyfunc wrapper fails on with an IndexError); it truncates at the
    tokenizer's model_max_length by itself. Classification truncates only when told to."""
    return {"ignore_labels": []} if task == "token_classification" else {"truncation": True}


def pipeline_task(task: str) -> str | None:
    """The transformers pipeline task for ``finetune.task``; None where none serves it (seq2seq)."""
    return PIPELINE_TASK.get(task)


def inference_device() -> str:
    """Where predictions run: the GPU when there is one, else the CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def inference_dtype(precision: str = "auto") -> Any:
    """The weights' dtype for predictions. ``auto``: bf16 where the device runs it natively
    (a GPU with bf16; a CPU with AVX512-BF16 or AMX, where bf16 matmuls are several times
    fp32's), else fp32: emulated bf16 would be slower than fp32, not faster."""
    import torch

    from modules.training.hardware import cpu_supports_bf16

    if precision not in INFERENCE_PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(INFERENCE_PRECISIONS)}")
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    native = torch.cuda.is_bf16_supported() if torch.cuda.is_available() else cpu_supports_bf16()
    return torch.bfloat16 if native else torch.float32


def inference_pipeline(hf_model: str | Path, task: str, label_names: list[str],
                       trust_remote_code: bool = False, dtype: Any = None, device: str = "cpu") -> Any:
    """``transformers.pipeline`` over the fine-tuned checkpoint answering with the dataset's
    label names; on ``device`` in ``dtype`` (None: the checkpoint's own, fp32; what MLflow
    saves stays fp32 on the CPU, the dtype every server can run)."""
    from transformers import pipeline

    name = pipeline_task(task)
    if name is None:
        raise ValueError(f"no transformers pipeline serves finetune.task={task}")
    extra = {} if dtype is None else {"dtype": dtype}
    pipe = pipeline(name, model=str(hf_model), tokenizer=str(hf_model), device=device,  # type: ignore[call-overload]
                    trust_remote_code=trust_remote_code, **extra)  # (name is one of PIPELINE_TASK's literals)
    from modules.models.checkpoints import max_positions

    # A text longer than the model's position embeddings is cut, not an IndexError: the
    # tokenizer truncates at model_max_length (saved with the MLflow model too).
    positions = max_positions(hf_model)
    if positions and (pipe.tokenizer.model_max_length or 0) > positions:
        pipe.tokenizer.model_max_length = positions
    config = pipe.model.config
    if label_names and len(label_names) == config.num_labels:
        config.id2label = dict(enumerate(label_names))
        config.label2id = {label: i for i, label in enumerate(label_names)}
    return pipe


# The head a fine-tune's config names -> its finetune.task (a local HF folder given to `predict`).
_HEAD_TASK = {"ForSequenceClassification": "classification", "ForTokenClassification": "token_classification"}


def checkpoint_task(hf_model: str | Path) -> str | None:
    """The ``finetune.task`` a saved fine-tune serves, from its config's ``architectures``."""
    import json

    try:
        archs = json.loads((Path(hf_model) / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError):
        return None
    return next((task for arch in archs for head, task in _HEAD_TASK.items() if arch.endswith(head)), None)


def batch_size_for_device() -> int:
    """Texts per forward pass: more on a GPU, where a batch costs about what one text does."""
    import torch

    return 64 if torch.cuda.is_available() else 16


def as_rows(task: str, outputs: list[Any]) -> list[dict[str, Any]]:
    """A transformers pipeline's answers as one ``{label, score}`` per text. Token
    classification: the tag of each token, comma-joined, and their mean score."""
    if task == "classification":
        return [{"label": o["label"], "score": float(o["score"])} for o in outputs]
    rows = []
    for entities in outputs:
        scores = [float(e["score"]) for e in entities]
        rows.append({"label": ",".join(e.get("entity_group") or e["entity"] for e in entities),
                     "score": sum(scores) / len(scores) if scores else None})
    return rows


class TextGenerator:
    """A seq2seq fine-tune answering one target text per source text, decoded as its test
    was: a causal LM continues ``source <eos>`` (the source cut to leave room for
    ``max_target_length`` tokens), an encoder-decoder decodes from the source; greedy (or
    ``num_beams``) up to ``max_target_length`` new tokens, cut at the first EOS."""

    def __init__(self, hf_model: str | Path, max_length: int, max_target_length: int, num_beams: int = 1,
                 trust_remote_code: bool = False, dtype: Any = None, device: str = "cpu") -> None:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        config = AutoConfig.from_pretrained(str(hf_model), trust_remote_code=trust_remote_code)
        self.causal = not config.is_encoder_decoder
        auto = AutoModelForCausalLM if self.causal else AutoModelForSeq2SeqLM
        extra = {} if dtype is None else {"dtype": dtype}
        self.model = auto.from_pretrained(str(hf_model), trust_remote_code=trust_remote_code, **extra).eval()
        self.model.to(device)  # in place (nn.Module.to returns self)
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(str(hf_model), trust_remote_code=trust_remote_code)
        self.max_length, self.max_target_length, self.num_beams = max_length, max_target_length, num_beams

    def _inputs(self, texts: list[str]) -> tuple[Any, Any]:
        import torch

        tok = self.tokenizer
        if not self.causal:
            enc = tok(texts, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
            return enc["input_ids"], enc["attention_mask"]
        eos = tok.eos_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos
        budget = max(self.max_length - self.max_target_length, 2)
        prompts = [ids[: budget - 1] + [eos] for ids in tok(texts, add_special_tokens=False)["input_ids"]]
        width = max(len(p) for p in prompts)  # left padding: generation continues every prompt at its end
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        return ids, mask

    def __call__(self, texts: list[str]) -> list[str]:
        import torch

        if not texts:
            return []
        tok = self.tokenizer
        ids, mask = self._inputs(texts)
        ids, mask = ids.to(self.device), mask.to(self.device)
        with torch.no_grad():
            out = self.model.generate(  # type: ignore[operator]
                input_ids=ids, attention_mask=mask, max_new_tokens=self.max_target_length, num_beams=self.num_beams,
                do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        new = out[:, ids.shape[1]:] if self.causal else out[:, 1:]
        answers = []
        for row in new.tolist():
            if tok.eos_token_id in row:
                row = row[: row.index(tok.eos_token_id)]
            answers.append(str(tok.decode(row, skip_special_tokens=True)).strip())
        return answers


Predictor = Callable[[list[str]], list[dict[str, Any]]]


class ServedModel(NamedTuple):
    predict: Predictor
    parameters: int  # all of them, embeddings and head included: a server holds them all
    dtype: str  # what the weights run in: bfloat16 | float32


def checkpoint_predictor(hf_model: str | Path, task: str, label_names: list[str], max_length: int = 128,
                         max_target_length: int = 32, num_beams: int = 1, trust_remote_code: bool = False,
                         precision: str = "auto") -> ServedModel:
    """A fine-tuned checkpoint as ``texts -> [{label, score}]``, on the inference device in
    the ``precision``'s dtype: what ``transferlab predict`` runs on a folder and what a
    fine-tune's inference cost (modules/evaluation/inference_cost.py) is measured on.
    Seq2seq answers its generated text as the label, without a score."""
    device, dtype = inference_device(), inference_dtype(precision)
    name = str(dtype).removeprefix("torch.")
    if task == "seq2seq":
        generate = TextGenerator(hf_model, max_length, max_target_length, num_beams, trust_remote_code, dtype, device)
        return ServedModel(lambda texts: [{"label": answer, "score": None} for answer in generate(texts)],
                           _count(generate.model), name)
    pipe = inference_pipeline(hf_model, task, label_names, trust_remote_code, dtype, device)
    options = call_options(task)
    return ServedModel(lambda texts: as_rows(task, pipe(texts, batch_size=len(texts), **options)), _count(pipe.model),
                       name)


def _count(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))

