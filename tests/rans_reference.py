"""docs/FORMAT.md's rANS encoder in plain Python integers: the independent check of what constriction writes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def rans_encode(symbols: Sequence[int], tables: Sequence[np.ndarray], precision: int) -> list[int]:
    """Words of the rANS code of ``symbols``, symbol i under integer frequencies ``tables[i]`` (summing to
    2**precision), in the order constriction's ``get_compressed`` returns them."""
    shift = 24 - precision
    state, words = 0, []
    for s, freqs in zip(reversed(list(symbols)), reversed(list(tables))):
        f, c = int(freqs[s]) << shift, int(np.sum(freqs[:s], dtype=np.int64)) << shift
        if state >> 40 >= f:
            words.append(state & 0xFFFFFFFF)
            state >>= 32
        state = (state // f) << 24 | (c + state % f)
    while state:
        words.append(state & 0xFFFFFFFF)
        state >>= 32
    return words
