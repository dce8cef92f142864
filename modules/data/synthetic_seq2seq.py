"""A synthetic text-to-text task on which pretraining on the synthetic corpus helps.

Why this design: the synthetic corpus (``modules/data/synthetic.py``) teaches an LM one
thing, namely which topic each invented cue word belongs to (cue words of a topic co-occur,
never with another topic's). So the target asks exactly that, for every cue word of the
source, in order:

* **source**: a sentence of the labeled-task grammar whose noun slots hold one or two cue
  words (``CUES_PER_ROW``), each of an independently drawn topic (a sentence can mention
  two topics), all other content slots neutral words;
* **target**: the *head word* of each cue word's topic, in source order, joined by
  spaces: a topic is named by its first cue word (``lexicon.cues[t][0]``), e.g.
  ``"kamobi lutesa"`` for a cue of topic 0 then one of topic 2.

Why head words and not ``lexicon.label_names``: label names never occur in the corpus,
so a pretrained LM head gives them near-zero probability and must first unlearn its prior
(measured: val/loss starts at 10 and the 64-pair fine-tune ran out of epochs). A head
word is a word the LM already predicts after any cue word of its topic, which is exactly
the knowledge the task asks for.

The target is a function of the source and the lexicon alone (see :func:`target_for`).
With 4 topics x 48 cue words and a 64-pair training subset (about 96 cue draws), most cue
words of a test sentence never occur in a training pair: a model tuned from scratch can
learn the output format and the topics of the few cue words it saw, while a pretrained
model already groups unseen cue words by topic and only has to learn to name the groups.

Pure Python, deterministic for a seed (one ``random.Random`` per split).
"""

from __future__ import annotations

import random

from modules.data.synthetic import Lexicon, cue_topics, sentence

CUES_PER_ROW = (1, 2)  # how many noun slots of a source sentence hold a cue word
NOUN_SLOTS = (1, 3, 5)  # content slots are (adjective, noun) x 3 phrases; nouns always render


def target_for(source: str, lex: Lexicon) -> str:
    """The target a source sentence must map to: its cue words' topic head words, in order."""
    topic_of = cue_topics(lex)
    return " ".join(head_word(lex, topic_of[w]) for w in source.split() if w in topic_of)


def head_word(lex: Lexicon, topic: int) -> str:
    """The word that names ``topic`` in targets: its first cue word (a corpus word)."""
    return lex.cues[topic][0]


def generate_pairs(lexicon: Lexicon, seed: int, sizes: dict[str, int]) -> dict[str, list[tuple[str, str]]]:
    """(source, target) rows for each split in ``sizes`` ("train"/"validation"/"test")."""
    out: dict[str, list[tuple[str, str]]] = {}
    n_topics = len(lexicon.cues)
    for split, n in sizes.items():
        rng = random.Random(f"{seed}-seq2seq-{split}")
        rows: list[tuple[str, str]] = []
        for _ in range(n):
            slots = sorted(rng.sample(NOUN_SLOTS, k=rng.choice(CUES_PER_ROW)))
            topics = {s: rng.randrange(n_topics) for s in slots}  # noun slots only: adjectives stay neutral
            rows.append((sentence(rng, lexicon, topics), " ".join(head_word(lexicon, topics[s]) for s in slots)))
        out[split] = rows
    return out
