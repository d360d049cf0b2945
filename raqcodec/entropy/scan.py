"""The normative coding order of an index grid (docs/FORMAT.md 2B.1-2B.2) and the context of a position:
interlaced passes, coarse to fine (like Adam7), and the neighbour slots each position sees. Encoder and
decoder follow it exactly; the context network (``raqcodec.nn.context``) is trained for it and the integer
context model (``raqcodec.entropy.context``) evaluates it. numpy only.
"""

from __future__ import annotations

import functools

import numpy as np

# Neighbour slots, in units of the pass stride. The first 8 form the neighbourhood whose mean centres
# the mixture.
SLOT_OFFSETS: tuple[tuple[int, int], ...] = (
    (-1, -1),
    (-1, 0),
    (-1, 1),
    (0, -1),
    (0, 1),
    (1, -1),
    (1, 0),
    (1, 1),
    (-2, 0),
    (2, 0),
    (0, -2),
    (0, 2),
    (-2, -1),
    (-2, 1),
    (-1, -2),
    (-1, 2),
    (1, -2),
    (1, 2),
    (2, -1),
    (2, 1),
)
MEAN_SLOTS = 8
COARSE_STRIDE = 8
SIZE_BINS = 17  # bit length of K~ (2..65535 -> 2..16), one learned bias each


def pass_strides() -> list[int]:
    """Stride of each pass: the coarse lattice, then three phases per finer scale."""
    strides = [COARSE_STRIDE]
    s = COARSE_STRIDE // 2
    while s >= 1:
        strides += [s, s, s]
        s //= 2
    return strides


NUM_PASSES = len(pass_strides())  # 10


@functools.lru_cache(maxsize=4)
def pass_map(h: int, w: int) -> np.ndarray:
    """(h, w) int64: the pass in which each position is coded. Read-only and shared: an encode asks for
    its grid's map at every estimate and section (a millisecond each at 768x512)."""
    ys, xs = np.mgrid[0:h, 0:w]
    out = np.zeros((h, w), np.int64)
    p = 1
    s = COARSE_STRIDE // 2
    while s >= 1:
        my, mx = ys % (2 * s), xs % (2 * s)
        out[(my == s) & (mx == s)] = p  # centres of the known squares
        out[(my == 0) & (mx == s)] = p + 1  # horizontal edges
        out[(my == s) & (mx == 0)] = p + 2  # vertical edges
        p += 3
        s //= 2
    out.flags.writeable = False
    return out


def context_slots(grid: np.ndarray, passes: np.ndarray, ys: np.ndarray, xs: np.ndarray, missing: int) -> np.ndarray:
    """(n, S) neighbour indices of the positions (ys, xs); ``missing`` where the neighbour is outside the
    grid or not decoded before the position's pass. ``grid`` only needs to be valid where decoded."""
    h, w = grid.shape
    own = passes[ys, xs]
    stride = np.asarray(pass_strides())[own]
    out = np.full((len(ys), len(SLOT_OFFSETS)), missing, np.int64)
    for slot, (dy, dx) in enumerate(SLOT_OFFSETS):
        ny, nx = ys + dy * stride, xs + dx * stride
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        cy, cx = np.where(inside, ny, 0), np.where(inside, nx, 0)
        known = inside & (passes[cy, cx] < own)
        out[:, slot] = np.where(known, grid[cy, cx], missing)
    return out


def size_bin(size: int) -> int:
    return min(int(size).bit_length(), SIZE_BINS - 1)
