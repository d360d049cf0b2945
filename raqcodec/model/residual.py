"""The residual stage of model v2: what the base stage's image misses, coded in 8x8 blocks (format 3).

Design C of issue 20 (docs/DESIGN.md, "Model v2"): the base stage (RAQ VQ grid and its decoder) gives an
image; the difference between the original and that image is cut into 8x8 RGB blocks, each block (192
values) is turned by a fixed orthonormal transform learned from training residuals (a KLT, i.e. the
eigenvectors of their covariance, strongest first) into coefficients, and the coefficients are
scalar-quantized with one step per stream and coded with frozen Laplacian tables chosen by the
coefficient's index and the base block's activity (how much detail the base image has there). The
coefficients are stored in 16 groups (``GROUP_ENDS``), strongest first, one section each, so dropping trailing
sections (``raqcodec.trim``) removes the finest detail first.

A stream can code the residual in up to 4 *layers*, each at a finer step than the one before and coding
what the earlier layers left (its coefficients minus their dequantized sum), so trimming whole layers
keeps a coarser but complete residual. A coefficient that an earlier layer coded is bounded by that
layer's step, so its table is capped by a frozen scale per (level difference, earlier symbol zero or not).

Everything a decoder computes is integer: the basis is stored as integers at scale 2^-14, steps at
2^-4, the activity class from integer pixel sums and frozen thresholds, the table per (level, class,
coefficient) from a frozen table. Exactness of the inverse transform: |symbol| <= MAX_SYMBOL (2^12 - 1),
step <= 2^10 at 2^-4, so every dequantized value is below 2^22 and the sum over 4 layers below 2^24;
every product with a basis entry (<= 2^14) is below 2^38, and 192 of them sum to below 2^46 < 2^53, so
the float64 matrix product is exact in any order, with or without FMA, on any BLAS.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..entropy.gaussian import SCALE_LEVELS, SCALE_MAX, SCALE_MIN, GaussianTables, freeze_tables
from ..errors import ResidualError
from ..io.bitstream import MAX_LAYER_SECTIONS

BLOCK = 8
COEFFICIENTS = 3 * BLOCK * BLOCK  # 192
# A layer's coefficients are stored in sections: section g holds coefficients GROUP_ENDS[g - 1] ..
# GROUP_ENDS[g] - 1 (strongest first). Small leading groups let a low budget buy the first coefficients
# alone (a block's mean colour, its strongest gradients), which a base grid of a few dozen codewords
# misses most; every multiple of 24 is still an end (with 32 and 64 between), so higher budgets stop
# where they did with 8 groups of 24. Against 8 groups of 24 (benchmarks/residual_groups.py, 4 held-out
# photos and 4 Kodak images, best base size, level and group count per budget): +0.4 to +1.4 dB at
# 0.2-0.3 bpp, +0.2 to +0.8 at 0.5, the same or better at 0.75-1.0.
GROUP_ENDS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 72, 96, 120, 144, 168, 192)
GROUPS = len(GROUP_ENDS)
assert GROUPS == MAX_LAYER_SECTIONS and GROUP_ENDS[-1] == COEFFICIENTS
LEVELS = 32  # step[level] = 2^(6 - level / 4) pixel units: 64 down to 0.37
BASIS_BITS = 14
STEP_BITS = 4
MAX_SYMBOL = (1 << 12) - 1
MAX_STEP = 1 << 10  # at 2^-STEP_BITS
ACTIVITY_CLASSES = 12
# The encoder rounds |c| / step down by this much before rounding (a dead zone: a coefficient just past
# half a step costs more bits than its error saves). Measured on 6 Kodak images (tools: benchmarks/
# residual_fit.py): 0.2 gave the best front of {0, 0.1, 0.2, 0.3}.
DEAD_ZONE = 0.2
# Rate-distortion-optimised quantization: squared error (in steps^2) traded against bits at this rate.
# High-rate theory for a uniform quantizer gives 2 ln 2 / 12 = 0.116 per bit; measured (benchmarks/
# residual_quantization.py, 4-6 held-out training photos and Kodak images), 0.08 gave the best BD-rate of
# 0.04-0.2: -4.5% (held out) and -4.0% (Kodak) against the dead zone.
RD_LAGRANGIAN = 0.08
PREFIX = "residual."
FLUSH_BITS = 32.0  # a section's rANS flush


def step_value(level: int) -> float:
    return 2.0 ** (6 - level / 4)


def step_int(level: int) -> int:
    return int(round(step_value(level) * (1 << STEP_BITS)))


def to_blocks(image: np.ndarray, which: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) with H, W multiples of 8 -> (H/8 * W/8, 192) in block raster order, channel last; with
    ``which`` (block numbers) only those rows."""
    h, w, _ = image.shape
    grid = image.reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK, 3)
    if which is None:
        return grid.transpose(0, 2, 1, 3, 4).reshape(-1, COEFFICIENTS)
    block_row, block_column = np.divmod(which, w // BLOCK)
    return grid[block_row, :, block_column].reshape(-1, COEFFICIENTS)  # advanced indices first: (n, 8, 8, 3)


def from_blocks(blocks: np.ndarray, h: int, w: int) -> np.ndarray:
    return blocks.reshape(h // BLOCK, w // BLOCK, BLOCK, BLOCK, 3).transpose(0, 2, 1, 3, 4).reshape(h, w, 3)


def pad_to_blocks(image: np.ndarray) -> np.ndarray:
    """Edge replication to multiples of 8 (the base image of a stream is a multiple of 4)."""
    h, w, _ = image.shape
    return np.pad(image, ((0, -h % BLOCK), (0, -w % BLOCK), (0, 0)), mode="edge")


def activity(base: np.ndarray, which: np.ndarray | None = None) -> np.ndarray:
    """Integer detail measure per 8x8 block of a padded base image: the sum over the block of the
    absolute differences to the next pixel down and right (RGB summed; the last row/column repeats).
    With ``which`` (block numbers) only those blocks': the encoder ranks candidates on a sample of blocks,
    and gathering their 9x9 neighbourhoods is cheaper than the whole image's differences."""
    # int32 is exact (a block's sum is at most 64 x 2 x 765) and twice as fast as int64: the encoder
    # classifies every candidate's base image
    if which is None:
        x = base.sum(2, dtype=np.int32)
        dy = np.abs(np.diff(x, axis=0, append=x[-1:]))
        dx = np.abs(np.diff(x, axis=1, append=x[:, -1:]))
        h, w = x.shape
        return (dy + dx).reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK).sum((1, 3), dtype=np.int64).reshape(-1)
    block_row, block_column = np.divmod(which, base.shape[1] // BLOCK)
    span = np.arange(BLOCK + 1)  # the block and the row and column after it (the last one repeated)
    rows = np.minimum((BLOCK * block_row)[:, None] + span, base.shape[0] - 1)
    columns = np.minimum((BLOCK * block_column)[:, None] + span, base.shape[1] - 1)
    x = base[rows[:, :, None], columns[:, None, :]].sum(3, dtype=np.int32)
    inner = x[:, :BLOCK, :BLOCK]
    return (np.abs(x[:, 1:, :BLOCK] - inner) + np.abs(x[:, :BLOCK, 1:] - inner)).sum((1, 2), dtype=np.int64)


def activity_thresholds() -> np.ndarray:
    """Class c holds activities in [thr[c-1], thr[c]): half-octave steps of the mean difference per
    pixel and channel (3 channels x 2 directions x 64 pixels per block)."""
    return np.array([int(math.ceil(384 * (2.0 ** ((c + 1) / 2) - 1))) for c in range(ACTIVITY_CLASSES - 1)])


@dataclass
class Coded:
    """What the layers so far coded: per coefficient the level of the latest layer that coded it (-1:
    none), that layer's symbols, and the dequantized sum of every layer (at 2^-STEP_BITS, exact)."""

    level: np.ndarray  # (192,) int64
    symbols: np.ndarray  # (blocks, 192) int64
    values: np.ndarray  # (blocks, 192) int64

    @classmethod
    def nothing(cls, blocks: int) -> Coded:
        zeros = np.zeros((blocks, COEFFICIENTS), dtype=np.int64)
        return cls(np.full(COEFFICIENTS, -1, dtype=np.int64), zeros, zeros.copy())

    def add(self, symbols: np.ndarray, level: int, groups: int, step: int) -> Coded:
        """The state after a layer coding the first ``groups`` groups (symbols beyond them are ignored)."""
        kept = slice(0, coefficients_in(groups))
        level_now, symbols_now, values_now = self.level.copy(), self.symbols.copy(), self.values.copy()
        level_now[kept] = level
        symbols_now[:, kept] = symbols[:, kept]
        values_now[:, kept] += symbols[:, kept] * step
        return Coded(level_now, symbols_now, values_now)


class ResidualStage:
    """The frozen residual stage of a model file (``residual.*`` tensors)."""

    def __init__(self, tensors: dict[str, Tensor]) -> None:
        t = {k[len(PREFIX) :]: v for k, v in tensors.items() if k.startswith(PREFIX)}
        try:
            self.basis = t["basis"].to(torch.float64)  # (192 coefficients, 192 values) at 2^-14
            self.steps = t["steps"].to(torch.int64).numpy()
            self.table_index = t["table_index"].to(torch.int64).numpy()  # (levels, classes, 192)
            self.thresholds = t["activity_thresholds"].to(torch.int64).numpy()
            self.tables = GaussianTables(t["tails"].numpy(), t["freqs"].numpy())
            # (2, LEVELS): table cap by [earlier symbol nonzero][level difference]; absent: one layer only
            caps = t.get("layer_caps")
            self.layer_caps = None if caps is None else caps.to(torch.int64).numpy()
        except KeyError as exc:
            raise ValueError(f"residual stage is incomplete (missing {exc})") from None
        if (
            self.basis.shape != (COEFFICIENTS, COEFFICIENTS)
            or self.steps.shape != (LEVELS,)
            or self.table_index.shape != (LEVELS, ACTIVITY_CLASSES, COEFFICIENTS)
            or self.thresholds.shape != (ACTIVITY_CLASSES - 1,)
        ):
            raise ValueError("residual stage tensors have the wrong shapes")
        if (
            float(self.basis.abs().max()) >= 2**BASIS_BITS
            or self.steps.min() < 1
            or self.steps.max() > MAX_STEP
            or self.table_index.min() < 0
            or self.table_index.max() >= self.tables.levels
            or (
                self.layer_caps is not None
                and (
                    self.layer_caps.shape != (2, LEVELS)
                    or self.layer_caps.min() < 0
                    or self.layer_caps.max() >= self.tables.levels
                )
            )
        ):
            raise ValueError("residual stage tensors are out of range")
        self.analysis = (self.basis * 2.0**-BASIS_BITS).t().contiguous()  # encoder: values -> coefficients

    # -- both sides ------------------------------------------------------------------------------
    def classes(self, base: np.ndarray, which: np.ndarray | None = None) -> np.ndarray:
        """Activity class per block of a padded base image (``which``: of those blocks only)."""
        return np.searchsorted(self.thresholds, activity(base, which), side="right")

    def tables_for(
        self, classes: np.ndarray, level: int, coded: Coded | None = None, columns: slice = slice(None)
    ) -> np.ndarray:
        """(blocks, 192) table index per coefficient at ``level`` (only the coefficients ``columns``), given
        what earlier layers coded: a coefficient they coded is capped by its earlier step (``layer_caps``)."""
        tables = self.table_index[level][:, columns][classes]
        if coded is None or (coded.level < 0).all():
            return tables
        if self.layer_caps is None:
            raise ResidualError("this model's residual stage codes one layer only")
        earlier_level, earlier_symbols = coded.level[columns], coded.symbols[:, columns]
        covered = earlier_level >= 0
        difference = np.where(covered, level - earlier_level, 0)
        if (difference[covered] < 1).any():
            raise ResidualError("corrupt .raq file: a residual layer is not finer than the one before")
        caps = self.layer_caps[(earlier_symbols != 0).astype(np.int64), difference[None, :]]
        return np.where(covered[None, :], np.minimum(tables, caps), tables)

    def reconstruct(self, base: np.ndarray, symbols: np.ndarray, level: int) -> np.ndarray:
        """Padded base image (uint8) + one layer's dequantized residual -> uint8, exactly."""
        return self.reconstruct_values(base, symbols * int(self.steps[level]))

    def reconstruct_values(self, base: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Padded base image (uint8) + the layers' dequantized sum (``Coded.values``) -> uint8, exactly."""
        h, w, _ = base.shape
        if np.abs(values).max(initial=0) >= 1 << 24:
            raise ResidualError("corrupt .raq file: residual values out of range")
        residual = torch.from_numpy(values.astype(np.float64)) @ self.basis  # exact: see the module docstring
        shift = BASIS_BITS + STEP_BITS
        pixels = torch.floor((residual + 2.0 ** (shift - 1)) * 2.0**-shift).numpy()
        out = base.astype(np.int64) + from_blocks(pixels.astype(np.int64), h, w)
        return np.clip(out, 0, 255).astype(np.uint8)

    # -- coding --------------------------------------------------------------------------------------
    def encode_groups(
        self, symbols: np.ndarray, classes: np.ndarray, level: int, groups: int, coded: Coded | None = None
    ) -> list[bytes]:
        """One section per leading group (``GROUP_ENDS``): coefficient-major, then block order."""
        if np.abs(symbols).max(initial=0) > MAX_SYMBOL:
            raise ValueError(f"residual symbols must be within +-{MAX_SYMBOL}")
        return [
            self.tables.encode(
                symbols[:, group_columns(g)].T, self.tables_for(classes, level, coded, group_columns(g)).T
            )
            for g in range(groups)
        ]

    def decode_groups(
        self, sections: list[bytes], classes: np.ndarray, level: int, coded: Coded | None = None
    ) -> np.ndarray:
        tables = self.tables_for(classes, level, coded)
        out = np.zeros(tables.shape, dtype=np.int64)
        for g, section in enumerate(sections):
            try:
                out[:, group_columns(g)] = self.tables.decode(section, tables[:, group_columns(g)].T).T
            except ValueError as exc:
                raise ResidualError(f"corrupt .raq file: residual section {g} ({exc})") from None
        if np.abs(out).max(initial=0) > MAX_SYMBOL:
            raise ResidualError(f"corrupt .raq file: a residual symbol beyond +-{MAX_SYMBOL}")
        return out

    # -- encoder side ----------------------------------------------------------------------------------
    def coefficients(self, target: np.ndarray, base: np.ndarray) -> np.ndarray:
        """Float coefficients (blocks, 192) of target - base (both padded, uint8)."""
        return self.coefficients_of(to_blocks(target.astype(np.float64) - base.astype(np.float64)))

    def coefficients_of(self, blocks: np.ndarray) -> np.ndarray:
        """Float coefficients of (blocks, 192) pixel differences."""
        return (torch.from_numpy(blocks.astype(np.float64)) @ self.analysis).numpy()

    def decode_layers(
        self, sections: list[bytes], layers: Sequence[tuple[int, int]], classes: np.ndarray
    ) -> tuple[Coded, list[np.ndarray]]:
        """Every layer's symbols from its sections (``layers``: (level, groups) each, coarsest first)."""
        coded, symbols, start = Coded.nothing(len(classes)), [], 0
        for level, groups in layers:
            layer = self.decode_groups(sections[start : start + groups], classes, level, coded)
            coded, start = coded.add(layer, level, groups, int(self.steps[level])), start + groups
            symbols.append(layer)
        return coded, symbols

    def quantize(
        self,
        coefficients: np.ndarray,
        level: int,
        classes: np.ndarray | None = None,
        lagrangian: float = RD_LAGRANGIAN,
        coded: Coded | None = None,
        columns: slice = slice(None),
    ) -> np.ndarray:
        """Symbols at ``level`` of ``coefficients`` (blocks, n): the coefficients ``columns`` of each block
        (default all 192). With ``classes`` (the blocks' activity classes) each coefficient takes the
        magnitude among 0, floor and ceil of |c| / step that minimises squared error + lagrangian x step^2
        x its bits under its table (every symbol's bits are independent given its table, so this choice is
        exact per coefficient); without, a dead-zone rounding."""
        scaled = np.abs(coefficients) / (self.steps[level] * 2.0**-STEP_BITS)
        if classes is None:
            magnitude = np.minimum(np.floor(scaled + 0.5 - DEAD_ZONE), MAX_SYMBOL).clip(min=0)
            return (np.sign(coefficients) * magnitude).astype(np.int64)
        return self._rate_distortion_symbols(
            coefficients, scaled, self.tables_for(classes, level, coded, columns), lagrangian
        )[0]

    def _rate_distortion_symbols(
        self, coefficients: np.ndarray, scaled: np.ndarray, table_index: np.ndarray, lagrangian: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """The symbols and each one's bits."""
        sign = np.where(coefficients < 0, -1, 1)
        low = np.minimum(np.floor(scaled), MAX_SYMBOL).astype(np.int64)
        best_magnitude = np.zeros_like(low)
        tables = self.tables.lookup(table_index)
        best_bits = self.tables.magnitude_bits(best_magnitude, sign, tables)
        best_cost = scaled**2 + lagrangian * best_bits
        for magnitude in (low, np.minimum(low + 1, MAX_SYMBOL)):
            bits = self.tables.magnitude_bits(magnitude, sign, tables)
            cost = (scaled - magnitude) ** 2 + lagrangian * bits
            better = cost < best_cost
            best_magnitude = np.where(better, magnitude, best_magnitude)
            best_bits = np.where(better, bits, best_bits)
            best_cost = np.where(better, cost, best_cost)
        return sign * best_magnitude, best_bits

    def group_bits(
        self, symbols: np.ndarray, classes: np.ndarray, level: int, coded: Coded | None = None
    ) -> np.ndarray:
        """Estimated bits of each group's section (ideal information plus a rANS flush)."""
        bits = self.tables.symbol_bits(symbols, self.tables_for(classes, level, coded))
        return np.add.reduceat(bits.sum(0), GROUP_STARTS) + FLUSH_BITS

    def quantize_group(
        self,
        coefficients: np.ndarray,
        group: int,
        level: int,
        classes: np.ndarray,
        lagrangian: float = RD_LAGRANGIAN,
        coded: Coded | None = None,
    ) -> tuple[np.ndarray, float]:
        """Group ``group``'s symbols at ``level`` (``quantize`` with classes) and its estimated section bits
        (``group_bits``): rate control quantizes a layer group by group and stops at the first that does
        not fit, which at low rates spares most of the 192 coefficients."""
        columns = group_columns(group)
        values, tables = coefficients[:, columns], self.tables_for(classes, level, coded, columns)
        scaled = np.abs(values) / (self.steps[level] * 2.0**-STEP_BITS)
        symbols, bits = self._rate_distortion_symbols(values, scaled, tables, lagrangian)
        return symbols, float(bits.sum()) + FLUSH_BITS

    def squared_error(self, coefficients: np.ndarray, symbols: np.ndarray, level: int, groups: int) -> float:
        """Sum of squared pixel errors of the kept groups' quantization and the dropped groups'
        coefficients (orthonormal basis: the pixel error, before rounding and clipping)."""
        step = self.steps[level] * 2.0**-STEP_BITS
        kept = coefficients_in(groups)
        err = np.sum((coefficients[:, :kept] - symbols[:, :kept] * step) ** 2)
        return float(err + np.sum(coefficients[:, kept:] ** 2))


GROUP_STARTS = np.array((0, *GROUP_ENDS[:-1]))


def coefficients_in(groups: int) -> int:
    """How many leading coefficients the first ``groups`` sections of a layer hold."""
    return GROUP_ENDS[groups - 1] if groups > 0 else 0


def group_columns(g: int) -> slice:
    """The coefficients of a layer's section ``g``."""
    return slice(int(GROUP_STARTS[g]), GROUP_ENDS[g])


def layer_caps_tensor(caps: np.ndarray) -> dict[str, Tensor]:
    """The model-file tensor of fitted layer caps (2, LEVELS)."""
    return {f"{PREFIX}layer_caps": torch.from_numpy(np.asarray(caps, dtype=np.int32))}


def freeze(klt: np.ndarray, mean_abs: np.ndarray) -> dict[str, Tensor]:
    """Model-file tensors from a fitted basis (192 x 192, orthonormal rows, strongest first) and the mean
    absolute coefficient per (activity class, coefficient) in pixel units."""
    tails, freqs = freeze_tables("laplace")
    ladder = np.log(SCALE_MIN * (SCALE_MAX / SCALE_MIN) ** (np.arange(SCALE_LEVELS) / (SCALE_LEVELS - 1)))
    index = np.zeros((LEVELS, ACTIVITY_CLASSES, COEFFICIENTS), dtype=np.int32)
    for level in range(LEVELS):
        scale = np.log(np.maximum(mean_abs / step_value(level), 1e-6))
        index[level] = np.abs(scale[..., None] - ladder).argmin(-1)
    return {
        f"{PREFIX}basis": torch.from_numpy(
            np.round(klt * 2.0**BASIS_BITS).clip(-(2**BASIS_BITS) + 1, 2**BASIS_BITS - 1).astype(np.int32)
        ),
        f"{PREFIX}steps": torch.tensor([step_int(level) for level in range(LEVELS)], dtype=torch.int32),
        f"{PREFIX}table_index": torch.from_numpy(index),
        f"{PREFIX}activity_thresholds": torch.from_numpy(activity_thresholds().astype(np.int32)),
        f"{PREFIX}tails": torch.from_numpy(tails),
        f"{PREFIX}freqs": torch.from_numpy(freqs),
    }
