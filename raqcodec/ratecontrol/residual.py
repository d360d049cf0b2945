"""Rate control for streams with a residual stage (format 3): base size, step level and group count.

Under a budget the bytes go to the base stage's index grid (codebook size K~) and to the residual's
leading coefficient groups at one step level. For each base candidate (the base stage's own budget
choice, and sizes on a ladder of powers of two) the encoder previews the base image with the float
decoder (about 5x faster than the exact one and, on Kodak, at most one level off in 0.2% of the
pixels), transforms the residual once, and scores every (level, group count) that is estimated to fit
by its squared error in the transform domain (the basis is orthonormal, so that is the pixel error
before rounding): no decoder runs per level. Only the winner's base is decoded exactly; its residual is
coded against that image (what the decoder will add it to), and trailing groups are dropped should the
real sizes overrun.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..model.residual import GROUPS, LEVELS, ResidualStage, pad_to_blocks

# Base sizes tried besides the base stage's own choice: each costs a float-decoder preview and an estimate.
# The winners on Kodak at 0.3-1.0 bpp were K~ = 128-512.
SIZE_LADDER = (32, 128, 512)
SECTION_LENGTH_BYTES = 4  # each section's length in the format 3 header
# Levels finer than the finest with every group that are scored with fewer groups. On 6 Kodak images the
# best choice was never more than 3 levels finer (a level is 2^(1/4) in step size).
FINER_LEVELS = 4


@dataclass(frozen=True)
class BaseCandidate:
    size: int
    indices: np.ndarray  # (h * w,) int32
    bits: float  # the index section's bits (real or estimated)
    section: bytes | None = None  # the real index section, when already coded


@dataclass(frozen=True)
class ResidualChoice:
    size: int
    indices: np.ndarray
    index_section: bytes
    level: int | None
    sections: list[bytes]
    error: float  # squared pixel error (transform domain) of what was coded


def _fits(base_bits: float, group_bits: np.ndarray, budget_bits: float) -> int:
    """How many leading groups fit with the base (0..GROUPS), -1 when not even the base does."""
    total = base_bits + np.concatenate([[0.0], np.cumsum(group_bits + 8 * SECTION_LENGTH_BYTES)])
    fitting = np.flatnonzero(total <= budget_bits)
    return int(fitting[-1]) if len(fitting) else -1


class _LevelFit:
    """Per level of one base candidate: its symbols and how many leading groups fit (computed once)."""

    def __init__(
        self, stage: ResidualStage, coefficients: np.ndarray, classes: np.ndarray, base_bits: float, budget_bits: float
    ) -> None:
        self.stage, self.coefficients, self.classes = stage, coefficients, classes
        self.base_bits, self.budget_bits = base_bits, budget_bits
        self._done: dict[int, tuple[int, np.ndarray]] = {}

    def _fit(self, level: int) -> tuple[int, np.ndarray]:
        if level not in self._done:
            symbols = self.stage.quantize(self.coefficients, level)
            bits = self.stage.group_bits(symbols, self.classes, level)
            self._done[level] = (_fits(self.base_bits, bits, self.budget_bits), symbols)
        return self._done[level]

    def groups(self, level: int) -> int:
        """Leading groups that fit at this level (bits grow with the level, for every group)."""
        return self._fit(level)[0]

    def symbols(self, level: int) -> np.ndarray:
        return self._fit(level)[1]


def search(
    stage: ResidualStage,
    target: np.ndarray,
    candidates: list[BaseCandidate],
    budget_bytes: int,
    section_of: Callable[[np.ndarray, int], bytes],
    preview: Callable[[np.ndarray, int], np.ndarray],
    synthesize: Callable[[np.ndarray, int], np.ndarray],
) -> ResidualChoice | None:
    """The closest coding under ``budget_bytes`` (index section + residual sections + their lengths).
    ``target``: the image padded to the base grid (4h x 4w x 3 uint8); ``preview(indices, size)``: a
    candidate's base image as the float decoder gives it (scoring only); ``synthesize(indices, size)``:
    the exact base image, which the winner's residual is coded against."""
    budget_bits = 8.0 * budget_bytes
    padded_target = pad_to_blocks(target)
    # (error, candidate, level, groups): level None is the base stage alone
    best: tuple[float, BaseCandidate, int | None, int] | None = None
    for cand in candidates:
        if cand.bits > budget_bits:
            continue
        base = pad_to_blocks(preview(cand.indices, cand.size))
        coefficients = stage.coefficients(padded_target, base)
        total_energy = float(np.sum(coefficients**2))
        if best is None or total_energy < best[0]:
            best = (total_energy, cand, None, 0)
        levels = _LevelFit(stage, coefficients, stage.classes(base), cand.bits, budget_bits)
        # the finest level at which every group fits (bisection), then finer ones with fewer groups
        lo, hi = -1, LEVELS
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if levels.groups(mid) == GROUPS else (lo, mid)
        for level in range(max(0, lo), min(LEVELS, lo + 1 + FINER_LEVELS)):
            groups = levels.groups(level)
            if groups <= 0:
                break
            error = stage.squared_error(coefficients, levels.symbols(level), level, groups)
            if error < best[0]:
                best = (error, cand, level, groups)
    if best is None:
        return None
    error, cand, chosen, groups = best
    index_section = cand.section if cand.section is not None else section_of(cand.indices, cand.size)
    if len(index_section) > budget_bytes:
        return None
    sections: list[bytes] = []
    if chosen is not None:
        # the winner's residual against the exact base image: what the decoder adds it to
        base = pad_to_blocks(synthesize(cand.indices, cand.size))
        coefficients, classes = stage.coefficients(padded_target, base), stage.classes(base)
        symbols = stage.quantize(coefficients, chosen)
        groups = max(0, min(groups, _LevelFit(stage, coefficients, classes, cand.bits, budget_bits).groups(chosen)))
        sections = stage.encode_groups(symbols, classes, chosen, groups)
        error = stage.squared_error(coefficients, symbols, chosen, len(sections)) if sections else error
    while sections and len(index_section) + sum(len(s) + SECTION_LENGTH_BYTES for s in sections) > budget_bytes:
        sections.pop()  # the estimate was the ideal information: drop the finest detail first
    return ResidualChoice(cand.size, cand.indices, index_section, chosen if sections else None, sections, error)


def ladder_candidates(
    quantize: Callable[[int], np.ndarray],
    estimated_bits: Callable[[int], int],
    size_range: tuple[int, int],
    budget_bytes: int,
) -> list[BaseCandidate]:
    """Nearest-neighbour grids of the ladder's sizes that leave room in the budget."""
    out = []
    for size in SIZE_LADDER:
        if size_range[0] <= size <= size_range[1]:
            bits = float(estimated_bits(size))
            if bits <= 8.0 * budget_bytes:
                out.append(BaseCandidate(size, quantize(size), bits))
    return out
