"""Large images in bounded memory: the networks run on tiles of the latent grid, each with a halo.

Tiling is a computation schedule, not a format feature: a stream still holds one index grid per image.
A tile is a rectangle of the latent grid (its *core*) plus a *halo* of latent rows and columns on every
side that is not an image border. Each network is evaluated on core + halo and only the core of its
output is kept. When the halo is at least the network's receptive-field radius, every kept value depends
only on inputs inside the tile, computed exactly as on the whole grid: the zero padding that a tile sees
at its cut edges never reaches the core. At the true image borders the tile edge is the image edge, and
the zero padding there is the same as the whole image's.

So the exact integer decoder gives bit-identical pixels tiled or not, and the float encoder gives the same
latents up to the last bits of float32 (convolution kernels may sum in a different order for a
different shape).

The budget is in pixels of network output per tile, halo included (``DEFAULT_TILE_PIXELS``, or
``$RAQCODEC_TILE_PIXELS``, or the ``max_tile_pixels`` keyword of the codec); images no larger than it
are processed in one piece, exactly as without tiling.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

# torch is imported only where receptive fields are computed: the CLI checks the budget before it knows
# whether any file needs the model (a rerun that skips every file never imports torch).
if TYPE_CHECKING:
    from torch import nn

# 2 MP (2^17 latent positions) per tile. Measured peak memory per latent position of one evaluation with
# the default model: exact decoder 4.6 KB (float64 activations of 128 channels and temporaries), float
# decoder 3.0 KB, encoder 2.7 KB, refinement 8.9 KB (autograd keeps the activations for the backward pass),
# so refinement gets tiles of REFINE_SHARE times fewer positions: about 0.6 GB per tile at most, whatever
# the image size. Larger tiles would not be faster: the exact decoder's time per pixel is flat from 0.4 to
# 4 MP (1.8-2.3 s/MP on one core), and the halo adds only ~5% to decoding at this size.
DEFAULT_TILE_PIXELS = 1 << 21
REFINE_SHARE = 2
TILE_PIXELS_ENV = "RAQCODEC_TILE_PIXELS"
# Smallest budget accepted (tests force tiling on tiny images with it); see MIN_CORE for what a tile holds.
MIN_TILE_PIXELS = 16 * 16
# A tile's core is at least this many latents on a side even when the halo leaves less room in the
# budget (refinement's halo grows with its step count): correctness first, the budget is then exceeded.
MIN_CORE = 8


def tile_pixels(max_tile_pixels: int | None = None) -> int:
    """The budget in effect: the keyword, else $RAQCODEC_TILE_PIXELS, else DEFAULT_TILE_PIXELS."""
    value: object = max_tile_pixels
    source = "max_tile_pixels"
    if value is None:
        env = os.environ.get(TILE_PIXELS_ENV, "").strip()
        if not env:
            return DEFAULT_TILE_PIXELS
        source = f"${TILE_PIXELS_ENV}"
        try:
            value = int(env)
        except ValueError:
            raise ValueError(f"{source} must be an integer number of pixels, got {env!r}") from None
    if not isinstance(value, int) or isinstance(value, bool) or value < MIN_TILE_PIXELS:
        raise ValueError(f"{source} must be an integer >= {MIN_TILE_PIXELS}, got {value!r}")
    return value


def tile_positions(max_tile_pixels: int | None, downsampling: int) -> int:
    """The budget in latent positions (one position = downsampling^2 output pixels)."""
    return max(1, tile_pixels(max_tile_pixels) // downsampling**2)


@dataclass(frozen=True)
class Tile:
    """Core rows y0:y1, columns x0:x1 of the latent grid, and the outer rectangle (core + halo, clipped
    to the grid) that is computed for it."""

    y0: int
    y1: int
    x0: int
    x1: int
    oy0: int
    oy1: int
    ox0: int
    ox1: int

    @property
    def core(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    @property
    def outer(self) -> tuple[slice, slice]:
        return slice(self.oy0, self.oy1), slice(self.ox0, self.ox1)

    @property
    def inner(self) -> tuple[slice, slice]:
        """The core inside the outer rectangle's own coordinates."""
        return slice(self.y0 - self.oy0, self.y1 - self.oy0), slice(self.x0 - self.ox0, self.x1 - self.ox0)

    @property
    def positions(self) -> int:
        return (self.oy1 - self.oy0) * (self.ox1 - self.ox0)


