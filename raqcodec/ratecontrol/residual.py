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

A layered stream (``add_layer``) then codes what the layers so far left, at a finer level, under a larger
budget: trimming the stream back to an earlier budget gives exactly the file coded for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..io.bitstream import Layer
from ..model.residual import (
    COEFFICIENTS,
    FLUSH_BITS,
    GROUPS,
    LEVELS,
    RD_LAGRANGIAN,
    STEP_BITS,
    Coded,
    ResidualStage,
    pad_to_blocks,
    to_blocks,
)

# Base sizes tried besides the base stage's own choice: each costs a float-decoder preview and an estimate.
# The winners on Kodak at 0.3-1.0 bpp were K~ = 128-512.
SIZE_LADDER = (32, 64, 128, 256, 512)
SECTION_LENGTH_BYTES = 4  # each section's length in the format 3 header
LAYER_BYTES = 2  # each layer's level and section count in the format 3 header
# Levels finer than the finest with every group that are scored with fewer groups. With 8 groups of 24
# the best choice on 6 Kodak images was never more than 3 levels finer (a level is 2^(1/4) in step
# size); the finer groups make fewer coefficients at a finer step a real choice, so 6 are scored for a
# layer that is coded...
FINER_LEVELS = 6
# ...and 3 where base candidates are ranked (on a sample of blocks): Kodak at effort 2 gave the same PSNR
# at 0.1 bpp, -0.001 dB at 0.2 and +0.004 at 0.3 (one image changed at each), for a fifth fewer level fits
RANKING_FINER_LEVELS = 3
# Rate weights (multiples of RD_LAGRANGIAN) also tried where the budget cuts a layer's groups short: a
# stronger weight zeroes more marginal coefficients, so more groups fit (kodim20 at 0.3 bpp, base
# K~ = 128: 2x fits a seventh group and decodes 0.5 dB closer than 1x with six).
BUDGET_WEIGHTS = (2.0, 4.0)
# Candidates are ranked on this share of the budget: the winner is coded against the exact base image and
# its real index section, so a group that fits the preview's estimate by a few bytes may not fit then,
# and a ranking on such a knife edge picks a coding that loses a group (kodim20 at 0.3 bpp: 0.7 dB).
RANKING_SHARE = 0.99
SQUARED_DIFFERENCE_ROWS = 512  # image rows per stripe of ``squared_difference`` (9 MB of float64 at 768 wide)


@dataclass(frozen=True)
class BaseCandidate:
    size: int
    indices: np.ndarray  # (h * w,) int32
    bits: float  # the index section's bits (real or estimated)
    section: bytes | None = None  # the real index section, when already coded
    refined: bool = False  # a refined grid (the search refines a nearest-neighbour winner once)


@dataclass(frozen=True)
class Coding:
    """The exact base image's residual coefficients, its blocks' classes and what the layers coded: what
    a further layer starts from."""

    coefficients: np.ndarray
    classes: np.ndarray
    coded: Coded

    def remaining(self) -> np.ndarray:
        return self.coefficients - self.coded.values * 2.0**-STEP_BITS


@dataclass(frozen=True)
class ResidualChoice:
    size: int
    indices: np.ndarray
    index_section: bytes
    layers: tuple[Layer, ...]
    sections: list[bytes]
    error: float  # squared pixel error (transform domain) of what was coded
    coding: Coding | None = None  # kept when asked for (further layers)

    def bytes(self) -> int:
        """Index section, residual sections and their header entries."""
        return (
            len(self.index_section)
            + sum(len(s) + SECTION_LENGTH_BYTES for s in self.sections)
            + LAYER_BYTES * len(self.layers)
        )


