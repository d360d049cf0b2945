"""Rate control: the largest codebook size whose whole file fits a byte budget.

Why the largest: codebooks are nested (seq2seq) or near-nested, so a larger K~ never quantizes a latent
worse; among the sizes that fit, the largest gives the best reconstruction. File size grows with K~ almost
monotonically, so a search on the size estimate (interpolating in log K~) finds the boundary, and real encodes settle it
(a few real encodes, the estimate recalibrated by each).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import BudgetError


@dataclass(frozen=True)
class RateChoice:
    size: int
    indices: np.ndarray
    section: bytes | None  # None: the largest size, which fits by its estimate and is not coded yet (``settle``)


# Real encodes to settle the boundary the estimate found (each one is a context-model pass or more).
MAX_CONFIRM_ENCODES = 6

SectionCoder = Callable[[np.ndarray, int], bytes]  # (indices, size) -> index section
SizeEstimate = Callable[[int], int]  # size -> estimated section bits of that size's nearest-neighbour grid


def choose_size(
    quantize: Callable[[int], np.ndarray],
    size_range: tuple[int, int],
    section_budget_bytes: int,
    describe_budget: Callable[[int, int], str],
    encode: SectionCoder,
    estimated_bits: SizeEstimate,
    tolerance: float = 1.0,
    settle: bool = True,
) -> RateChoice:
    """Largest size in ``size_range`` whose index section fits ``section_budget_bytes``.

    ``quantize(size)`` returns the index array for a codebook size; ``encode(indices, size)`` is the index
    coder's, ``estimated_bits(size)`` its estimate for ``quantize(size)``. ``describe_budget(lo_bytes,
    hi_bytes)`` words the error when even the smallest codebook does not fit. ``tolerance``: a fitting
    size within this factor of the smallest known (or estimated) not to fit is taken (1: the largest).
    ``settle`` False: when the largest size fits by its estimate it is returned uncoded (``section``
    None), for a caller that compares it with other candidates first and codes only the winner (a real
    encode at the largest size is the costliest pass of rate control).
    """
    lo, hi = size_range
    budget_bits = section_budget_bytes * 8
    cache: dict[int, np.ndarray] = {}
    estimates: dict[int, int] = {}
    smallest_bytes: list[int] = []  # the smallest codebook's real section size, once encoded

    def indices(size: int) -> np.ndarray:
        if size not in cache:
            cache[size] = quantize(size)
        return cache[size]

    def excess(size: int) -> int:
        """Estimated bits over the budget (<= 0: fits)."""
        if size not in estimates:
            estimates[size] = estimated_bits(size)
        return estimates[size] - budget_bits

    def unreachable() -> BudgetError:
        if not smallest_bytes:
            smallest_bytes.append(len(encode(indices(lo), lo)))
        return BudgetError(describe_budget(smallest_bytes[0], (excess(hi) + budget_bits) // 8))

    if excess(hi) <= 0:
        if not settle:
            return RateChoice(hi, indices(hi), None)
        guess = hi
    else:
        if excess(lo) > 0:
            smallest_bytes.append(len(encode(indices(lo), lo)))
            if smallest_bytes[0] > section_budget_bytes:
                raise unreachable()
        guess = _boundary(lo, hi, excess, tolerance)
    # The estimate is close, not exact: real encodes settle it. When the guess does not fit, the next is
    # the estimate's boundary below it scaled by that encode's real/estimated ratio (an estimate on
    # subsampled positions can be 10-20% off, which used to cost one encode per size stepped down).
    fitting: RateChoice | None = None
    failing = guess + 1  # smallest size known (or, above the guess, estimated) not to fit
    for _ in range(MAX_CONFIRM_ENCODES):
        section = encode(indices(guess), guess)
        if len(section) <= section_budget_bytes:
            fitting = RateChoice(guess, indices(guess), section)
        else:
            failing = guess
        floor = fitting.size if fitting is not None else lo - 1
        if failing - floor <= 1 or (fitting is not None and failing <= floor * tolerance):
            break
        if fitting is not None and fitting.size == guess:
            guess = round(math.sqrt(floor * failing))  # the boundary lies between: halve it in log size
        else:
            scale = 8 * len(section) / max(1, excess(guess) + budget_bits)

            def corrected(size: int, scale: float = scale) -> int:
                return round(scale * (excess(size) + budget_bits)) - budget_bits

            guess = _boundary(max(floor, lo), failing, corrected, tolerance) if corrected(max(floor, lo)) <= 0 else lo
        guess = min(max(guess, floor + 1), failing - 1)
    else:  # out of tries: step down from the failing size (sizes below the last fitting one never win)
        for size in range(failing - 1, (fitting.size if fitting else lo - 1), -1):
            section = encode(indices(size), size)
            if len(section) <= section_budget_bytes:
                return RateChoice(size, indices(size), section)
    if fitting is None:
        raise unreachable()
    return fitting


def _boundary(good: int, bad: int, excess: Callable[[int], int], tolerance: float = 1.0) -> int:
    """Largest size between ``good`` (treated as fitting) and ``bad`` (excess > 0) whose excess is <= 0,
    or one within ``tolerance`` of the smallest found not to.

    Bits grow smoothly with log K~, so the next probe interpolates the excess linearly in log size
    (Illinois variant of regula falsi: an end kept twice has its excess halved, which keeps the bracket
    shrinking from both sides). A handful of estimates instead of a bisection's ~10 matters when each
    estimate runs the context model.
    """
    f_good, f_bad = float(min(excess(good), 0)), float(excess(bad))
    kept = 0  # +1: the good end was kept last time, -1: the bad end
    while bad - good > 1 and bad > good * tolerance:
        share = -f_good / (f_bad - f_good)  # f_good <= 0 < f_bad
        guess = math.exp(math.log(good) + share * (math.log(bad) - math.log(good)))
        mid = min(max(round(guess), good + 1), bad - 1)
        f_mid = float(excess(mid))
        if f_mid <= 0:
            good, f_good = mid, f_mid
            if kept == -1:
                f_bad /= 2
            kept = -1
        else:
            bad, f_bad = mid, f_mid
            if kept == 1:
                f_good /= 2
            kept = 1
    return good
