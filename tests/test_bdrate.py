"""Bjontegaard deltas: exact cases with known answers, and agreement with an independent implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from raqcodec.eval.bdrate import bd_psnr, bd_rate, overlap, pchip_integral, rd_curve

# Realistic 4-point curves (bpp, PSNR dB) with different rate ranges: a JPEG-like anchor and a learned codec.
ANCHOR = [(0.21, 26.3), (0.38, 29.1), (0.62, 31.4), (1.05, 34.0)]
TEST = [(0.10, 24.2), (0.15, 25.8), (0.21, 27.1), (0.31, 28.9)]


def test_identical_curves_give_zero() -> None:
    assert bd_rate(ANCHOR, ANCHOR) == pytest.approx(0.0, abs=1e-12)
    assert bd_psnr(ANCHOR, ANCHOR) == pytest.approx(0.0, abs=1e-12)


def test_scaled_rates_give_exact_percentage() -> None:
    # log(0.8 r) = log r + log 0.8: the interpolant shifts by a constant, so the answer is exactly -20%.
    scaled = [(0.8 * r, q) for r, q in ANCHOR]
    assert abs(bd_rate(ANCHOR, scaled) - (-20.0)) < 1e-9
    assert abs(bd_rate(TEST, [(0.8 * r, q) for r, q in TEST]) - (-20.0)) < 1e-9


def test_quality_shift_gives_bd_psnr() -> None:
    shifted = [(r, q + 1.0) for r, q in ANCHOR]
    assert bd_psnr(ANCHOR, shifted) == pytest.approx(1.0, abs=1e-12)
    assert bd_psnr(shifted, ANCHOR) == pytest.approx(-1.0, abs=1e-12)


def test_swapping_anchor_and_test_inverts() -> None:
    # The same mean log-rate gap with the other sign: (1 + a)(1 + b) = 1 for the two percentages.
    forward, backward = bd_rate(ANCHOR, TEST) / 100, bd_rate(TEST, ANCHOR) / 100
    assert (1 + forward) * (1 + backward) == pytest.approx(1.0, rel=1e-12)
    assert bd_psnr(ANCHOR, TEST) == pytest.approx(-bd_psnr(TEST, ANCHOR), abs=1e-12)


def test_order_duplicates_and_dominated_points_are_handled() -> None:
    messy = [
        ANCHOR[2],
        ANCHOR[0],
        ANCHOR[3],
        ANCHOR[1],
        (0.62, 30.0),  # same rate, worse quality
        (0.70, 31.0),
    ]  # more bits than (0.62, 31.4) for less quality
    assert bd_rate(messy, TEST) == pytest.approx(bd_rate(ANCHOR, TEST), abs=1e-12)
    rates, quals = rd_curve(messy)
    assert np.all(np.diff(rates) > 0) and np.all(np.diff(quals) > 0)


@pytest.mark.parametrize(
    "curve",
    [
        [(0.2, 30.0)],
        [(0.2, 30.0), (0.3, 30.0)],
        [(0.3, 31.0), (0.4, 30.0)],
        [(0.0, 20.0), (0.2, 30.0)],
        [(0.1, math.nan), (0.2, 30.0)],
    ],
)
def test_unusable_curves_raise(curve: list[tuple[float, float]]) -> None:
    with pytest.raises(ValueError):
        bd_rate(ANCHOR, curve)


def test_no_overlap_raises() -> None:
    far = [(2.0, 40.0), (3.0, 44.0)]
    with pytest.raises(ValueError, match="do not overlap"):
        bd_rate(ANCHOR, far)
    with pytest.raises(ValueError, match="do not overlap"):
        bd_psnr(ANCHOR, far)


def test_overlap_interval() -> None:
    assert overlap(ANCHOR, TEST) == (26.3, 28.9)
    assert overlap(ANCHOR, TEST, axis="rate") == (0.21, 0.31)


def test_integral_is_exact_for_cubics() -> None:
    # PCHIP reproduces a straight line, so its integral over part of the range is the trapezoid.
    x = np.array([0.0, 0.5, 2.0, 3.0])
    y = 2.0 * x + 1.0
    assert pchip_integral(x, y, 0.25, 2.5) == pytest.approx((2.5**2 - 0.25**2) + (2.5 - 0.25), abs=1e-12)


@pytest.mark.parametrize(
    "anchor,test",
    [
        (ANCHOR, TEST),
        (TEST, ANCHOR),
        (ANCHOR, [(0.25, 27.0), (0.4, 29.5), (0.5, 30.1), (0.9, 33.9)]),
        (
            [(0.1, 20.0), (0.2, 28.0), (0.25, 28.5), (0.8, 29.0), (1.5, 36.0)],
            [(0.15, 22.0), (0.3, 27.0), (0.31, 30.0), (0.9, 33.0)],
        ),
    ],
)
def test_matches_bjontegaard_package(anchor: list, test: list) -> None:
    bj = pytest.importorskip("bjontegaard")
    (ra, qa), (rt, qt) = zip(*anchor), zip(*test)
    opts = {"method": "pchip", "require_matching_points": False, "min_overlap": 0}
    assert bd_rate(anchor, test) == pytest.approx(bj.bd_rate(ra, qa, rt, qt, **opts), abs=1e-9)
    assert bd_psnr(anchor, test) == pytest.approx(bj.bd_psnr(ra, qa, rt, qt, **opts), abs=1e-9)
