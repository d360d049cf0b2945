"""Rate control's search for the largest codebook size under a budget."""

from __future__ import annotations

import math

import numpy as np
import pytest

from raqcodec.errors import BudgetError
from raqcodec.ratecontrol.sizes import _boundary, choose_size


def counting(f):
    calls: list[int] = []

    def wrapped(size: int) -> int:
        calls.append(size)
        return f(size)

    return wrapped, calls


@pytest.mark.parametrize("budget", [100, 333, 517, 900, 1399])
@pytest.mark.parametrize("shape", ["log", "linear", "sqrt"])
def test_boundary_finds_the_largest_fitting_size_in_few_probes(budget: int, shape: str) -> None:
    bits = {
        "log": lambda k: int(140 * math.log2(k)),
        "linear": lambda k: k + 50,
        "sqrt": lambda k: int(45 * math.sqrt(k)),
    }[shape]
    excess, calls = counting(lambda k: bits(k) - budget)
    lo, hi = 2, 1024
    if bits(lo) > budget or bits(hi) <= budget:
        pytest.skip("budget outside the range")
    found = _boundary(lo, hi, excess)
    expected = max(k for k in range(lo, hi + 1) if bits(k) <= budget)
    assert found == expected
    assert len(calls) <= 12  # a bisection over 2..1024 takes 10; interpolation usually far fewer


def test_boundary_probes_log_shaped_costs_quickly() -> None:
    excess, calls = counting(lambda k: int(1000 * math.log2(k)) - 7300)
    assert _boundary(2, 1024, excess) == 157
    assert len(calls) <= 6


def test_choose_size_confirms_with_real_sizes_and_names_the_range() -> None:
    def quantize(size: int) -> np.ndarray:
        return np.full(10, size)

    def encode(indices: np.ndarray, size: int) -> bytes:
        return bytes(size // 8 + 1)

    def estimate(size: int) -> int:
        return size  # under-estimates the real size (8 * (size // 8 + 1)) a little

    choice = choose_size(quantize, (2, 1024), 40, lambda a, b: f"{a}..{b}", encode, estimate)
    assert len(choice.section) <= 40 and choice.size == 319
    with pytest.raises(BudgetError, match="1..128"):
        choose_size(quantize, (2, 1024), 0, lambda a, b: f"{a}..{b}", encode, estimate)


def test_choose_size_can_leave_the_largest_size_uncoded() -> None:
    """Where the largest size fits by its estimate, a caller that compares it with other candidates first
    gets it uncoded (``settle=False``): no real encode, and no estimate of any other size."""
    encoded: list[int] = []
    estimated: list[int] = []

    def encode(indices: np.ndarray, size: int) -> bytes:
        encoded.append(size)
        return bytes(size // 8 + 1)

    def estimate(size: int) -> int:
        estimated.append(size)
        return size

    def quantize(size: int) -> np.ndarray:
        return np.full(10, size)

    choice = choose_size(quantize, (2, 1024), 200, lambda a, b: f"{a}..{b}", encode, estimate, settle=False)
    assert (choice.size, choice.section, encoded, estimated) == (1024, None, [], [1024])
    settled = choose_size(quantize, (2, 1024), 200, lambda a, b: f"{a}..{b}", encode, estimate)
    assert settled.size == 1024 and settled.section == bytes(129) and encoded == [1024]
    # below the largest size, the search settles with real encodes whatever ``settle`` says
    below = choose_size(quantize, (2, 1024), 40, lambda a, b: f"{a}..{b}", encode, estimate, settle=False)
    assert below.section is not None and len(below.section) <= 40 and below.size == 319


@pytest.mark.parametrize("bias", [0.7, 0.85, 1.0, 1.15])
@pytest.mark.parametrize("budget", [120, 250, 700])
def test_choose_size_settles_a_biased_estimate_in_a_few_real_encodes(bias: float, budget: int) -> None:
    """An estimate off by up to 30% (subsampled positions) costs a handful of real encodes, not one per
    size between its boundary and the real one, and the choice is still the largest size that fits
    below the first guess."""
    real = {k: int(90 * math.log2(k)) + k // 20 for k in range(2, 1025)}  # bytes, increasing

    def quantize(size: int) -> np.ndarray:
        return np.full(4, size)

    encoded: list[int] = []

    def encode(indices: np.ndarray, size: int) -> bytes:
        encoded.append(size)
        return bytes(real[size])

    def estimate(size: int) -> int:
        return int(8 * real[size] * bias)

    choice = choose_size(quantize, (2, 1024), budget, lambda a, b: f"{a}..{b}", encode, estimate)
    fitting = [k for k in real if real[k] <= budget]
    first_guess = max(k for k in real if int(8 * real[k] * bias) <= 8 * budget)
    assert choice.size == max(k for k in fitting if k <= first_guess)
    assert len(choice.section) <= budget
    assert len(encoded) <= 5, encoded


def test_a_tied_candidate_wins_only_by_filling_more_of_the_budget() -> None:
    from raqcodec.ratecontrol.search import TIE_RATIO, _closer_or_fuller

    assert _closer_or_fuller(0.99, 100, 1.0, 200)  # closer wins, smaller or not
    assert _closer_or_fuller(1.0, 201, 1.0, 200)  # a tie goes to the fuller file
    assert _closer_or_fuller(1.0 * TIE_RATIO, 300, 1.0, 200)
    assert not _closer_or_fuller(1.0, 200, 1.0, 200)  # the incumbent stands on a full tie
    assert not _closer_or_fuller(1.0, 150, 1.0, 200)
    assert not _closer_or_fuller(1.01 * TIE_RATIO, 300, 1.0, 200)  # worse by more than a tie: bytes do not buy it
    assert 10 * math.log10(TIE_RATIO) == pytest.approx(0.01)
