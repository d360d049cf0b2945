"""The two ways an index grid becomes the index section: the order-0 table coder and the context model.

Both present the same three operations to the codec and to rate control, so choosing one is a matter of
which object is passed, never of special cases downstream.
"""

from __future__ import annotations

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
    # The sharpness size estimates score at (None: each grid's own, searched as a written section's is).
    # The search is about two thirds of an estimate's work, and estimates only steer: the fast efforts
    # score at the search's start, the most frequent best on Kodak (a section written still searches its own).
    estimate_sharpness: int | None = None
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
        """Estimated section bits, at ``estimate_sharpness`` when set; else with ``like`` (a similar grid,
        e.g. the nearest-neighbour one of the same size) at the sharpness chosen for that grid instead of
        searching one for ``grid``."""
        if self.estimate_sharpness is not None:
            sharpness = self.estimate_sharpness
        else:
            sharpness = self.sharpness(grid if like is None else like, codebook)
        return 8 + int(context_coding.estimated_bits(self.model, codebook, grid, sharpness)) + _FLUSH_BITS

    def decode(self, section: bytes, shape: tuple[int, int], codebook: Tensor) -> np.ndarray:
        return context_coding.decode_grid(self.model, codebook, section, *shape)
