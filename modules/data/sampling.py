"""Label-budget sampling."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence


def stratified_subset(labels: Sequence[int], n: int, seed: int) -> list[int]:
    """Indices of ``n`` examples with classes as balanced as the pool allows.

    With only a few labels, a plain random sample can miss a class entirely; round-robin
    over shuffled per-class pools guarantees every class appears once n >= #classes.
    """
    if n >= len(labels):
        return list(range(len(labels)))
    rng = random.Random(seed)
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, y in enumerate(labels):
        by_class[y].append(i)
    pools = [by_class[c] for c in sorted(by_class)]
    for pool in pools:
        rng.shuffle(pool)
    chosen: list[int] = []
    depth = 0
    while len(chosen) < n:
        for pool in pools:
            if depth < len(pool) and len(chosen) < n:
                chosen.append(pool[depth])
        depth += 1
    return sorted(chosen)
