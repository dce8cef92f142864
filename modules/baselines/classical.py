"""The ``tfidf`` init: a classical baseline per task kind, and the majority-class floor.

A report that only compares the pretrained model with the same network trained from
scratch flatters pretraining: the question a user brings is whether pretraining beats
what they would otherwise do, which for text is a one-second classical model. So every
task kind gets one, fitted on exactly the labeled examples the neural fine-tunes get
(``Task.subset`` with the same budget and seed), chosen on the validation split, and
scored on the test split by the task's own ``Task.score`` from rows in the task's own
prediction format, so its metrics carry the same names as a fine-tune's.

- classification: TF-IDF of word unigrams and bigrams (sublinear tf) + logistic
  regression; C from ``C_GRID`` by validation accuracy (ties: lower validation log loss,
  then the smaller C, i.e. the stronger regularisation).
- token_classification: each word gets the tag it had most often in the training subset
  (exact word, else its lower-cased form, else the most frequent tag overall: ``O`` on
  NER data). A CRF would be stronger, but needs a package this project does not carry.
- seq2seq: the better on validation chrF of two rules (ties: copy): ``copy`` (the output
  is the source) and ``nearest_neighbour`` (the target of the training source nearest by
  TF-IDF cosine similarity).

The majority-class rule (classification: the most frequent training label; token
classification: the most frequent training tag, ``O``, for every word; seq2seq: copy) is
the floor every report draws: :func:`majority_scores`.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, load_from_disk

from modules.tasks import get_task
from modules.tasks.base import Task

# Inverse regularisation strengths tried for the logistic regression, log-spaced.
C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)
COPY, NEAREST = "copy", "nearest_neighbour"
WORD_MAJORITY = "word_majority"


@dataclass
class BaselineResult:
    metrics: dict[str, float]  # test/* from Task.score; val/* of the chosen C or rule
    predictions: list[dict[str, Any]]  # one row per test example (Task.prediction_rows)
    majority: dict[str, float]  # test/* of the majority-class rule on the same test split
    train_examples: int
    trainable_parameters: int  # logistic-regression coefficients and intercepts; 0 for rules
    label_names: list[str]
    choice: dict[str, Any]  # what validation chose: {"C": 1.0} or {"rule": "copy"}
    # The fitted baseline as a server would run it: texts -> one answer each (the inference
    # cost is timed on it); None where there is no cheap per-text form (seq2seq's rules).
    predict: Callable[[list[str]], list[Any]] | None = None


def load_labeled(prep_dir: str | Path) -> DatasetDict:
    """The prep output's labeled splits (train, validation, test), raw rows."""
    return load_from_disk(str(Path(prep_dir) / "labeled"))


def train_subset(task: Task, labeled: DatasetDict, budget: int, seed: int) -> Dataset:
    """The training examples of a ``budget``/``seed`` point: chosen by ``Task.subset`` exactly as
    ``modules.training.recipes.finetune_on_task`` chooses them, so every init sees the same ones."""
    pool = labeled["train"]
    return pool.select(task.subset(pool, budget, seed))


def _top(counts: Counter[Any]) -> Any:
    """The most frequent key; ties go to the smallest, so the answer does not depend on row order."""
    return min(counts, key=lambda k: (-counts[k], k))


def _score(task: Task, ds: Dataset, outputs: list[Any], label_names: list[str], prefix: str) -> dict[str, float]:
    rows = task.prediction_rows(ds, outputs, label_names)
    return {f"{prefix}/{k}": v for k, v in task.score(rows, label_names).items()}


def _majority_outputs(task_name: str, train: Dataset, ds: Dataset, label_names: list[str]) -> list[Any]:
    if task_name == "classification":
        label = _top(Counter(train["label"]))
        return [label] * len(ds)
    if task_name == "token_classification":
        tag = _overall_tag(train, label_names)
        return [[tag] * len(words) for words in ds["tokens"]]
    return list(ds["source"])  # seq2seq: copy


