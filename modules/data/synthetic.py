"""A seeded synthetic corpus on which transfer learning measurably helps.

Why it exists: the default pipeline must run offline, in minutes, and still show the
central claim of transfer learning. So the data is built so that the claim holds for a
reason the user can read here, not by luck.

Design
------
The vocabulary is made of invented pseudo-words (random consonant-vowel syllables from a
seeded generator; nothing is copied from any text). It has three roles:

* **topic cue words**: ``num_topics`` disjoint sets of ``words_per_topic`` words. A cue
  word's topic is its whole "meaning".
* **neutral words**: determiners, verbs, nouns, adjectives and prepositions that carry no
  topic.
* **label names**: one pseudo-word per topic, used only for display.

Sentences follow a small grammar (``DET ADJ? NOUN VERB DET ADJ? NOUN PREP DET NOUN .``).
Each content slot (adjective or noun) is filled with a cue word or a neutral word.

* The **unlabeled corpus** is made of documents of 2-4 sentences about one latent
  topic; each content slot holds a cue word of that topic with probability ``cue_rate``
  (0.7). Cue words of one topic therefore co-occur with each other and never with
  another topic's: a language model that learns to predict the next (or masked) word
  must learn which cue words belong together.
* The **labeled task** draws a topic and puts exactly ``labeled_cues`` cue words of it in
  an otherwise neutral sentence; the label is the topic. With 4 topics x 48 cue words and
  a 64-example training subset, most cue words a test sentence contains were never seen
  with a label. A model trained from scratch can only memorise the few cues it saw; a
  pretrained model already knows from co-occurrence which topic an unseen cue word
  belongs to, and fine-tuning only has to map that knowledge to labels.

The generator is pure Python and deterministic for a given seed and sizes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from modules.data.raw import RawData

CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"


@dataclass(frozen=True)
class Lexicon:
    cues: list[list[str]]  # cues[topic] -> cue words of that topic
    determiners: list[str]
    verbs: list[str]
    nouns: list[str]
    adjectives: list[str]
    prepositions: list[str]
    label_names: list[str]


@dataclass
class SyntheticData(RawData):
    """The raw splits plus the lexicon that generated them (for tests and inspection)."""

    lexicon: Lexicon = field(default=None, repr=False)  # type: ignore[assignment]


def _pseudo_words(rng: random.Random, n: int, taken: set[str], syllables: tuple[int, int]) -> list[str]:
    words: list[str] = []
    while len(words) < n:
        k = rng.randint(*syllables)
        w = "".join(rng.choice(CONSONANTS) + rng.choice(VOWELS) for _ in range(k))
        if w not in taken:
            taken.add(w)
            words.append(w)
    return words


def make_lexicon(seed: int, num_topics: int, words_per_topic: int, neutral_words: int) -> Lexicon:
    rng = random.Random(seed)
    taken: set[str] = set()
    determiners = _pseudo_words(rng, 6, taken, (1, 1))
    prepositions = _pseudo_words(rng, 8, taken, (1, 2))
    # Neutral content words are split between verbs, nouns and adjectives.
    n_verbs = max(4, neutral_words // 4)
    n_adj = max(4, neutral_words // 4)
    n_nouns = max(4, neutral_words - n_verbs - n_adj)
    verbs = _pseudo_words(rng, n_verbs, taken, (2, 3))
    nouns = _pseudo_words(rng, n_nouns, taken, (2, 3))
    adjectives = _pseudo_words(rng, n_adj, taken, (2, 3))
    cues = [_pseudo_words(rng, words_per_topic, taken, (2, 3)) for _ in range(num_topics)]
    label_names = _pseudo_words(rng, num_topics, taken, (3, 3))
    return Lexicon(cues, determiners, verbs, nouns, adjectives, prepositions, label_names)


def sentence(rng: random.Random, lex: Lexicon, slot_topics: dict[int, int]) -> str:
    """Render the grammar; content slot ``i`` holds a cue word of topic ``slot_topics[i]``
    when ``i`` is a key, a neutral word otherwise (slots: (adjective, noun) x 3 phrases)."""
    slot = 0

    def content(neutral: list[str]) -> str:
        nonlocal slot
        word = rng.choice(lex.cues[slot_topics[slot]]) if slot in slot_topics else rng.choice(neutral)
        slot += 1
        return word

    words: list[str] = []
    for phrase in range(3):
        if phrase:
            words.append(rng.choice(lex.verbs) if phrase == 1 else rng.choice(lex.prepositions))
        words.append(rng.choice(lex.determiners))
        if rng.random() < 0.5:
            words.append(content(lex.adjectives))
        else:
            slot += 1  # keep slot numbering stable whether or not the adjective appears
        words.append(content(lex.nouns))
    return " ".join(words) + " ."


CONTENT_SLOTS = 6  # (adjective, noun) x 3 phrases


def corpus_sentence(rng: random.Random, lex: Lexicon, topic: int, cue_rate: float = 0.5) -> str:
    # Nouns (odd slots) always render, so at least one cue word is guaranteed per sentence.
    cue_slots = {i for i in range(CONTENT_SLOTS) if rng.random() < cue_rate} | {rng.choice([1, 3, 5])}
    return sentence(rng, lex, dict.fromkeys(cue_slots, topic))


def labeled_sentence(rng: random.Random, lex: Lexicon, topic: int, cues: int) -> str:
    cue_slots = set(rng.sample([1, 3, 5], k=cues))
    return sentence(rng, lex, dict.fromkeys(cue_slots, topic))


def cue_topics(lex: Lexicon) -> dict[str, int]:
    """Cue word -> its topic (cue words are unique across topics and roles)."""
    return {w: t for t, words in enumerate(lex.cues) for w in words}


def generate(
    seed: int = 1234,
    num_topics: int = 4,
    words_per_topic: int = 48,
    neutral_words: int = 160,
    corpus_documents: int = 6000,
    sentences_per_document: tuple[int, int] = (2, 4),
    labeled_train: int = 2000,
    labeled_val: int = 400,
    labeled_test: int = 1000,
    val_fraction: float = 0.05,
    labeled_cues: int = 1,
    cue_rate: float = 0.7,
) -> SyntheticData:
    """Generate the corpus and the labeled task; identical output for identical arguments."""
    lex = make_lexicon(seed, num_topics, words_per_topic, neutral_words)
    rng = random.Random(seed + 1)
    documents = []
    for _ in range(corpus_documents):
        topic = rng.randrange(num_topics)
        k = rng.randint(*sentences_per_document)
        documents.append(" ".join(corpus_sentence(rng, lex, topic, cue_rate) for _ in range(k)))
    n_val = max(1, int(round(corpus_documents * val_fraction)))
    corpus = {"train": documents[n_val:], "validation": documents[:n_val]}

    labeled: dict[str, list[tuple[str, int]]] = {}
    for split, n in (("train", labeled_train), ("validation", labeled_val), ("test", labeled_test)):
        split_rng = random.Random(f"{seed}-{split}")
        rows = []
        for i in range(n):
            topic = i % num_topics  # balanced classes
            rows.append((labeled_sentence(split_rng, lex, topic, labeled_cues), topic))
        split_rng.shuffle(rows)
        labeled[split] = rows
    return SyntheticData(corpus, labeled, lex.label_names, lexicon=lex)
