"""Encoding to a quality target (``--psnr``): the smallest file whose decoded RGB PSNR reaches it.

The budget search already finds the closest image that fits a budget; a quality target is a search over
budgets on top of it. Each try encodes at a budget and decodes the file with the exact decoder (so the
PSNR is the one every decoder reproduces). PSNR grows with log(bpp) smoothly enough that the next budget
is interpolated in log bpp between the tries that bracket the target (extrapolated with the measured
slope, or SLOPE_GUESS dB per doubling, before they do). The search stops at the first try within
TOLERANCE dB above the target, and otherwise keeps the smallest file that reaches it, after a closer
search inside the last bracket where one is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import BudgetError

TOLERANCE = 0.3  # dB above the target at which a try is taken at once
MAX_TRIES = 10
CLOSER_TRIES = 3  # tries of a closer search inside the last bracket (``fit_psnr``'s ``closer``)
SLOPE_GUESS = 4.0  # dB per doubling of the rate (Kodak, 0.1-1 bpp: 3 to 6)
START_BPP = 0.3
LOWEST_BPP = 0.005  # budgets below what any model reaches; tries there fail with BudgetError
HIGHEST_BPP = 24.0  # a budget no model uses up: the best the model can do
NARROWEST = 1.01  # budgets closer than this factor are not worth another try


@dataclass(frozen=True)
class QualityTry:
    budget: float  # the --bpp the file was encoded at
    data: bytes
    psnr: float


def fit_psnr(
    encode_at: Callable[[float], tuple[bytes, float]],
    target: float,
    describe: Callable[[float, float], str],
    closer: Callable[[float], tuple[bytes, float]] | None = None,
) -> QualityTry:
    """The smallest file found whose PSNR reaches ``target``. ``encode_at(bpp)`` returns (file, PSNR)
    and raises BudgetError for a budget below the model's reach; ``describe(lowest, highest)`` words
    the error (a BudgetError) when the target is above the best PSNR the model reaches, naming the range.

    ``closer(bpp)``: a closer (slower) search, like ``encode_at``. A fast search's quality can step over
    the target between two neighbouring budgets (effort 2 on kodim02: 26.89 dB at 0.22 bpp, 27.7 above:
    the base stage's best jumps from one size to another); when the file found is more than TOLERANCE
    above the target, up to CLOSER_TRIES tries of ``closer`` from the largest budget that fell short down
    look for a smaller one."""
    tries: list[QualityTry] = []
    too_low: list[float] = []  # budgets the model cannot reach at all

    def attempt(bpp: float) -> QualityTry | None:
        try:
            data, psnr = encode_at(bpp)
        except BudgetError:
            too_low.append(bpp)
            return None
        tries.append(QualityTry(bpp, data, psnr))
        return tries[-1]

    def reached() -> list[QualityTry]:
        return sorted((t for t in tries if t.psnr >= target), key=lambda t: len(t.data))

    bpp: float | None = START_BPP
    for _ in range(MAX_TRIES):
        if bpp is None:
            break
        got = attempt(bpp)
        if got is not None and 0 <= got.psnr - target <= TOLERANCE:
            return got
        bpp = _next_budget(tries, too_low, target)
    best = reached()
    if best and closer is not None and best[0].psnr - target > TOLERANCE:
        below = [t.budget for t in tries if t.psnr < target and t.budget < best[0].budget]
        if below:
            return _closer_search(closer, max(below), best[0], target)
    if best:
        return best[0]
    best_psnr = attempt(HIGHEST_BPP)
    if best_psnr is not None and best_psnr.psnr >= target:
        return best_psnr
    lowest = min((t.psnr for t in tries), default=math.nan)
    highest = max((t.psnr for t in tries), default=math.nan)
    raise BudgetError(describe(lowest, highest))


def _closer_search(
    encode_at: Callable[[float], tuple[bytes, float]], start: float, found: QualityTry, target: float
) -> QualityTry:
    """The smallest file reaching ``target`` among ``found`` and up to CLOSER_TRIES tries of ``encode_at``
    at smaller budgets, from ``start`` (the largest budget the faster search fell short at) down."""
    tries: list[QualityTry] = []
    too_low: list[float] = []
    bpp: float | None = start
    for _ in range(CLOSER_TRIES):
        if bpp is None or bpp >= found.budget:
            break
        try:
            data, psnr = encode_at(bpp)
        except BudgetError:
            too_low.append(bpp)
        else:
            tries.append(QualityTry(bpp, data, psnr))
            if 0 <= psnr - target <= TOLERANCE:
                break
        bpp = _next_budget(tries, too_low, target)
    return min([found, *(t for t in tries if t.psnr >= target)], key=lambda t: len(t.data))


def _next_budget(tries: list[QualityTry], too_low: list[float], target: float) -> float | None:
    """The next budget to try, or None when the bracket is as narrow as it is worth."""
    below = [t for t in tries if t.psnr < target]
    above = [t for t in tries if t.psnr >= target]
    floor = max([LOWEST_BPP, *too_low])
    lo = max(below, key=lambda t: t.budget, default=None)
    hi = min(above, key=lambda t: t.budget, default=None)
    if lo is not None and hi is not None:
        if hi.budget / lo.budget <= NARROWEST:
            return None
        share = (target - lo.psnr) / max(hi.psnr - lo.psnr, 1e-6)
        guess = math.exp(math.log(lo.budget) + share * (math.log(hi.budget) - math.log(lo.budget)))
        margin = (hi.budget / lo.budget) ** 0.1  # keep inside the bracket: interpolation can stall at an end
        return min(max(guess, lo.budget * margin), hi.budget / margin)
    known = sorted(tries, key=lambda t: t.budget)
    slope = SLOPE_GUESS
    if len(known) >= 2:
        a, b = known[0], known[-1]
        if b.budget > a.budget and b.psnr > a.psnr:
            slope = max(1.0, (b.psnr - a.psnr) / math.log2(b.budget / a.budget))
    if hi is None and lo is not None:  # every try below the target: go up
        if lo.budget >= HIGHEST_BPP:
            return None
        return min(HIGHEST_BPP, lo.budget * 2 ** min(4.0, (target - lo.psnr) / slope + 0.05))
    if hi is not None:  # every try above: go down, not below what the model reaches
        if hi.budget <= floor * NARROWEST:
            return None
        return max(floor * NARROWEST, hi.budget * 2 ** -min(4.0, (hi.psnr - target) / slope))
    # no try encoded yet: the budgets tried were all below the model's reach
    return min(HIGHEST_BPP, max(too_low) * 4) if too_low else START_BPP
