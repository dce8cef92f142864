"""What the model side of the config may choose from, importable without torch.

One home for each choice, so config validation (``pipelines/config/compose.py``, instant,
no torch) and the code that acts on it (``modules/models/factory.py``,
``modules/models/freeze.py``) read the same names.
"""

from __future__ import annotations

# The pretraining objective a language model was built for: next token, masked tokens, or
# a corrupted document rebuilt by a decoder.
FAMILIES = ("causal", "masked", "seq2seq")
# ``model.arch`` -> its family, for the architectures transferlab builds from scratch
# (modules/models/factory.py ARCH_KEYS maps each one's size keys).
ARCHS = {"gpt2": "causal", "bert": "masked", "bart": "seq2seq"}
# How a classifier fine-tunes (modules/models/freeze.py): every weight, only the head,
# the head plus the top finetune.trainable_layers layers, or the head plus low-rank adapters
# (modules/models/lora.py).
STRATEGIES = ("full", "linear_probe", "partial", "lora")
# The entries of finetune.inits that are not checkpoint references: this pipeline's
# pretrained export, the same architecture with fresh weights, zero_shot (causal LMs
# only: prompt scoring, no training) and tfidf (no network: the task's classical baseline,
# modules/baselines/classical.py).
BUILTIN_INITS = ("pretrained", "scratch", "zero_shot", "tfidf")
TFIDF = "tfidf"

# evaluate.inference_precision and `transferlab predict --precision`: the dtype predictions run in
# (modules/models/inference.py; auto: bf16 where the device runs it natively).
INFERENCE_PRECISIONS = ("auto", "bf16", "fp32")
