"""Coding an index grid with the integer context model (``raqcodec.entropy.context``): pass by pass in the
normative order (``raqcodec.entropy.scan``), the network evaluated on tasks of the worker pool, rANS on
the exact integer frequencies; plus the information estimates rate control steers by and the per-image
sharpness search. How the work is cut up is the model's ``Schedule`` and changes no bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import TypeVar

import constriction
import numpy as np
import torch
from torch import Tensor

from ..errors import ContextError, EntropyError
from .context import _CONSTRICTION_PRECISION, PRECISION, ContextModel, Mixtures
from .order0 import check_information
from .scan import NUM_PASSES, context_slots, pass_map
from .schedule import DEFAULT_SCHEDULE, Schedule
from .workers import default_workers, ordered_map

T = TypeVar("T")


# ---------------------------------------------------------------- coding


def _passes(h: int, w: int) -> list[np.ndarray]:
    """Flat positions of each pass in coding order."""
    passes = pass_map(h, w).ravel()
    return [np.flatnonzero(passes == p) for p in range(NUM_PASSES)]


def _tasks(
    n: int, size: int, components: int, workers: int, schedule: Schedule = DEFAULT_SCHEDULE
) -> list[list[slice]]:
    """A pass's n positions as tasks for the worker pool, each a list of parts (consecutive slices).

    A part bounds the (positions x M x K) work arrays to about ``schedule.chunk_elements``; a task is about
    ``schedule.task_positions`` positions or one part, whichever is larger, and a pass of at least
    ``schedule.min_shared_task``
    positions per worker is split into at least one task per worker. Tasks and the parts in them are
    cut into equal lengths, so the workers get even shares. How a pass is cut changes no bit: rANS codes
    the same symbols in the same order."""
    if n == 0:
        return []
    per_part = max(1, schedule.chunk_elements // (components * size))
    count = max(-(-n // max(schedule.task_positions, per_part)), min(workers, n // schedule.min_shared_task))
    tasks = []
    for lo, hi in _even_cuts(0, n, count):
        tasks.append([slice(a, b) for a, b in _even_cuts(lo, hi, -(-(hi - lo) // per_part))])
    return tasks


def _even_cuts(lo: int, hi: int, count: int) -> list[tuple[int, int]]:
    """``lo..hi`` in ``count`` consecutive runs whose lengths differ by at most one."""
    bounds = [lo + (hi - lo) * i // count for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def _pass_results(
    ctx: ContextModel,
    codebook: Tensor,
    grid: np.ndarray,
    passes: np.ndarray,
    positions: np.ndarray,
    sharpness: int,
    per_part: Callable[[Mixtures, np.ndarray, np.ndarray], T],
    reverse: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray, T]]:
    """Rows, columns and ``per_part(mixtures, rows, columns)`` of ``positions``, part by part (``_tasks``;
    last part first with ``reverse``, the order rANS encodes in).

    Each task evaluates the network once for its parts and then ``per_part`` on each; tasks run ahead on
    the worker pool (``raqcodec.entropy.workers``) and their results come back in order. A position's context
    holds earlier passes only, so every task of a pass can run before any of the pass is decoded; where
    the whole grid is known (encoding, estimates) ``positions`` may span every pass, in coding order, so
    that small passes do not make small tasks. ``per_part`` must only read the grid."""
    w = grid.shape[1]
    k = codebook.shape[0]
    workers = default_workers() if ctx.schedule.workers is None else ctx.schedule.workers
    tasks = _tasks(len(positions), k, ctx.components, workers, ctx.schedule)
    ctx.size_tables(codebook)  # built once here, not by several workers at once

    def run(task: list[slice]) -> list[tuple[np.ndarray, np.ndarray, T]]:
        lo, hi = task[0].start, task[-1].stop
        ys, xs = positions[lo:hi] // w, positions[lo:hi] % w
        mix = ctx.mixtures(codebook, context_slots(grid, passes, ys, xs, k), passes[ys, xs], sharpness)
        out = []
        for part in reversed(task) if reverse else task:
            local = slice(part.start - lo, part.stop - lo)
            out.append((ys[local], xs[local], per_part(mix[local], ys[local], xs[local])))
        return out

    for results in ordered_map((partial(run, task) for task in (reversed(tasks) if reverse else tasks)), workers):
        yield from results


def _model() -> constriction.stream.model.Categorical:
    return constriction.stream.model.Categorical(perfect=False)


# The encoder picks the sharpness (a shift of every component's log precision) that codes the image
# best: the network is calibrated on its training photos, and images differ (on Kodak at K~ = 1024 the
# best shift saves about 3%). It is stored in the section's first byte.
SHARPNESS_CANDIDATES = (-32, -16, 0, 16, 32, 48, 64)
SHARPNESS_SAMPLE = 8  # the search scores every 8th position of each pass (fewer on large grids)


def sample_step(positions: int, at_least: int = 1, most: int | None = None) -> int:
    """Stride of a sample of at most about ``most`` (default: the default schedule's ``sampled_positions``)
    of ``positions``, at least
    ``at_least``. Odd above ``at_least``, so that it does not divide the even row lengths of a pass and
    pick the same columns in every row."""
    step = max(at_least, -(-positions // (DEFAULT_SCHEDULE.sampled_positions if most is None else most)))
    return step if step == at_least else step | 1


def encode_grid(ctx: ContextModel, codebook: Tensor, grid: np.ndarray, sharpness: int | None = None) -> bytes:
    """Index section: one signed byte of sharpness, then the rANS payload (big-endian 32-bit words).
    ``sharpness`` None: the best of SHARPNESS_CANDIDATES on a sample of positions."""
    if sharpness is None:
        sharpness = best_sharpness(ctx, codebook, grid)
    if not -128 <= sharpness <= 127:
        raise ValueError(f"sharpness must fit a signed byte, got {sharpness}")
    h, w = grid.shape
    passes = pass_map(h, w)
    coder = constriction.stream.stack.AnsCoder()
    # the grid is known, so every pass is evaluated in one run (rANS codes the same symbols with the same
    # frequencies in the same order, however the work is cut); a stack: the last decoded goes in first
    for ys, xs, weights in _pass_results(
        ctx,
        codebook,
        grid,
        passes,
        np.concatenate(_passes(h, w)),
        sharpness,
        lambda mix, _ys, _xs: ctx.coding_weights(mix),
        reverse=True,
    ):
        coder.encode_reverse(grid[ys, xs].astype(np.int32), _model(), weights)
    return sharpness.to_bytes(1, "big", signed=True) + coder.get_compressed().astype(">u4").tobytes()


def _pass_bits(
    ctx: ContextModel, codebook: Tensor, grid: np.ndarray, sharpnesses: Sequence[int], sample: int
) -> list[tuple[list[float], int, int]]:
    """Per pass: information of every ``sample``-th position at each of ``sharpnesses``, how many were
    scored, how many it has. The network runs once per part for all of them (``ContextModel.distances_at``)."""
    h, w = grid.shape
    passes = pass_map(h, w)

    def information(frequencies: Tensor) -> np.ndarray:
        return PRECISION - torch.log2(frequencies.to(torch.float64)).numpy()

    def part_bits(mix: Mixtures, ys: np.ndarray, xs: np.ndarray) -> list[np.ndarray]:
        """Per sharpness, the bits of each position, summed per pass."""
        chosen, ids = grid[ys, xs], passes[ys, xs]
        if len(sharpnesses) == 1:
            each = [information(ctx.chosen_frequencies(mix, chosen))]
        else:
            unscaled = ctx.unscaled_distances(mix)
            each = [
                information(ctx.chosen_frequencies(mix, chosen, ctx.distances_at(mix, s, unscaled)))
                for s in sharpnesses
            ]
        return [np.bincount(ids, weights=bits, minlength=NUM_PASSES) for bits in each]

    wholes = _passes(h, w)
    sampled = [whole[::sample] for whole in wholes]
    bits = np.zeros((len(sharpnesses), NUM_PASSES))
    # the grid is known: every pass's sample in one run (``_pass_results``)
    for _, _, part in _pass_results(ctx, codebook, grid, passes, np.concatenate(sampled), sharpnesses[0], part_bits):
        bits += np.stack(part)
    return [(list(bits[:, p]), len(sampled[p]), len(wholes[p])) for p in range(NUM_PASSES)]


def ideal_bits(ctx: ContextModel, codebook: Tensor, grid: np.ndarray, sharpness: int = 0, sample: int = 1) -> float:
    """Information content of the grid under the integer model (what rANS spends, minus its flush);
    with ``sample`` > 1, of every ``sample``-th position of each step only."""
    return sum(bits[0] for bits, _, _ in _pass_bits(ctx, codebook, grid, (sharpness,), sample))


def estimated_bits(ctx: ContextModel, codebook: Tensor, grid: np.ndarray, sharpness: int = 0) -> float:
    """``ideal_bits`` of the whole grid, from at most about ``ctx.schedule.sampled_positions`` positions: each pass's
    sampled bits scaled to the pass. Exact (sample 1) on grids up to that size."""
    sample = sample_step(grid.size, most=ctx.schedule.sampled_positions)
    return sum(
        bits[0] * total / max(1, scored)
        for bits, scored, total in _pass_bits(ctx, codebook, grid, (sharpness,), sample)
    )


# The search starts here: the most frequent best sharpness on Kodak grids of K~ = 2..1024.
SHARPNESS_START = 16


def best_sharpness(ctx: ContextModel, codebook: Tensor, grid: np.ndarray) -> int:
    """The candidate sharpness with the fewest bits on a sample of the grid, by descent from
    SHARPNESS_START: the bits fall and then rise along the candidates (a shift of the log precision; on
    48 Kodak grids of 8 images and 6 sizes there was one minimum every time), so the search stops at the
    first candidate whose neighbours both code worse. The start and its neighbours are scored together,
    then up to two candidates further in the direction of descent at a time: one network evaluation
    serves every candidate of a sweep (``_pass_bits``), and most searches end after the first."""
    sample = sample_step(grid.size, SHARPNESS_SAMPLE, ctx.schedule.sharpness_positions)
    costs: dict[int, float] = {}

    def cost(i: int, *ahead: int) -> float:
        """Candidate i's bits, scoring it together with the ``ahead`` candidates not yet scored."""
        if i not in costs:
            todo = [j for j in (i, *ahead) if j not in costs and 0 <= j < len(SHARPNESS_CANDIDATES)]
            sweep = _pass_bits(ctx, codebook, grid, [SHARPNESS_CANDIDATES[j] for j in todo], sample)
            for n, j in enumerate(todo):
                costs[j] = sum(bits[n] for bits, _, _ in sweep)
        return costs[i]

    i = SHARPNESS_CANDIDATES.index(SHARPNESS_START)
    step = -1 if i > 0 and cost(i - 1, i, i + 1) < cost(i) else 1
    while 0 <= i + step < len(SHARPNESS_CANDIDATES) and cost(i + step, i + 2 * step) < cost(i):
        i += step
    return SHARPNESS_CANDIDATES[i]


def decode_grid(ctx: ContextModel, codebook: Tensor, section: bytes, h: int, w: int) -> np.ndarray:
    """Inverse of ``encode_grid``; raises ContextError on a corrupt or truncated section."""
    if len(section) % 4 != 1:
        raise ContextError(f"corrupt index section: length {len(section)} is not 1 + a multiple of 4")
    sharpness = int.from_bytes(section[:1], "big", signed=True)
    words = np.frombuffer(section[1:], dtype=">u4").astype(np.uint32)
    grid = np.zeros((h, w), np.int64)
    passes = pass_map(h, w)
    information = 0.0  # bits of the indices decoded so far (check_information)
    try:
        coder = constriction.stream.stack.AnsCoder(words)
        for positions in _passes(h, w):
            for ys, xs, weights in _pass_results(
                ctx, codebook, grid, passes, positions, sharpness, lambda mix, _ys, _xs: ctx.coding_weights(mix)
            ):
                decoded = coder.decode(_model(), weights)
                grid[ys, xs] = decoded
                chosen = weights[np.arange(len(decoded)), decoded] + 1.0  # frequency * 2^(24 - P)
                information += float(_CONSTRICTION_PRECISION * len(decoded) - np.log2(chosen).sum())
                check_information(information, len(words))
        leftover = coder.num_words()
    except EntropyError as exc:
        raise ContextError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - constriction reports bad data as ValueError; never leak it
        raise ContextError(f"corrupt index section: rANS payload rejected ({exc})") from None
    if leftover:
        raise ContextError("corrupt index section: rANS payload does not end where the last index does")
    return grid


def choose_in_coding_order(
    ctx: ContextModel,
    codebook: Tensor,
    grid: np.ndarray,
    sharpness: int,
    pick: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
) -> float:
    """Rewrite ``grid`` (h, w) int64 in place, pass by pass in the decoder's order: ``pick(rows, columns,
    bits)`` gets every codeword's bits (n, K) at those positions, under contexts made of the choices of
    earlier passes (as the decoder will see them), and returns the chosen indices (n,). Returns the
    information of the chosen grid in bits at ``sharpness`` (what rANS spends on it, without its flush).

    The encoder's rate-constrained index choice (``raqcodec.ratecontrol.ecvq``) runs on this; the bits
    are the exact integer model's."""
    h, w = grid.shape
    passes = pass_map(h, w)
    total = 0.0

    def bits(mix: Mixtures, _ys: np.ndarray, _xs: np.ndarray) -> np.ndarray:
        return PRECISION - np.log2(ctx._rows(mix, 1) + 1.0)  # frequency = row + 1, out of 2^PRECISION

    for positions in _passes(h, w):
        for ys, xs, part in _pass_results(ctx, codebook, grid, passes, positions, sharpness, bits):
            chosen = pick(ys, xs, part)
            grid[ys, xs] = chosen
            total += float(part[np.arange(len(chosen)), chosen].sum())
    return total