def majority_scores(labeled: DatasetDict, task_name: str, budget: int, seed: int) -> dict[str, float]:
    """Test metrics (``test/*``, the task's names) of the majority-class rule fitted on the
    ``budget``/``seed`` training subset: the level below which a model learned nothing."""
    task = get_task(task_name)
    train = train_subset(task, labeled, budget, seed)
    names = task.label_names(labeled["train"])
    return _score(task, labeled["test"], _majority_outputs(task_name, train, labeled["test"], names), names, "test")


# --- classification -------------------------------------------------------------------------


def _log_loss(y: Sequence[int], proba: Any, classes: Sequence[int]) -> float:
    """Mean negative log-probability of the true class; a class the model never saw has p=0
    (clipped), which sklearn's log_loss refuses rather than scores."""
    column = {int(c): i for i, c in enumerate(classes)}
    eps = 1e-15
    total = 0.0
    for row, label in zip(proba, y, strict=True):
        p = row[column[label]] if label in column else 0.0
        total -= math.log(min(max(float(p), eps), 1.0))
    return total / max(len(y), 1)


def _tfidf_logistic(train: Dataset, validation: Dataset, test: Dataset
                    ) -> tuple[list[int], dict[str, float], dict[str, Any], int, Callable[[list[str]], list[Any]]]:
    """Test predictions, validation figures, the chosen C, the fitted coefficient count, and
    the fitted model as texts -> labels.

    Every grid model is fitted on the training subset only, so the chosen one *is* the refit
    on the training subset with the chosen C (lbfgs is deterministic)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    y = list(train["label"])
    if len(set(y)) < 2:  # one class in training: nothing to separate, predict it
        only = y[0]
        return [only] * len(test), {}, {"C": None}, 0, lambda texts: [only] * len(texts)
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    x = vectorizer.fit_transform(train["text"])
    xv = vectorizer.transform(validation["text"])
    yv = list(validation["label"])
    best: tuple[tuple[float, float, float], Any, dict[str, float]] | None = None
    for c in C_GRID:
        clf = LogisticRegression(C=c, max_iter=2000).fit(x, y)
        if yv:
            proba = clf.predict_proba(xv)
            pred = clf.classes_[proba.argmax(axis=1)]
            accuracy = sum(int(p) == t for p, t in zip(pred, yv, strict=True)) / len(yv)
            loss = _log_loss(yv, proba, list(clf.classes_))
        else:  # no validation split to choose on: every C ties, the smallest wins
            accuracy, loss = 0.0, 0.0
        key = (-accuracy, loss, c)
        if best is None or key < best[0]:
            best = (key, clf, {"val/accuracy": accuracy, "val/loss": loss})
    assert best is not None
    (_, _, chosen_c), clf, val = best
    def predict(texts: list[str]) -> list[Any]:
        return [int(p) for p in clf.predict(vectorizer.transform(texts))]

    return predict(list(test["text"])), val, {"C": chosen_c}, int(clf.coef_.size + clf.intercept_.size), predict


# --- token classification -------------------------------------------------------------------


def _overall_tag(train: Dataset, label_names: list[str]) -> int:
    """The most frequent tag of the training subset (``O`` on NER data)."""
    counts: Counter[int] = Counter(t for tags in train["tags"] for t in tags)
    if counts:
        return int(_top(counts))
    return label_names.index("O") if "O" in label_names else 0


def _word_majority(train: Dataset, label_names: list[str]) -> Callable[[Sequence[str]], list[int]]:
    """A tagger: each word's most frequent training tag (exact, then lower-cased, then overall)."""
    exact: dict[str, Counter[int]] = defaultdict(Counter)
    lower: dict[str, Counter[int]] = defaultdict(Counter)
    for words, tags in zip(train["tokens"], train["tags"], strict=True):
        for word, tag in zip(words, tags, strict=True):
            exact[word][tag] += 1
            lower[word.lower()][tag] += 1
    by_word = {w: _top(c) for w, c in exact.items()}
    by_lower = {w: _top(c) for w, c in lower.items()}
    fallback = _overall_tag(train, label_names)

    def predict(words: Sequence[str]) -> list[int]:
        return [int(by_word.get(w, by_lower.get(w.lower(), fallback))) for w in words]

    return predict


