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
    lam: float  # in LAMBDA_START's units


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


def fit_lambda(
    choose: Callable[[float], Choice],
    budget_bits: float,
    start: float,
    growth: float = 3.0,
    fill: float | None = None,
) -> tuple[float, Choice] | None:
    """The smallest lambda (to within LAMBDA_PRECISION) whose choice has at most ``budget_bits`` bits,
    with that choice; None when no lambda tried fits. Steps of ``growth`` from ``start`` bracket it,
    then bisection in log lambda narrows the bracket.

    ``fill``: good enough is a fitting choice with at least this share of the budget, and the bracket is
    narrowed by interpolating log bits linearly in log lambda (the bits fall smoothly with lambda;
    Illinois regula falsi, so neither end stays put for long): about half the passes of the bisection,
    for a choice a share ``1 - fill`` of the budget from the smallest fitting lambda's at most."""
    got = choose(start)
    best = (start, got) if got.bits <= budget_bits else None
    lo, hi = (None, start) if best else (start, None)
    target = math.log(budget_bits)
    # log bits over the target at lo (> 0) and at hi (<= 0); an end kept twice in a row has its halved
    excess = {"lo": 0.0, "hi": 0.0}
    excess["hi" if best else "lo"] = _log_bits(got) - target
    moved = ""  # the end replaced last
    seen = [(math.log(start), _log_bits(got))]  # (log lambda, log bits) of every choice
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
                lam = math.exp(math.log(lo) + share * (math.log(hi) - math.log(lo)))
                lam = min(max(lam, lo * LAMBDA_PRECISION**0.5), hi / LAMBDA_PRECISION**0.5)
        elif fill is not None and len(seen) > 1:
            lam = _secant_step(seen, target, growth)
        else:
            lam = hi / growth if lo is None else lo * growth  # type: ignore[operator]
        got = choose(lam)
        seen.append((math.log(lam), _log_bits(got)))
        end = "hi" if got.bits <= budget_bits else "lo"
        if end == "hi":
            best, hi = (lam, got), lam
            if lo is None and lam < 1e-3 * start:
                break  # fits with next to no rate term: nearest neighbour fits
        else:
            lo = lam
        if moved == end:
            excess["lo" if end == "hi" else "hi"] /= 2
        excess[end], moved = seen[-1][1] - target, end
    return best


def _log_bits(choice: Choice) -> float:
    return math.log(max(choice.bits, 1.0))


def _secant_step(seen: list[tuple[float, float]], target: float, growth: float) -> float:
    """Before the bracket closes: the lambda where the line through the last two (log lambda, log bits)
    meets the target (aiming a tenth beyond it), a step of at least half ``growth`` and at most a factor
    SECANT_REACH from the last. A crop's lambda can be far from the whole grid's: kodim23 at 0.1 bpp took
    12 steps of 1.15 to bracket, 4 passes this way."""
    (x0, y0), (x1, y1) = seen[-2], seen[-1]
    slope = (y1 - y0) / (x1 - x0) if x1 != x0 else 0.0
    direction = 1.0 if y1 > target else -1.0  # too many bits: a larger lambda
    step = 1.1 * abs(target - y1) / -slope if slope < 0 else math.inf
    return math.exp(x1 + direction * min(max(step, 0.5 * math.log(growth)), math.log(SECANT_REACH)))


def central_crop(shape: tuple[int, int], distances: np.ndarray) -> tuple[tuple[int, int], np.ndarray]:
    """The central (h/2, w/2) block of a grid and its rows of ``distances`` (the whole grid when small)."""
    h, w = shape
    if h * w < CROP_MIN_POSITIONS:
        return shape, distances
    ch, cw = h // 2, w // 2
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    rows = (np.arange(y0, y0 + ch)[:, None] * w + np.arange(x0, x0 + cw)[None, :]).ravel()
    return (ch, cw), distances[rows]


def fit_size(
    ctx: ContextModel,
    rows: Tensor,
    shape: tuple[int, int],
    codebook: Tensor,
    float_codebook: Tensor,
    budget_bytes: int,
    encode: Callable[[np.ndarray], bytes],
    fill: float | None = None,
    warm: tuple[float, int] | None = None,
) -> tuple[float, int, np.ndarray, bytes] | None:
    """At one size: (lambda, sharpness, indices (h, w), section) of the smallest lambda whose section fits,
    or None.

    Lambda is fitted on the central quarter of the grid (with the budget in proportion), at the
    sharpness that quarter's grid then codes best with (a strong lambda makes grids more predictable
    than the context network was trained on; the stream's sharpness then saves 5-15%), then on the whole
    grid from there, and confirmed by real encodes. ``fill``: see ``fit_lambda``. ``warm``: (lambda,
    sharpness) fitted at another size of the same grid: the whole grid's search starts there, without the
    crop's (in units of each size's median distance, lambda moves little between sizes)."""
    distances = squared_distances(rows, float_codebook)
    scale = float(np.median(distances.min(1)))
    crop, crop_distances = central_crop(shape, distances)
    share = crop[0] * crop[1] / (shape[0] * shape[1])
    sharpness = 0

    def on_crop(lam: float) -> Choice:
        return rate_constrained_indices(ctx, codebook, crop_distances, crop, lam * scale, sharpness)

    def on_grid(lam: float) -> Choice:
        return rate_constrained_indices(ctx, codebook, distances, shape, lam * scale, sharpness)

    if warm is None:
        got = fit_lambda(on_crop, 8 * budget_bytes * share, LAMBDA_START, fill=fill)
        if got is None:
            return None
        sharpness = best_sharpness(ctx, codebook, got[1].indices)
        got = fit_lambda(on_crop, 8 * budget_bytes * share, got[0], growth=1.3, fill=fill) or got
        start = got[0]
    else:
        start, sharpness = warm
    whole = fit_lambda(on_grid, 8 * budget_bytes, start, growth=1.15, fill=fill)
    if whole is None:
        return None
    lam, choice = whole
    for _ in range(CONFIRM_TRIES):
        section = encode(choice.indices)
        if len(section) <= budget_bytes:
            return lam, sharpness, choice.indices, section
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
    warm: tuple[float, int] | None = None  # the last fitted (lambda, sharpness), used with fill

    def probe(size: int) -> None:
        nonlocal warm
        if size in found or not fitting < size <= size_max:
            return
        book, float_book = books(size)
        start = warm if fill is not None else None
        got = fit_size(ctx, rows, shape, book, float_book, budget_bytes, lambda g: encode(g, size), fill, start)
        found[size] = None
        if got is not None:
            lam, sharpness, grid, section = got
            warm = (lam, sharpness)
            indices = grid.reshape(-1).astype(np.int32)
            found[size] = Candidate(size, indices, section, error(indices, size), lam)

    for factor in factors:
        probe(min(size_max, max(fitting + 1, round(fitting * factor))))
    fitted = {s: c for s, c in found.items() if c is not None}
    if fitted and neighbours:
        ranked = sorted(fitted)
        i = ranked.index(min(fitted, key=lambda s: fitted[s].error))
        for neighbour in ranked[max(0, i - 1) : i] + ranked[i + 1 : i + 2]:
            probe(round((ranked[i] * neighbour) ** 0.5))
    return sorted((c for c in found.values() if c is not None), key=lambda c: c.error)
