"""Bjontegaard deltas between two rate-distortion curves: BD-rate (percent) and BD-PSNR (dB).

The standard method (VCEG-M33, with the piecewise cubic Hermite interpolation of its later update that
JVET's tools use too): each curve is interpolated through its points with monotone PCHIP, the curves are
integrated exactly over the interval where both are defined, and the mean gap between them is reported.

* BD-rate: log(rate) as a function of quality; ``(exp(mean gap) - 1) * 100``, the average change in rate
  at equal quality (negative: the test codec needs fewer bits).
* BD-PSNR: quality as a function of log(rate); the mean gap in dB at equal rate (positive: better).

Plain numpy (no scipy): PCHIP is a few lines, and its integral is exact for a piecewise cubic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

Point = tuple[float, float]  # (bpp, quality in dB)


def rd_curve(points: Iterable[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """The usable part of a curve as (rates, qualities), both strictly increasing.

    Points may come in any order. A point that another one matches or beats on both axes (no lower rate
    and no lower quality) is dropped: it is not on the rate-distortion curve, and keeping it would make
    either direction of the interpolation ill-defined (repeated x, or a curve that turns back).
    """
    arr = np.asarray([tuple(p) for p in points], dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2 or len(arr) == 0:
        raise ValueError("a curve is a non-empty list of (rate, quality) pairs")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"a curve has a non-finite rate or quality: {arr.tolist()}")
    if np.any(arr[:, 0] <= 0):
        raise ValueError(f"rates must be positive (their logarithm is interpolated): {arr[:, 0].tolist()}")
    # Rate ascending and, at equal rate, the best quality first: then a point is on the curve exactly
    # when it beats every quality before it, and the rates kept are strictly increasing too.
    order = np.lexsort((-arr[:, 1], arr[:, 0]))
    rates: list[float] = []
    quals: list[float] = []
    for rate, qual in arr[order]:
        if not quals or qual > quals[-1]:
            rates.append(float(rate))
            quals.append(float(qual))
    if len(rates) < 2:
        raise ValueError(f"a curve needs at least 2 points with rising rate and quality, got {arr.tolist()}")
    return np.asarray(rates), np.asarray(quals)


def pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Node derivatives of the monotone piecewise cubic Hermite interpolant (Fritsch-Carlson).

    Interior: the weighted harmonic mean of the neighbouring secant slopes, zero at a local extremum, so
    the interpolant never overshoots the data. Ends: the one-sided three-point formula, limited to keep
    the same shape-preserving property. This is the PCHIP of MATLAB and of the BD tools that follow it.
    """
    h = np.diff(x)
    delta = np.diff(y) / h
    n = len(x)
    d = np.zeros(n)
    if n == 2:  # one piece: the straight line
        d[:] = delta[0]
        return d
    for k in range(1, n - 1):
        a, b = delta[k - 1], delta[k]
        if a * b > 0:  # same sign, neither zero
            w1 = 2 * h[k] + h[k - 1]
            w2 = h[k] + 2 * h[k - 1]
            d[k] = (w1 + w2) / (w1 / a + w2 / b)
    d[0] = _end_slope(h[0], h[1], delta[0], delta[1])
    d[-1] = _end_slope(h[-1], h[-2], delta[-1], delta[-2])
    return d


def _end_slope(h0: float, h1: float, d0: float, d1: float) -> float:
    """Three-point end derivative, clipped so the end piece stays monotone like its data."""
    slope = ((2 * h0 + h1) * d0 - h0 * d1) / (h0 + h1)
    if np.sign(slope) != np.sign(d0):
        return 0.0
    if np.sign(d0) != np.sign(d1) and abs(slope) > abs(3 * d0):
        return 3 * d0
    return float(slope)


def pchip_integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    """Exact integral over [lo, hi] (inside [x[0], x[-1]]) of the PCHIP interpolant through (x, y)."""
    if not (x[0] <= lo <= hi <= x[-1]):
        raise ValueError(f"[{lo}, {hi}] is outside the data range [{x[0]}, {x[-1]}]")
    d = pchip_slopes(x, y)
    total = 0.0
    for k in range(len(x) - 1):
        a, b = max(lo, x[k]), min(hi, x[k + 1])
        if a >= b:
            continue
        h = x[k + 1] - x[k]
        delta = (y[k + 1] - y[k]) / h
        # The piece as a polynomial in t = x - x[k]: c0 + c1 t + c2 t^2 + c3 t^3.
        c = (y[k], d[k], (3 * delta - 2 * d[k] - d[k + 1]) / h, (d[k] + d[k + 1] - 2 * delta) / h**2)
        total += _poly_antiderivative(c, b - x[k]) - _poly_antiderivative(c, a - x[k])
    return total


def _poly_antiderivative(c: tuple[float, float, float, float], t: float) -> float:
    return t * (c[0] + t * (c[1] / 2 + t * (c[2] / 3 + t * c[3] / 4)))


def _mean_gap(x_anchor: np.ndarray, y_anchor: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> float:
    """Mean of (test - anchor) over the interval where both interpolants are defined."""
    lo = max(x_anchor[0], x_test[0])
    hi = min(x_anchor[-1], x_test[-1])
    if not hi > lo:
        raise ValueError(
            f"the curves do not overlap: anchor spans [{x_anchor[0]:.4g}, {x_anchor[-1]:.4g}], "
            f"test spans [{x_test[0]:.4g}, {x_test[-1]:.4g}]"
        )
    gap = pchip_integral(x_test, y_test, lo, hi) - pchip_integral(x_anchor, y_anchor, lo, hi)
    return gap / (hi - lo)


def overlap(anchor: Iterable[Sequence[float]], test: Iterable[Sequence[float]], axis: str = "quality") -> Point:
    """The interval (of quality, or of rate with axis="rate") that a BD figure is averaged over."""
    col = {"rate": 0, "quality": 1}[axis]
    a, t = rd_curve(anchor)[col], rd_curve(test)[col]
    return float(max(a[0], t[0])), float(min(a[-1], t[-1]))


def bd_rate(anchor: Iterable[Sequence[float]], test: Iterable[Sequence[float]]) -> float:
    """Average rate change of ``test`` against ``anchor`` at equal quality, in percent (negative is better).

    Raises ValueError when either curve has fewer than 2 usable points or their qualities do not overlap.
    """
    rate_a, qual_a = rd_curve(anchor)
    rate_t, qual_t = rd_curve(test)
    return (math.exp(_mean_gap(qual_a, np.log(rate_a), qual_t, np.log(rate_t))) - 1.0) * 100.0


def bd_psnr(anchor: Iterable[Sequence[float]], test: Iterable[Sequence[float]]) -> float:
    """Average quality change of ``test`` against ``anchor`` at equal rate, in dB (positive is better).

    Raises ValueError when either curve has fewer than 2 usable points or their rates do not overlap.
    """
    rate_a, qual_a = rd_curve(anchor)
    rate_t, qual_t = rd_curve(test)
    return _mean_gap(np.log(rate_a), qual_a, np.log(rate_t), qual_t)