# --- seq2seq --------------------------------------------------------------------------------


def _nearest_targets(train: Dataset, sources: Sequence[str]) -> list[str] | None:
    """For each source, the target of the most TF-IDF-cosine-similar training source (the
    first training pair when nothing overlaps); None when the sources have no word at all."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    # Single-character words count too: short synthetic or code-like sources are made of them.
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"(?u)\b\w+\b")
    try:
        x = vectorizer.fit_transform(train["source"])  # rows are L2-normalised: a dot product is the cosine
    except ValueError:  # empty vocabulary
        return None
    if not sources:
        return []
    import numpy as np

    nearest = np.asarray((vectorizer.transform(list(sources)) @ x.T).argmax(axis=1)).ravel()
    targets = train["target"]
    return [targets[int(i)] for i in nearest]


def _seq2seq_rule(task: Task, train: Dataset, validation: Dataset, test: Dataset
                  ) -> tuple[list[str], dict[str, float], dict[str, Any]]:
    """Test outputs of the rule with the better validation chrF (copy on a tie), and both figures."""
    val: dict[str, float] = {}
    candidates = {COPY: list(validation["source"]), NEAREST: _nearest_targets(train, validation["source"])}
    best = COPY
    for rule, outputs in candidates.items():
        if outputs is None:
            continue
        val[f"val/{task.headline}/{rule}"] = _score(task, validation, outputs, [], "val")[f"val/{task.headline}"]
        if val[f"val/{task.headline}/{rule}"] > val[f"val/{task.headline}/{best}"]:
            best = rule
    val[f"val/{task.headline}"] = val[f"val/{task.headline}/{best}"]
    outputs = list(test["source"]) if best == COPY else _nearest_targets(train, test["source"])
    assert outputs is not None
    return outputs, val, {"rule": best}


# --- the baseline ---------------------------------------------------------------------------


def classical_baseline(labeled: DatasetDict, task_name: str, budget: int, seed: int) -> BaselineResult:
    """Fit the task's classical baseline on the ``budget``/``seed`` training subset, choose its
    setting on validation, and score its test predictions (see the module docstring)."""
    task = get_task(task_name)
    train = train_subset(task, labeled, budget, seed)
    validation, test = labeled["validation"], labeled["test"]
    names = task.label_names(labeled["train"])
    parameters = 0
    outputs: list[Any]
    predict: Callable[[list[str]], list[Any]] | None = None
    if task_name == "classification":
        outputs, val, choice, parameters, predict = _tfidf_logistic(train, validation, test)
    elif task_name == "token_classification":
        tagger = _word_majority(train, names)

        def predict(texts: list[str]) -> list[Any]:  # a served tagger gets sentences
            return [tagger(text.split()) for text in texts]

        outputs = [tagger(words) for words in test["tokens"]]
        val = _score(task, validation, [tagger(words) for words in validation["tokens"]], names, "val")
        choice = {"rule": WORD_MAJORITY}
    elif task_name == "seq2seq":
        outputs, val, choice = _seq2seq_rule(task, train, validation, test)
    else:
        raise ValueError(f"no classical baseline for finetune.task={task_name!r}")
    rows = task.prediction_rows(test, outputs, names)
    metrics = {**val, **{f"test/{k}": v for k, v in task.score(rows, names).items()}}
    majority = _score(task, test, _majority_outputs(task_name, train, test, names), names, "test")
    return BaselineResult(metrics, rows, majority, len(train), parameters, names, choice, predict)
