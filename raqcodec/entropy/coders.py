"""The two ways an index grid becomes the index section: the order-0 table coder and the context model.

Both present the same three operations to the codec and to rate control, so choosing one is a matter of
which object is passed, never of special cases downstream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from torch import Tensor

from . import context, context_coding
from . import order0 as entropy


class IndexCoder(Protocol):
    """What the codec and rate control need of an index coder. ``name`` and ``checksum`` go into the
    container's header (its coder field and context checksum, 0 for none); ``encode`` and ``decode`` are
    exact inverses on every machine; ``estimate_bits`` only steers rate control (a real encode confirms
    every choice) and may be told a similar grid (``like``) whose settings to reuse."""

    @property
    def name(self) -> str: ...

    @property
    def checksum(self) -> int: ...

    def encode(self, grid: np.ndarray, codebook: Tensor) -> bytes: ...

    def estimate_bits(self, grid: np.ndarray, codebook: Tensor, like: np.ndarray | None = None) -> int: ...

    def decode(self, section: bytes, shape: tuple[int, int], codebook: Tensor) -> np.ndarray: ...


# rANS flush and word padding, on top of the information content (measured mean; the estimate only
# steers rate control, which confirms every choice with a real encode)
_FLUSH_BITS = 32


class Order0Coder:
    """One frequency table per image (``raqcodec.entropy.order0``): format version 1's only coder."""

    name = "order0"
    checksum = 0

    def encode(self, grid: np.ndarray, codebook: Tensor) -> bytes:
        return entropy.encode_indices(grid.ravel(), codebook.shape[0])

    def estimate_bits(self, grid: np.ndarray, codebook: Tensor, like: np.ndarray | None = None) -> int:
        return entropy.estimate_section_bits(np.bincount(grid.ravel(), minlength=codebook.shape[0]))

    def decode(self, section: bytes, shape: tuple[int, int], codebook: Tensor) -> np.ndarray:
        return entropy.decode_indices(section, shape[0] * shape[1], codebook.shape[0]).reshape(shape)


@dataclass(frozen=True)
class ContextCoder:
    """The model's context model (``raqcodec.entropy.context``): a sharpness byte, then the rANS payload.

    One coder serves one encode: rate control estimates a grid and then encodes the same grid, so the
    sharpness chosen for a grid is remembered rather than searched for twice.
    """

    model: context.ContextModel
    # An estimate of a grid whose sharpness was not searched borrows the one searched for the nearest size
    # within this factor (1: none; every section written searches its own): the best sharpness moves
    # little between neighbouring sizes, and the search is about two thirds of an estimate's work.
    sharpness_reach: float = 1.0
    _sharpness: dict[tuple[int, bytes], int] = field(default_factory=dict, compare=False, repr=False)
    name = "context"

    @property
    def checksum(self) -> int:
        return self.model.checksum

    def sharpness(self, grid: np.ndarray, codebook: Tensor) -> int:
        key = (codebook.shape[0], np.ascontiguousarray(grid).tobytes())
        if key not in self._sharpness:
            self._sharpness[key] = context_coding.best_sharpness(self.model, codebook, grid)
        return self._sharpness[key]

    def encode(self, grid: np.ndarray, codebook: Tensor) -> bytes:
        return context_coding.encode_grid(self.model, codebook, grid, self.sharpness(grid, codebook))

    def estimate_bits(self, grid: np.ndarray, codebook: Tensor, like: np.ndarray | None = None) -> int:
        """Estimated section bits; with ``like`` (a similar grid, e.g. the nearest-neighbour one of the
        same size), at the sharpness chosen for that grid instead of searching one for ``grid``."""
        sharpness = self._estimate_sharpness(grid if like is None else like, codebook)
        return 8 + int(context_coding.estimated_bits(self.model, codebook, grid, sharpness)) + _FLUSH_BITS

    def _estimate_sharpness(self, grid: np.ndarray, codebook: Tensor) -> int:
        size = codebook.shape[0]
        if (size, np.ascontiguousarray(grid).tobytes()) not in self._sharpness and self.sharpness_reach > 1:
            near = [
                (abs(math.log(searched / size)), sharpness)
                for (searched, _), sharpness in self._sharpness.items()
                if abs(math.log(searched / size)) <= math.log(self.sharpness_reach)
            ]
            if near:
                return min(near)[1]
        return self.sharpness(grid, codebook)

    def decode(self, section: bytes, shape: tuple[int, int], codebook: Tensor) -> np.ndarray:
        return context_coding.decode_grid(self.model, codebook, section, *shape)
