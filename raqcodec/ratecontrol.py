"""Rate control: the largest codebook size whose whole file fits a byte budget.

Why the largest: codebooks are nested (seq2seq) or near-nested, so a larger K~ never quantizes a latent
worse; among the sizes that fit, the largest gives the best reconstruction. File size grows with K~ almost
monotonically, so a binary search on the fast size estimate finds the boundary, and real encodes settle it
(stepping down until the real file fits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import entropy


class BudgetError(ValueError):
    """The requested budget is outside what the model can reach for this image."""


@dataclass(frozen=True)
class RateChoice:
    size: int
    indices: np.ndarray
    section: bytes


def estimated_bits(indices: np.ndarray, size: int) -> int:
    return entropy.estimate_section_bits(np.bincount(indices, minlength=size))


def choose_size(
    quantize: Callable[[int], np.ndarray], size_range: tuple[int, int], section_budget_bytes: int,
    describe_budget: Callable[[int, int], str],
) -> RateChoice:
    """Largest size in ``size_range`` whose index section fits ``section_budget_bytes``.

    ``quantize(size)`` returns the index array for a codebook size. ``describe_budget(lo_bytes, hi_bytes)``
    words the error when even the smallest codebook does not fit.
    """
    lo, hi = size_range
    budget_bits = section_budget_bytes * 8
    cache: dict[int, np.ndarray] = {}
    smallest_bytes: list[int] = []  # the smallest codebook's real section size, once encoded

    def indices(size: int) -> np.ndarray:
        if size not in cache:
            cache[size] = quantize(size)
        return cache[size]

    def fits(size: int) -> bool:
        return estimated_bits(indices(size), size) <= budget_bits

    def unreachable() -> BudgetError:
        if not smallest_bytes:
            smallest_bytes.append(len(entropy.encode_indices(indices(lo), lo)))
        return BudgetError(describe_budget(smallest_bytes[0], estimated_bits(indices(hi), hi) // 8))

    if not fits(lo):
        smallest_bytes.append(len(entropy.encode_indices(indices(lo), lo)))
        if smallest_bytes[0] > section_budget_bytes:
            raise unreachable()
    if fits(hi):
        best = hi
    else:
        good, bad = lo, hi  # invariant: estimate(good) fits (or lo, checked for real below), bad does not
        while bad - good > 1:
            mid = (good + bad) // 2
            good, bad = (mid, bad) if fits(mid) else (good, mid)
        best = good
    for size in range(best, lo - 1, -1):  # the estimate is close, not exact: confirm with real encodes
        section = entropy.encode_indices(indices(size), size)
        if len(section) <= section_budget_bytes:
            return RateChoice(size, indices(size), section)
    raise unreachable()
