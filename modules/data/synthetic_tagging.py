"""Synthetic tagging (NER-style) rows on the synthetic corpus's lexicon.

Why it shows transfer: the tag of a word is the topic of the cue word it is, and which
topic a cue word belongs to is exactly what pretraining on the corpus teaches (cue words
of one topic co-occur, never with another's; see modules/data/synthetic.py). A sentence
follows the corpus grammar (``DET ADJ? NOUN VERB DET ADJ? NOUN PREP DET ADJ? NOUN .``) but
mixes topics: each of its 1-2 entities is a noun phrase about its own topic, so the
sentence as a whole says nothing about a word's tag; only the word itself does.

An entity is a cue noun, optionally preceded by a cue adjective of the same topic
(``B-<TOPIC> I-<TOPIC>``); a neutral adjective before a cue noun stays ``O``. Every tag
is therefore decidable from the word and its left neighbour, so a causal model, which
sees only the left context, can tag as well as a bidirectional one.

With 4 topics x 48 cue words and 64 labeled sentences (~120 cue-word occurrences), about
half the cue words a test sentence holds were never seen with a tag: a model from scratch
can tag only those it saw, a pretrained one knows the rest from co-occurrence.
"""

from __future__ import annotations

import random

from modules.data.synthetic import Lexicon

PHRASES = 3  # noun phrases per sentence (the corpus grammar)
ADJECTIVE_RATE = 0.5  # an adjective precedes the noun
CUE_ADJECTIVE_RATE = 0.5  # in an entity with an adjective: it is a cue of the entity's topic (B I)


def tag_names(lexicon: Lexicon) -> list[str]:
    """``O``, then ``B-``/``I-`` per topic, the topic names upper-cased (e.g. ``B-KASOPI``)."""
    return ["O"] + [f"{prefix}-{name.upper()}" for name in lexicon.label_names for prefix in ("B", "I")]


class _BalancedTopics:
    """Topics in shuffled rounds of all topics: over a split, entity types are balanced to ±1."""

    def __init__(self, rng: random.Random, num_topics: int) -> None:
        self.rng, self.num_topics, self.queue = rng, num_topics, []  # type: ignore[var-annotated]

    def next(self) -> int:
        if not self.queue:
            self.queue = list(range(self.num_topics))
            self.rng.shuffle(self.queue)
        return self.queue.pop()


def tagged_sentence(rng: random.Random, lex: Lexicon, topics: dict[int, int]) -> tuple[list[str], list[int]]:
    """One sentence; phrase ``p`` is an entity of topic ``topics[p]`` when present.

    Tag ids follow :func:`tag_names`: 0 is ``O``, ``1 + 2t`` is ``B-`` and ``2 + 2t`` is ``I-`` of topic t.
    """
    words: list[str] = []
    tags: list[int] = []
    for phrase in range(PHRASES):
        if phrase:
            words.append(rng.choice(lex.verbs) if phrase == 1 else rng.choice(lex.prepositions))
            tags.append(0)
        words.append(rng.choice(lex.determiners))
        tags.append(0)
        topic = topics.get(phrase)
        has_adjective = rng.random() < ADJECTIVE_RATE
        if topic is None:
            if has_adjective:
                words.append(rng.choice(lex.adjectives))
                tags.append(0)
            words.append(rng.choice(lex.nouns))
            tags.append(0)
            continue
        begin, inside = 1 + 2 * topic, 2 + 2 * topic
        if has_adjective and rng.random() < CUE_ADJECTIVE_RATE:
            words.append(rng.choice(lex.cues[topic]))
            tags.append(begin)
            # a different cue word of the same topic, so a span never repeats a word
            words.append(rng.choice([w for w in lex.cues[topic] if w != words[-1]] or lex.cues[topic]))
            tags.append(inside)
            continue
        if has_adjective:
            words.append(rng.choice(lex.adjectives))
            tags.append(0)
        words.append(rng.choice(lex.cues[topic]))
        tags.append(begin)
    words.append(".")
    tags.append(0)
    return words, tags


def generate_tagging(lexicon: Lexicon, seed: int,
                     sizes: dict[str, int]) -> tuple[dict[str, list[tuple[list[str], list[int]]]], list[str]]:
    """(words, tag ids) rows per split (``train``/``validation``/``test``) and the tag names.

    Each sentence has 1 or 2 entities in random phrases; their topics come from balanced
    shuffled rounds, so two entities of a sentence are often of different types. Identical
    output for identical arguments (each split has its own seeded generator).
    """
    num_topics = len(lexicon.cues)
    rows: dict[str, list[tuple[list[str], list[int]]]] = {}
    for split, n in sizes.items():
        rng = random.Random(f"{seed}-tagging-{split}")
        topics = _BalancedTopics(rng, num_topics)
        out = []
        for _ in range(n):
            phrases = rng.sample(range(PHRASES), k=rng.choice((1, 2)))
            out.append(tagged_sentence(rng, lexicon, {p: topics.next() for p in sorted(phrases)}))
        rows[split] = out
    return rows, tag_names(lexicon)
