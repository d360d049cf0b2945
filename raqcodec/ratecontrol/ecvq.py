"""Entropy-constrained index choice: distortion + lambda x bits under the context model.

Nearest-neighbour quantization spends bits wherever a latent is a hair closer to an unlikely codeword.
Entropy-constrained VQ (Chou, Lookabaugh and Gray 1989) picks, at every position, the codeword that
minimises ``|z - c_k|^2 + lambda * bits(k)``. With the context model the bits of a position depend on
its decoded neighbours. The grid is coded in passes and a position's context holds earlier passes only,
so choosing pass by pass in coding order (``entropy.context.choose_in_coding_order``) scores every choice
with exactly the probabilities the decoder will use; a choice changes the contexts of later passes,
which then choose given it, as the decoder decodes them.

Under a budget this lets a large codebook reach a small rate, and a large codebook at a strong lambda
decodes closer than a small one at lambda 0 (measured on 6 Kodak images at 0.1 bpp, raq-photo: the
best rate-constrained grid was at 2-8x the largest size whose nearest-neighbour grid fits and decoded
0.7-2.0 dB closer than the refined grid rate control chose before; at 0.2 bpp the refined grid still
won). It also fills budgets between the sizes below the trained range (K~ 2..7), where one size step
is a large step in rate. The search is the encoder's alone: the decoder does not repeat it, and the
floats here only steer which indices are written.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..entropy.context import ContextModel
from ..entropy.context_coding import best_sharpness, choose_in_coding_order

SECTION_OVERHEAD_BITS = 8 + 32  # the sharpness byte and the rANS flush (entropy.coders.ContextCoder)
# Lambda is in units of the median nearest-neighbour distance per bit, so one start serves every image
# and size; the search brackets the smallest fitting lambda in steps of a factor, then bisects (in log
# lambda) to within LAMBDA_PRECISION: the smallest lambda that fits spends the budget best.
LAMBDA_START = 0.3
LAMBDA_PRECISION = 1.04
LAMBDA_MAX_STEPS = 24
# Sizes probed, as multiples of the largest size whose nearest-neighbour grid fits: at 0.1 bpp on Kodak
# the best was 2x to 8x, the error flat around it; then halfway (in log size) to the best's neighbours.
SIZE_FACTORS = (2.0, 4.0, 8.0)
SECANT_REACH = 4.0  # the farthest an extrapolated lambda goes in one step (fit_lambda with fill)
CONFIRM_TRIES = 6  # real encodes per size, each at LAMBDA_PRECISION x the lambda of the last
# Lambda is fitted on the central quarter of larger grids first (a quarter of the work per try).
CROP_MIN_POSITIONS = 4096


@dataclass(frozen=True)
class Choice:
    """A rate-constrained grid: (h, w) int64 indices, their latent distortion and the bits of their
    section at the sharpness they were chosen for (exact information plus SECTION_OVERHEAD_BITS)."""

    indices: np.ndarray
    distortion: float
    bits: float


@dataclass(frozen=True)
class Candidate:
    """A rate-constrained grid that fits the budget, with its coded section and decoded error."""

    size: int
    indices: np.ndarray  # (h*w,) int32
    section: bytes
    error: float  # the float decoder's MSE (what the budget search compares)
    lam: float  # distance per bit


def squared_distances(rows: Tensor, codebook: Tensor) -> np.ndarray:
    """(N, K) float64: squared distance of every latent row (N, d) to every codeword (K, d)."""
    r, c = rows.detach().to("cpu", torch.float64), codebook.detach().to("cpu", torch.float64)
    d2 = (r * r).sum(1, keepdim=True) - 2.0 * r @ c.t() + (c * c).sum(1)[None]
    return d2.clamp_(min=0.0).numpy()


def rate_constrained_indices(
    ctx: ContextModel, codebook: Tensor, distances: np.ndarray, shape: tuple[int, int], lam: float, sharpness: int = 0
) -> Choice:
    """The grid minimising distance + ``lam`` x bits, chosen in coding order. ``codebook``: the integer
    codebook the stream names (K, d); ``distances``: (h*w, K) from ``squared_distances``; ``lam`` in
    distance units per bit (0: nearest neighbour, its bits counted)."""
    h, w = shape
    grid = distances.argmin(1).reshape(h, w).astype(np.int64)

    def pick(ys: np.ndarray, xs: np.ndarray, bits: np.ndarray) -> np.ndarray:
        own = distances[ys * w + xs]
        return (own + lam * bits).argmin(1) if lam > 0 else own.argmin(1)

    bits = choose_in_coding_order(ctx, codebook, grid, sharpness, pick)
    return Choice(grid, float(distances[np.arange(h * w), grid.ravel()].sum()), bits + SECTION_OVERHEAD_BITS)


@dataclass(frozen=True)
class Fitted:
    """What ``fit_lambda`` found: the lambda, its choice and the local slope of log bits against lambda
    (negative; None when one choice was all it made), which a later fit of a similar grid starts from."""

    lam: float
    choice: Choice
    slope: float | None


def fit_lambda(
    choose: Callable[[float], Choice],
    budget_bits: float,
    start: float,
    growth: float = 3.0,
    fill: float | None = None,
    slope: float | None = None,
) -> Fitted | None:
    """The smallest lambda (to within LAMBDA_PRECISION) whose choice has at most ``budget_bits`` bits,
    with that choice; None when no lambda tried fits. Steps of ``growth`` from ``start`` bracket it,
    then bisection in log lambda narrows the bracket.

    ``fill``: good enough is a fitting choice with at least this share of the budget. Log bits fall
    almost linearly with lambda over the range a fit crosses (Kodak grids at K~ = 40-384: the slope
    varies by 10-25% across a 4x range, and little between a grid's central crop, the whole grid and a
    neighbouring size), so each next lambda is where a line meets the middle of the accepted range: from
    the first choice along ``slope`` (a similar grid's, when given), then through the last two choices
    before the bracket closes, then through its ends (Illinois regula falsi, so neither end stays put for
    long). About a third of the bisection's passes, for a choice a share ``1 - fill`` of the budget from
    the smallest fitting lambda's at most."""
    got = choose(start)
    best = (start, got) if got.bits <= budget_bits else None
    lo, hi = (None, start) if best else (start, None)
    aim = math.log(budget_bits if fill is None else budget_bits * (1.0 + fill) / 2)
    # log bits over the aim at lo (> 0) and at hi (<= 0); an end kept twice in a row has its halved
    excess = {"lo": 0.0, "hi": 0.0}
    excess["hi" if best else "lo"] = _log_bits(got) - aim
    moved = ""  # the end replaced last
    seen = {start: _log_bits(got)}  # lambda -> log bits of every choice, in the order made
    for _ in range(LAMBDA_MAX_STEPS):
        if best is not None and fill is not None and best[1].bits >= fill * budget_bits:
            break
        if lo is not None and hi is not None:
            if hi / lo <= LAMBDA_PRECISION:
                break
            if fill is None:
                lam = (lo * hi) ** 0.5
            else:
                share = excess["lo"] / max(excess["lo"] - excess["hi"], 1e-12)
                lam = lo + share * (hi - lo)
                lam = min(max(lam, lo * LAMBDA_PRECISION**0.5), hi / LAMBDA_PRECISION**0.5)
        elif fill is not None and (len(seen) > 1 or slope is not None):
            lam = _secant_step(list(seen.items()), aim, growth, slope)
        else:
            lam = hi / growth if lo is None else lo * growth  # type: ignore[operator]
        got = choose(lam)
        seen[lam] = _log_bits(got)
        end = "hi" if got.bits <= budget_bits else "lo"
        if end == "hi":
            best, hi = (lam, got), lam
            if lo is None and lam < 1e-3 * start:
                break  # fits with next to no rate term: nearest neighbour fits
        else:
            lo = lam
        if moved == end:
            excess["lo" if end == "hi" else "hi"] /= 2
        excess[end], moved = seen[lam] - aim, end
    if best is None:
        return None
    # the local slope: across the bracket's ends, or the last two choices, or as given
    pair = (lo, hi) if lo is not None and hi is not None else list(seen)[-2:]
    if len(pair) == 2 and pair[0] != pair[1]:
        slope = (seen[pair[1]] - seen[pair[0]]) / (pair[1] - pair[0])
    return Fitted(best[0], best[1], slope if slope is None or slope < 0 else None)


def _log_bits(choice: Choice) -> float:
    return math.log(max(choice.bits, 1.0))


def _secant_step(seen: list[tuple[float, float]], aim: float, growth: float, slope: float | None) -> float:
    """Before the bracket closes: the lambda where log bits reach ``aim`` on the line through the last two
    (lambda, log bits), or from the one choice along ``slope``; a step of at least half ``growth`` and at
    most a factor SECANT_REACH from the last (in log lambda). A crop's lambda can be far from the whole
    grid's: kodim23 at 0.1 bpp took 12 steps of 1.15 to bracket, 4 passes this way."""
    x1, y1 = seen[-1]
    if len(seen) > 1:
        x0, y0 = seen[-2]
        slope = (y1 - y0) / (x1 - x0) if x1 != x0 else 0.0
    direction = 1.0 if y1 > aim else -1.0  # too many bits: a larger lambda
    goal = x1 + (aim - y1) / slope if slope is not None and slope < 0 else 0.0
    step = abs(math.log(goal / x1)) if goal > 0 else math.inf
    return x1 * math.exp(direction * min(max(step, 0.5 * math.log(growth)), math.log(SECANT_REACH)))


def central_crop(shape: tuple[int, int], distances: np.ndarray) -> tuple[tuple[int, int], np.ndarray]:
    """The central (h/2, w/2) block of a grid and its rows of ``distances`` (the whole grid when small)."""
    h, w = shape
    if h * w < CROP_MIN_POSITIONS:
        return shape, distances
    ch, cw = h // 2, w // 2
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    rows = (np.arange(y0, y0 + ch)[:, None] * w + np.arange(x0, x0 + cw)[None, :]).ravel()
    return (ch, cw), distances[rows]


@dataclass(frozen=True)
class Warm:
    """A fit at another size of the same grid that the next size's starts from, in absolute units
    (distance per bit): its lambda, sharpness and slope of log bits against lambda."""

    lam: float
    sharpness: int
    slope: float | None


def fit_size(
    ctx: ContextModel,
    rows: Tensor,
    shape: tuple[int, int],
    codebook: Tensor,
    float_codebook: Tensor,
    budget_bytes: int,
    encode: Callable[[np.ndarray], bytes],
    fill: float | None = None,
    warm: Warm | None = None,
) -> tuple[Warm, np.ndarray, bytes] | None:
    """At one size: the fit (lambda, sharpness, slope), indices (h, w) and section of the smallest lambda
    whose section fits, or None.

    Lambda is fitted on the central quarter of the grid (with the budget in proportion), at the
    sharpness that quarter's grid then codes best with (a strong lambda makes grids more predictable
    than the context network was trained on; the stream's sharpness then saves 5-15%), then on the whole
    grid from there, and confirmed by real encodes. ``fill``: see ``fit_lambda``; with it each fit starts
    along the slope of the last. ``warm``: a fit at another size of the same grid: the whole grid's search
    starts there, without the crop's."""
    distances = squared_distances(rows, float_codebook)
    scale = float(np.median(distances.min(1)))  # lambda is searched in units of the median distance
    crop, crop_distances = central_crop(shape, distances)
    share = crop[0] * crop[1] / (shape[0] * shape[1])
    sharpness = 0

    def on_crop(lam: float) -> Choice:
        return rate_constrained_indices(ctx, codebook, crop_distances, crop, lam * scale, sharpness)

    def on_grid(lam: float) -> Choice:
        return rate_constrained_indices(ctx, codebook, distances, shape, lam * scale, sharpness)

    if warm is None:  # (fit_lambda follows a slope only with fill)
        got = fit_lambda(on_crop, 8 * budget_bytes * share, LAMBDA_START, fill=fill)
        if got is None:
            return None
        sharpness = best_sharpness(ctx, codebook, got.choice.indices)
        got = fit_lambda(on_crop, 8 * budget_bytes * share, got.lam, 1.3, fill, got.slope) or got
        start, slope = got.lam, got.slope
    else:
        start, sharpness = warm.lam / scale, warm.sharpness
        slope = warm.slope * scale if warm.slope is not None else None
    whole = fit_lambda(on_grid, 8 * budget_bytes, start, 1.15, fill, slope)
    if whole is None:
        return None
    lam, choice = whole.lam, whole.choice
    for _ in range(CONFIRM_TRIES):
        section = encode(choice.indices)
        if len(section) <= budget_bytes:
            fitted_slope = whole.slope / scale if whole.slope is not None else None
            return Warm(lam * scale, sharpness, fitted_slope), choice.indices, section
        lam *= LAMBDA_PRECISION
        choice = on_grid(lam)
    return None


def search(
    ctx: ContextModel,
    rows: Tensor,
    shape: tuple[int, int],
    fitting: int,
    size_max: int,
    budget_bytes: int,
    books: Callable[[int], tuple[Tensor, Tensor]],
    encode: Callable[[np.ndarray, int], bytes],
    error: Callable[[np.ndarray, int], float],
    factors: tuple[float, ...] = SIZE_FACTORS,
    neighbours: bool = True,
    fill: float | None = None,
) -> list[Candidate]:
    """Rate-constrained grids at sizes above ``fitting`` (the largest size whose nearest-neighbour grid
    fits) whose sections fit ``budget_bytes``, closest first. ``books(size)``: (integer, float) codebooks;
    ``encode(indices, size)``: the section; ``error(indices, size)``: the float decoder's MSE.

    Probes ``fitting`` x ``factors``, then (``neighbours``) halfway in log size to the best one's neighbours.
    ``fill``: see ``fit_lambda``; each size after the first then starts from the lambda and sharpness the
    last one fitted (``fit_size``'s ``warm``)."""
    found: dict[int, Candidate | None] = {}
    warm: Warm | None = None  # the last fit, which the next size's starts from (with fill)

    def probe(size: int) -> None:
        nonlocal warm
        if size in found or not fitting < size <= size_max:
            return
        book, float_book = books(size)
        start = warm if fill is not None else None
        got = fit_size(ctx, rows, shape, book, float_book, budget_bytes, lambda g: encode(g, size), fill, start)
        found[size] = None
        if got is not None:
            warm, grid, section = got
            indices = grid.reshape(-1).astype(np.int32)
            found[size] = Candidate(size, indices, section, error(indices, size), warm.lam)

    for factor in factors:
        probe(min(size_max, max(fitting + 1, round(fitting * factor))))
    fitted = {s: c for s, c in found.items() if c is not None}
    if fitted and neighbours:
        ranked = sorted(fitted)
        i = ranked.index(min(fitted, key=lambda s: fitted[s].error))
        for neighbour in ranked[max(0, i - 1) : i] + ranked[i + 1 : i + 2]:
            probe(round((ranked[i] * neighbour) ** 0.5))
    return sorted((c for c in found.values() if c is not None), key=lambda c: c.error)