def _split(n: int, core: int) -> list[tuple[int, int]]:
    """0..n in near-equal consecutive pieces of at most ``core`` (equal pieces waste less halo)."""
    pieces = max(1, math.ceil(n / max(1, core)))
    bounds = [round(i * n / pieces) for i in range(pieces + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def _tiles(grid: tuple[int, int], core: tuple[int, int], halo: int) -> list[Tile]:
    h, w = grid
    return [
        Tile(y0, y1, x0, x1, max(0, y0 - halo), min(h, y1 + halo), max(0, x0 - halo), min(w, x1 + halo))
        for y0, y1 in _split(h, core[0])
        for x0, x1 in _split(w, core[1])
    ]


def plan_tiles(grid: tuple[int, int], max_positions: int, halo: int) -> list[Tile]:
    """Tiles covering ``grid`` (h, w latents), each at most ``max_positions`` with its halo when the
    halo leaves a core of MIN_CORE; one tile when the whole grid fits.

    Two shapes are considered, full-width stripes and near-square tiles. Among those within the budget
    the one that computes fewer positions in all (less halo) wins: stripes for moderate widths, squares
    for very wide images; when neither fits (a halo too large for the budget), the smaller tiles.
    """
    h, w = grid
    if h * w <= max_positions:
        return [Tile(0, h, 0, w, 0, h, 0, w)]
    side = math.isqrt(max_positions)
    stripe_rows = max(MIN_CORE, max_positions // w - 2 * halo)
    square = max(MIN_CORE, side - 2 * halo)
    plans = [_tiles(grid, (stripe_rows, w), halo), _tiles(grid, (square, square), halo)]

    def cost(tiles: list[Tile]) -> tuple[int, int, int]:
        largest = max(t.positions for t in tiles)
        return max(largest, max_positions), sum(t.positions for t in tiles), len(tiles)

    return min(plans, key=cost)


def refine_halo(decoder_halo: int, steps: int) -> int:
    """Halo for tiled refinement (``raqcodec.model.loaded``): a gradient step moves a latent by what the pixels
    within one radius r saw, and those pixels read latents within r, so every step takes 2r off the part
    of the halo that agrees with the whole-image search; the last step's errors need r more. r (2 steps
    + 1) keeps the core exact; it is capped at REFINE_EXACT_STEPS steps' worth (longer searches are
    approximate near tile edges: still valid streams, only a different search)."""
    return decoder_halo * (2 * min(steps, REFINE_EXACT_STEPS) + 1)


# Refinement with up to this many steps gives tiled results equal to the whole-image search (to float
# rounding); the halo for more would make tiles mostly halo.
REFINE_EXACT_STEPS = 4


# -- receptive fields --------------------------------------------------------------------------------


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    from torch import nn

    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("no convolutions found")
    return convs


def _same_radius(conv: nn.Conv2d) -> int:
    """Reach of a stride-1 'same' convolution, in its own grid's units."""
    k = conv.kernel_size[0]
    if conv.kernel_size != (k, k) or conv.stride != (1, 1) or conv.padding != (k // 2, k // 2) or k % 2 == 0:
        raise ValueError(f"unsupported layer for tiling: {conv}")
    return k // 2


def decoder_radius(decoder: nn.Module) -> int:
    """Receptive-field radius of the decoder in latents: a pixel in latent cell (i, j) depends only on
    latents (i', j') with |i - i'| and |j - j'| at most this. The decoder is a chain of stride-1 'same'
    convolutions (residual branches add no reach beyond their convolutions), then a pixel shuffle,
    which is local to a cell, so the radius is the sum of the kernels' half widths: with the default
    architecture 3x3 stem + one 3x3 per residual block + 3x3 head = 2 + blocks."""
    return sum(_same_radius(c) for c in _convs(decoder))


def encoder_radius(encoder: nn.Module, downsampling: int) -> int:
    """Receptive-field radius of the encoder in latents (multiply by ``downsampling`` for pixels): the
    strided stem, then stride-1 convolutions on the latent grid. The stem's output j reads pixels
    s*j - p .. s*j - p + k - 1 of a cell spanning s*j .. s*j + s - 1: it reaches max(p, k - s - p)
    pixels beyond its cell, that is ceil(that / s) latents (1 for the 8x8, stride 4, padding 2 stem)."""
    stem, *rest = _convs(encoder)
    k, s, p = stem.kernel_size[0], stem.stride[0], cast(int, stem.padding[0])
    if stem.kernel_size != (k, k) or stem.stride != (s, s) or stem.padding != (p, p) or s != downsampling:
        raise ValueError(f"unsupported encoder stem for tiling: {stem}")
    stem_reach = math.ceil(max(p, k - s - p, 0) / s)
    return stem_reach + sum(_same_radius(c) for c in rest)
