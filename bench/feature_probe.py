"""Probe: how much does a pretrained LM's *representation* know about a real task?

    .venv/bin/python bench/feature_probe.py runs/<id>/hf_model                 # SST-2, TREC, SUBJ at 256
    .venv/bin/python bench/feature_probe.py <export dir> --datasets trec --budget 256

Fine-tuning a small model on a few hundred labels mostly reads out what pretraining put in
its hidden states, so a frozen-feature probe is a cheap (a few minutes on 2 cores) proxy for
"will this pretraining recipe beat TF-IDF?" when one fine-tuning grid costs an hour. For each
dataset and seed it draws ``--budget`` random training rows, then fits logistic regression
(C picked on validation accuracy, as the ``tfidf`` init does) on

- ``tfidf``: TF-IDF word+bigram features (the classical baseline),
- ``last``: the last non-pad token's final hidden state (what GPT-2's classification head reads),
- ``mean``: the final hidden states averaged over the text's tokens (mean pooling),
- ``mean_all``: mean pooling of every layer, concatenated,

and prints test accuracy, mean ± std over ``--seeds``. Validation: SST-2 the first 500 rows
of dev.tsv; TREC and SUBJ a fixed 10% of train. Used for the recipe section of
docs/BENCHMARKS.md ("Transfer on real data").
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from transformers import AutoModel, AutoTokenizer

REPO = Path(__file__).resolve().parents[1]


def read_tsv(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    return [r[0] for r in rows], np.array([r[1] for r in rows])


@torch.no_grad()
def features(model: torch.nn.Module, tok: object, texts: list[str]) -> dict[str, np.ndarray]:
    out: dict[str, list[torch.Tensor]] = {"last": [], "mean": [], "mean_all": []}
    for i in range(0, len(texts), 128):
        batch = tok(texts[i:i + 128], padding=True, truncation=True, max_length=128, return_tensors="pt")  # type: ignore[operator]
        hidden = model(**batch).hidden_states  # (L+1) x (B, T, H)
        mask = batch["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
        last = batch["attention_mask"].sum(1) - 1  # (B,) index of the last real token (right padding)
        out["last"].append(hidden[-1][torch.arange(len(last)), last])  # (B, H)
        out["mean"].append((hidden[-1] * mask).sum(1) / mask.sum(1))  # (B, H)
        out["mean_all"].append(torch.cat([(h * mask).sum(1) / mask.sum(1) for h in hidden[1:]], -1))  # (B, L*H)
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def fit_score(train: tuple, val: tuple, test: tuple) -> float:
    """Logistic regression with C picked on validation accuracy; test accuracy."""
    best: tuple[float, LogisticRegression] | None = None
    for c in (0.001, 0.01, 0.1, 1, 10, 100):
        clf = LogisticRegression(C=c, max_iter=3000).fit(*train)
        acc = float((clf.predict(val[0]) == val[1]).mean())
        if best is None or acc > best[0]:
            best = (acc, clf)
    assert best is not None
    return float((best[1].predict(test[0]) == test[1]).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path, help="an HF model folder with its tokenizer (a pretrain export)")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--datasets", nargs="+", default=["sst2", "trec", "subj"])
    ap.add_argument("--budget", type=int, default=256)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = ap.parse_args()
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModel.from_pretrained(args.model, output_hidden_states=True).eval()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    for ds in args.datasets:
        tr_x, tr_y = read_tsv(args.data / ds / "train.tsv")
        te_x, te_y = read_tsv(args.data / ds / "test.tsv")
        if (args.data / ds / "dev.tsv").exists():
            va_x, va_y = read_tsv(args.data / ds / "dev.tsv")
            va_x, va_y = va_x[:500], va_y[:500]
        else:
            order = np.random.default_rng(123).permutation(len(tr_x))
            cut = len(tr_x) // 10
            va_x, va_y = [tr_x[i] for i in order[:cut]], tr_y[order[:cut]]
            tr_x, tr_y = [tr_x[i] for i in order[cut:]], tr_y[order[cut:]]
        f_val, f_test = features(model, tok, va_x), features(model, tok, te_x)
        scores: dict[str, list[float]] = {}
        for seed in args.seeds:
            pick = np.random.default_rng(seed).choice(len(tr_x), args.budget, replace=False)
            sub_x, sub_y = [tr_x[i] for i in pick], tr_y[pick]
            vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(sub_x)
            scores.setdefault("tfidf", []).append(fit_score((vec.transform(sub_x), sub_y), (vec.transform(va_x), va_y),
                                                            (vec.transform(te_x), te_y)))
            f_train = features(model, tok, sub_x)
            for kind, x in f_train.items():
                scale = StandardScaler().fit(x)
                scores.setdefault(kind, []).append(fit_score((scale.transform(x), sub_y),
                                                             (scale.transform(f_val[kind]), va_y),
                                                             (scale.transform(f_test[kind]), te_y)))
        print(ds, args.budget, " ".join(f"{k}={np.mean(v):.3f}±{np.std(v):.3f}" for k, v in scores.items()), flush=True)


if __name__ == "__main__":
    main()
