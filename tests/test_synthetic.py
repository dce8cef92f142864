"""The synthetic task must be deterministic and built so that transfer can help."""

from __future__ import annotations

from modules.data.sampling import stratified_subset
from modules.data.synthetic import generate

SMALL = dict(corpus_documents=300, labeled_train=400, labeled_val=40, labeled_test=200)


def _topic_of(data) -> dict[str, int]:
    return {w: t for t, words in enumerate(data.lexicon.cues) for w in words}


def test_same_seed_same_data_other_seed_other_data() -> None:
    a, b, c = generate(seed=7, **SMALL), generate(seed=7, **SMALL), generate(seed=8, **SMALL)
    assert a.corpus == b.corpus and a.labeled == b.labeled and a.label_names == b.label_names
    assert a.corpus != c.corpus and a.labeled != c.labeled


def test_corpus_documents_stay_on_one_topic() -> None:
    data = generate(seed=1, **SMALL)
    topic_of = _topic_of(data)
    for doc in data.corpus["train"]:
        topics = {topic_of[w] for w in doc.split() if w in topic_of}
        assert len(topics) == 1, doc


def test_labels_follow_the_cue_words_and_are_balanced() -> None:
    data = generate(seed=1, num_topics=3, labeled_cues=1, **SMALL)
    topic_of = _topic_of(data)
    for text, label in data.labeled["test"]:
        cues = [topic_of[w] for w in text.split() if w in topic_of]
        assert cues == [label], text
    counts = [sum(1 for _, y in data.labeled["train"] if y == k) for k in range(3)]
    assert max(counts) - min(counts) <= 1


def test_most_test_cues_are_unseen_in_a_small_labeled_subset() -> None:
    """The premise of the default experiment: 64 labels cannot cover the cue vocabulary."""
    data = generate(seed=1234, corpus_documents=10, labeled_train=2000, labeled_val=10, labeled_test=1000)
    topic_of = _topic_of(data)
    train = data.labeled["train"]
    subset = [train[i] for i in stratified_subset([y for _, y in train], 64, seed=0)]
    seen = {w for text, _ in subset for w in text.split() if w in topic_of}
    test_cues = [w for text, _ in data.labeled["test"] for w in text.split() if w in topic_of]
    unseen = sum(w not in seen for w in test_cues) / len(test_cues)
    assert unseen > 0.6


def test_stratified_subset_covers_every_class() -> None:
    labels = [0] * 90 + [1] * 7 + [2] * 3
    idx = stratified_subset(labels, 6, seed=0)
    assert len(idx) == 6 and len(set(idx)) == 6
    assert {labels[i] for i in idx} == {0, 1, 2}
    assert idx == stratified_subset(labels, 6, seed=0)
    assert stratified_subset(labels, 500, seed=0) == list(range(100))
