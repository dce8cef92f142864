"""A seq2seq fine-tune as an MLflow pyfunc model: the wrapper MLflow loads and serves.

No transformers pipeline serves seq2seq any more (modules/models/inference.py says why),
so its MLflow model is a ``python_function`` wrapper around ``TextGenerator`` with the
fine-tune's ``hf_model/`` as its artifact. The wrapper is pickled by reference: the
serving environment needs this package installed (``--env-manager local`` in this venv).
"""

from __future__ import annotations

from typing import Any

from mlflow.pyfunc import PythonModel

HF_MODEL = "hf_model"  # the artifact key (and directory in the MLflow model)


class Seq2SeqModel(PythonModel):
    """One target text per source text (the first column of the input)."""

    def __init__(self, max_length: int, max_target_length: int, num_beams: int, trust_remote_code: bool) -> None:
        self.max_length, self.max_target_length, self.num_beams = max_length, max_target_length, num_beams
        self.trust_remote_code = trust_remote_code
        self.generator: Any = None

    def load_context(self, context: Any) -> None:
        from modules.models.inference import TextGenerator

        self.generator = TextGenerator(context.artifacts[HF_MODEL], self.max_length, self.max_target_length,
                                       self.num_beams, self.trust_remote_code)

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> list[str]:
        import pandas as pd

        texts = model_input.iloc[:, 0] if isinstance(model_input, pd.DataFrame) else model_input
        return list(self.generator([str(t) for t in texts]))