def squared_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Sum of squared differences of two uint8 images: dot products of integers, stripe by stripe, exact
    in float64 (each term at most 255^2, the sum below 2^53 for any image raqcodec codes). numpy's own
    loop, not BLAS: OpenBLAS threads spinning after a large dot product slowed the next float-decoder
    preview by a third (the torch threads share the cores)."""
    total = 0.0
    for rows in range(0, len(a), SQUARED_DIFFERENCE_ROWS):  # in stripes: no whole-image float64 copy
        stripe = slice(rows, rows + SQUARED_DIFFERENCE_ROWS)
        difference = np.subtract(a[stripe], b[stripe], dtype=np.int16).ravel().astype(np.float64)
        total += float(np.einsum("i,i->", difference, difference))
    return total


def _fits(base_bits: float, group_bits: np.ndarray, budget_bits: float) -> int:
    """How many leading groups fit with the base (0..GROUPS), -1 when not even the base does."""
    total = base_bits + np.concatenate([[0.0], np.cumsum(group_bits + 8 * SECTION_LENGTH_BYTES)])
    total[1:] += 8 * LAYER_BYTES
    fitting = np.flatnonzero(total <= budget_bits)
    return int(fitting[-1]) if len(fitting) else -1


@dataclass(frozen=True)
class Quantization:
    """One way to code a layer: its step level, the RDOQ rate weight, and how many leading groups fit."""

    level: int
    lagrangian: float
    groups: int


class _LevelFit:
    """Per (level, rate weight) of one base candidate: its symbols and how many leading groups fit
    (computed once). With ``stride`` > 1 the blocks given are every stride-th of the image, and their bits
    and error count ``stride`` times: an estimate for ranking candidates at a fraction of the work."""

    def __init__(
        self,
        stage: ResidualStage,
        coefficients: np.ndarray,
        classes: np.ndarray,
        base_bits: float,
        budget_bits: float,
        coded: Coded | None = None,
        stride: int = 1,
    ) -> None:
        assert stride == 1 or coded is None, "a further layer is fitted on every block"
        self.stage, self.coefficients, self.classes = stage, coefficients, classes
        self.base_bits, self.budget_bits, self.coded, self.stride = base_bits, budget_bits, coded, stride
        self._done: dict[tuple[int, float], tuple[int, np.ndarray]] = {}

    def _fit(self, level: int, lagrangian: float) -> tuple[int, np.ndarray]:
        """Quantizes group by group until one does not fit. The symbols kept are those of the groups
        quantized, (blocks, their coefficients): every use reads the fitting groups only, and a cache of
        whole (blocks, 192) layers per level tried took 18 GB on an 8000x6000 image."""
        if (level, lagrangian) not in self._done:
            groups: list[np.ndarray] = []
            group_bits: list[float] = []
            fitting = _fits(self.base_bits, np.zeros(0), self.budget_bits)
            while fitting == len(group_bits) < GROUPS:
                symbols, bits = self.stage.quantize_group(
                    self.coefficients, len(groups), level, self.classes, lagrangian, self.coded
                )
                groups.append(symbols)
                group_bits.append((bits - FLUSH_BITS) * self.stride + FLUSH_BITS)
                fitting = _fits(self.base_bits, np.array(group_bits), self.budget_bits)
            kept = np.concatenate(groups, axis=1) if groups else np.zeros((len(self.coefficients), 0), np.int64)
            self._done[level, lagrangian] = (fitting, kept)
        return self._done[level, lagrangian]

    def groups(self, level: int, lagrangian: float = RD_LAGRANGIAN) -> int:
        """Leading groups that fit at this level (bits grow with the level, for every group)."""
        return self._fit(level, lagrangian)[0]

    def symbols(self, level: int, lagrangian: float = RD_LAGRANGIAN) -> np.ndarray:
        return self._fit(level, lagrangian)[1]

    def error(self, quantization: Quantization) -> float:
        symbols = self.symbols(quantization.level, quantization.lagrangian)
        error = self.stage.squared_error(self.coefficients, symbols, quantization.level, quantization.groups)
        return error * self.stride

    def best_at(self, level: int) -> tuple[float, Quantization] | None:
        """The closest coding at ``level``, over the rate weights."""
        best: tuple[float, Quantization] | None = None
        for weight in (1.0, *BUDGET_WEIGHTS):
            groups = self.groups(level, RD_LAGRANGIAN * weight)
            if groups > 0:
                got = Quantization(level, RD_LAGRANGIAN * weight, groups)
                error = self.error(got)
                if best is None or error < best[0]:
                    best = (error, got)
        return best

    def best(self, lowest: int, finer: int = FINER_LEVELS) -> tuple[float, Quantization] | None:
        """The closest coding at ``lowest`` or a finer level, with its error: the finest level at which
        every group fits (bisection), then up to ``finer`` finer ones with fewer groups; then, where the
        budget cut the groups short, the best level and the one below at stronger rate weights (fewer
        bits per group, so more groups)."""
        lo, hi = lowest - 1, LEVELS
        if self.groups(lowest) < GROUPS:  # bits only grow with the level: no finer level fits them all
            hi = lowest
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self.groups(mid) == GROUPS else (lo, mid)
        best: tuple[float, Quantization] | None = None
        for level in range(max(lowest, lo), min(LEVELS, lo + 1 + finer)):
            groups = self.groups(level)
            if groups <= 0:
                break
            got = Quantization(level, RD_LAGRANGIAN, groups)
            error = self.error(got)
            if best is None or error < best[0]:
                best = (error, got)
        if best is None or best[1].groups == GROUPS:
            return best
        for level in range(max(lowest, best[1].level - 1), best[1].level + 1):
            for weight in BUDGET_WEIGHTS:
                groups = self.groups(level, RD_LAGRANGIAN * weight)
                if groups > 0:
                    got = Quantization(level, RD_LAGRANGIAN * weight, groups)
                    error = self.error(got)
                    if error < best[0]:
                        best = (error, got)
        return best


class Ranking:
    """Base candidates scored for the residual search, as they come: the closest coding of the budget so
    far, the base stage alone or with a residual layer. ``target``: the image padded to the base grid
    (4h x 4w x 3 uint8); ``preview(indices, size)``: a candidate's base image as the float decoder gives
    it (scoring only). ``sample_blocks``: score on about this many evenly spaced blocks (None: every
    block); the winner's group count is then fitted on every block (``choose``)."""

    def __init__(
        self,
        stage: ResidualStage,
        target: np.ndarray,
        budget_bytes: int,
        preview: Callable[[np.ndarray, int], np.ndarray],
        sample_blocks: int | None = None,
    ) -> None:
        self.stage, self.budget_bytes, self.preview = stage, budget_bytes, preview
        self.padded_target = pad_to_blocks(target)
        # the blocks scored (their errors and bits count ``stride`` times), the same for every candidate
        blocks = self.padded_target.size // COEFFICIENTS
        self.stride = 1 if sample_blocks is None else max(1, blocks // sample_blocks)
        self.scored = None if self.stride == 1 else np.arange(0, blocks, self.stride)
        self._target_blocks = to_blocks(self.padded_target, self.scored).astype(np.float64)
        # (error, candidate, quantization): None is the base stage alone
        self.best: tuple[float, BaseCandidate, Quantization | None] | None = None

    def score(self, cand: BaseCandidate) -> float | None:
        """Scores ``cand``; returns its base image's squared error alone (None: it does not fit)."""
        budget_bits = 8.0 * self.budget_bytes
        if cand.bits > budget_bits:
            return None
        base = pad_to_blocks(self.preview(cand.indices, cand.size))
        alone = squared_difference(self.padded_target, base)  # the coefficients' too (orthonormal basis)
        if self.best is None or alone < self.best[0]:
            self.best = (alone, cand, None)
        # only the blocks scored are transformed and classified
        coefficients = self.stage.coefficients_of(self._target_blocks - to_blocks(base, self.scored))
        classes = self.stage.classes(base, self.scored)
        fit = _LevelFit(self.stage, coefficients, classes, cand.bits, budget_bits * RANKING_SHARE, stride=self.stride)
        found = fit.best(0, RANKING_FINER_LEVELS)
        if found is not None and found[0] < self.best[0]:
            self.best = (found[0], cand, found[1])
        return alone

    def residual_gain(self, alone: float | None) -> float:
        """The share of ``alone`` (a base image's squared error, from ``score``) by which the best coding
        with a residual layer so far is closer: 0 when none is."""
        if self.best is None or self.best[2] is None or not alone:
            return 0.0
        return 1.0 - self.best[0] / alone

    def choose(
        self,
        section_of: Callable[[np.ndarray, int], bytes],
        synthesize: Callable[[np.ndarray, int], np.ndarray],
        keep_coding: bool = False,
        refine: Callable[[BaseCandidate], BaseCandidate] | None = None,
    ) -> ResidualChoice | None:
        """The winner, coded: ``section_of(indices, size)`` its index section (when not coded yet);
        ``synthesize(indices, size)``: the exact base image, which its residual is coded against.
        ``keep_coding``: keep what ``add_layer`` needs, even when the base stage alone wins. ``refine``: a
        nearest-neighbour candidate's refined grid (with its bits), scored when a candidate not yet
        refined (``BaseCandidate.refined``) wins with a residual."""
        stage, budget_bytes, budget_bits = self.stage, self.budget_bytes, 8.0 * self.budget_bytes
        if refine is not None and self.best is not None and self.best[2] is not None and not self.best[1].refined:
            # a nearest-neighbour grid won beside a residual: refined, it may decode closer
            self.score(refine(self.best[1]))
        if self.best is None:
            return None
        error, cand, chosen = self.best
        index_section = cand.section if cand.section is not None else section_of(cand.indices, cand.size)
        if len(index_section) > budget_bytes:
            return None
        if chosen is None and not keep_coding:
            return ResidualChoice(cand.size, cand.indices, index_section, (), [], error)
        # the winner's residual against the exact base image: what the decoder adds it to
        base = pad_to_blocks(synthesize(cand.indices, cand.size))
        classes = stage.classes(base)
        coefficients = stage.coefficients(self.padded_target, base)
        sections: list[bytes] = []
        layers: tuple[Layer, ...] = ()
        if chosen is not None:
            # the winner's level is fitted again on the exact base with the index section's real size: a
            # group that fitted by a few bytes on the preview may not, and a stronger weight may then fit it
            fit = _LevelFit(stage, coefficients, classes, 8.0 * len(index_section), budget_bits)
            level, lagrangian = chosen.level, chosen.lagrangian
            groups = max(0, fit.groups(level, lagrangian))
            if groups < chosen.groups:
                final = fit.best_at(chosen.level)
                if final is not None:
                    lagrangian, groups = final[1].lagrangian, final[1].groups
            symbols = fit.symbols(level, lagrangian)
            sections = _within(stage.encode_groups(symbols, classes, level, groups), budget_bytes - len(index_section))
            if sections:
                error = stage.squared_error(coefficients, symbols, level, len(sections))
                layers = (Layer(level, len(sections)),)
        coding = None
        if keep_coding:  # what a further layer starts from (two (blocks, 192) int64 arrays: built only then)
            coded = Coded.nothing(len(classes))
            if layers:
                coded = coded.add(symbols, level, len(sections), int(stage.steps[level]))
            coding = Coding(coefficients, classes, coded)
        return ResidualChoice(cand.size, cand.indices, index_section, layers, sections, error, coding)


def search(
    stage: ResidualStage,
    target: np.ndarray,
    candidates: list[BaseCandidate],
    budget_bytes: int,
    section_of: Callable[[np.ndarray, int], bytes],
    preview: Callable[[np.ndarray, int], np.ndarray],
    synthesize: Callable[[np.ndarray, int], np.ndarray],
    keep_coding: bool = False,
    sample_blocks: int | None = None,
    refine: Callable[[BaseCandidate], BaseCandidate] | None = None,
) -> ResidualChoice | None:
    """The closest coding under ``budget_bytes`` (index section + residual sections + their lengths) of
    ``candidates``: ``Ranking`` scores them all and codes the winner (its arguments)."""
    ranking = Ranking(stage, target, budget_bytes, preview, sample_blocks)
    for cand in candidates:
        ranking.score(cand)
    return ranking.choose(section_of, synthesize, keep_coding, refine)


def _within(sections: list[bytes], budget_bytes: int) -> list[bytes]:
    """Leading sections of one layer that fit ``budget_bytes`` with their header entries: the estimate
    was the ideal information, so the real sizes may overrun; the finest detail goes first."""
    sections = list(sections)
    while sections and sum(len(s) + SECTION_LENGTH_BYTES for s in sections) + LAYER_BYTES > budget_bytes:
        sections.pop()
    return sections


def add_layer(stage: ResidualStage, choice: ResidualChoice, budget_bytes: int) -> ResidualChoice:
    """``choice`` plus a layer, finer than its last, coding what its layers left under ``budget_bytes``
    (the whole stream's index and residual sections); ``choice`` itself when no layer fits."""
    assert choice.coding is not None, "search(..., keep_coding=True) keeps what a further layer needs"
    coding = choice.coding
    used = choice.bytes()
    remaining = coding.remaining()
    lowest = choice.layers[-1].level + 1 if choice.layers else 0
    if lowest >= LEVELS:
        return choice
    fit = _LevelFit(stage, remaining, coding.classes, 8.0 * used, 8.0 * budget_bytes, coding.coded)
    found = fit.best(lowest)
    if found is None or found[0] >= float(np.sum(remaining**2)):
        return choice
    level, groups = found[1].level, found[1].groups
    symbols = fit.symbols(level, found[1].lagrangian)
    sections = _within(stage.encode_groups(symbols, coding.classes, level, groups, coding.coded), budget_bytes - used)
    if not sections:
        return choice
    error = stage.squared_error(remaining, symbols, level, len(sections))
    coded = coding.coded.add(symbols, level, len(sections), int(stage.steps[level]))
    return ResidualChoice(
        choice.size,
        choice.indices,
        choice.index_section,
        (*choice.layers, Layer(level, len(sections))),
        [*choice.sections, *sections],
        error,
        Coding(coding.coefficients, coding.classes, coded),
    )


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
