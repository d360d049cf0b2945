"""The budget search of one encode: which codebook size, which refinement step and (model v2) which
residual level and coefficient groups give the closest image whose whole file fits ``bpp``.

``fit_budget(session, bpp)`` is the whole search; ``BudgetSession`` is what it needs of the encode in
hand (the model, the analysed image, the index coder) and caches the work every probe shares. Three
stages, each a module of this package: the largest nearest-neighbour size that fits (``sizes``), the
refinement search along each probed size's refinement path (here), and the residual stage's levels and
groups against the base stage's best (``residual``). Every decision is made on estimated bits and
confirmed by real encodes, so a file never exceeds its budget.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from torch import Tensor

from ..entropy.coders import ContextCoder, IndexCoder
from ..entropy.context_coding import SHARPNESS_START
from ..errors import BudgetError
from ..io.bitstream import Layer
from ..model.loaded import CodecModel
from ..options import DEFAULT_EFFORT, DEFAULT_REFINE_STEPS, MAX_EFFORT
from . import ecvq
from .residual import SIZE_LADDER, BaseCandidate, Ranking, ResidualChoice, add_layer, ladder_candidates
from .sizes import RateChoice, SectionCoder, choose_size

RefinementPath = Iterator[tuple[np.ndarray, float]]  # a refinement path's (indices, MSE) per step, step 0 first


class StageDone(Protocol):
    """Marks the end of (a part of) an encode stage, and which stage follows when not the planned one."""

    def __call__(self, stage: str, then: str | None = None, /) -> None: ...


@dataclass(frozen=True)
class SearchSettings:
    """How far the budget search looks: one of EFFORTS (``--effort``), or others in tests.

    Under a budget, refinement and the codebook size compete for the same bytes: refined indices decode
    closer but are less predictable (5-50% more bits with the context model), and which buys more quality
    per byte differs from image to image. Measured at 0.2 bpp: kodim02 gains 0.6 dB by going from K~ = 262
    with 2 steps to K~ = 190 with 4; kodim20 loses with every step beyond 2. So the encoder searches both
    (``refine_under_budget``), along refinement paths of up to ``refine_steps`` steps...
    """

    refine_steps: int = 8  # longest refinement path searched (0: no refinement under a budget)
    refine_ladder: bool = True  # probe smaller sizes with refinement too (False: the fitting size only)
    size_ladder: float = 2**-0.25
    # ...for images up to this size; larger ones search the steps asked for only (a refinement step takes
    # about 1.3 us per pixel on a 2-core CPU, so half a dozen probes of 8 steps take about 2 minutes at
    # 2 MP and most of an hour at 48 MP).
    max_pixels: int = 1 << 21
    # A budget the model cannot use is reported (``EncodeResult.budget_unused``) when the file takes less
    # than this share of it: near the top of the model's range a file a few percent under is no news.
    unused_share: float = 0.95
    confirm_tries: int = 3  # real encodes per size before its candidates are given up
    # Rate-constrained (entropy-constrained) grids at larger sizes compete with the refined one
    # (``ratecontrol.ecvq``; context coder only, images up to ``max_pixels``): at these multiples of the
    # largest size whose nearest-neighbour grid fits, and then halfway to the best one's neighbours.
    rate_constrained: bool = True
    rate_constrained_factors: tuple[float, ...] = ecvq.SIZE_FACTORS
    rate_constrained_neighbours: bool = True
    # Stop each lambda search at a fitting grid with this share of the budget, narrowing by interpolation
    # (``ecvq.fit_lambda``; None: bisection to the smallest fitting lambda, about twice the passes).
    rate_constrained_fill: float | None = None
    # Skip them where the residual stage already decodes this share closer than the base stage's best (the
    # squared error; inf: never). A rate-constrained grid fills the budget, so it competes as the base stage
    # alone, and on Kodak at 0.3 bpp, where residual layers win, it gained at most 1.5% on the base stage's best.
    rate_constrained_reach: float = math.inf
    # ...and above this budget in bits per latent position (inf: at every budget): on Kodak and held-out
    # photos at 0.3 bpp (4.8 bits a position) they gained at most 1.5% on the base stage's best, and lost
    # on 31 of 34 (up to 0.25 bpp, 4 bits, they gained up to 5.7%; at 0.2 bpp up to 35%).
    rate_constrained_max_rate: float = math.inf
    # A nearest-neighbour grid that wins the residual search beside a residual layer is refined
    # (LADDER_REFINE_STEPS) and scored again, when the settings refine at all.
    refine_residual_winner: bool = True
    # The residual stage (model v2) competes at every budget; False: only when the base stage cannot use
    # the budget (its largest codebook fits), which skips the exact base decodes the competition needs.
    residual_search: bool = True
    # Blocks the residual stage's candidates are scored on (None: every block): the winner's group count
    # is fitted on every block, so a sample only risks a slightly worse choice of base, level and weight.
    residual_sample_blocks: int | None = None
    # Positions a size estimate of the context coder scores at most (None: its schedule's, about 1 MP):
    # estimates only steer the search (real encodes confirm), so the fast levels score fewer.
    estimate_positions: int | None = None
    # The sharpness size estimates score at (``ContextCoder``; None: each grid's, searched).
    estimate_sharpness: int | None = None
    # Rate control takes a fitting codebook size within this factor of the smallest known not to fit
    # (``sizes.choose_size``; 1: the largest that fits): estimates on a sample are only so accurate, and
    # pinning the boundary to one size took 7 estimates on kodim05 at 0.5 bpp.
    size_tolerance: float = 1.0


# Refinement steps for a nearest-neighbour grid that wins the residual search (efforts that refine): kodim23 at 0.3 bpp,
# K~=512 with a residual layer, 32.59 dB as is and 32.70 refined.
LADDER_REFINE_STEPS = 2
RESIDUAL_SAMPLE_BLOCKS = 1536  # a quarter of a 768x512 image's 8x8 blocks
# Share of the budget a rate-constrained grid must fill to end its lambda search at efforts 1 and 2 (the
# bisection to the smallest fitting lambda took 2-3x the context-model passes: kodim04 at 0.2 bpp, effort 2)
RATE_CONSTRAINED_FILL = 0.99
# The most a rate-constrained grid gained on the base stage's best on Kodak at 0.3 bpp, 1.5%, with a margin:
# where a residual layer already wins by more, effort 2 skips the rate-constrained search (effort 3 never).
RATE_CONSTRAINED_REACH = 0.03
# Budgets in bits per latent position above which efforts 1-2 probe no rate-constrained grid (0.275 bpp at
# the 4x4 downsampling of the bundled models): at 0.3 bpp effort 1 gave the same Kodak PSNR as effort 0
# (27.887 dB) in twice the time.
RATE_CONSTRAINED_MAX_RATE = 4.4
# Efforts 0-2 estimate sizes at the sharpness search's start: the search is two thirds of an estimate's
# work, and on Kodak at effort 2 (4096 positions) skipping it gave -0.03 / +0.01 / -0.01 dB at 0.1 / 0.2 /
# 0.3 bpp, choices changing both ways.
ESTIMATE_SHARPNESS = SHARPNESS_START
# How close to the largest fitting codebook size rate control settles at effort 2 (3%: about 0.04 bits a
# latent position).
SIZE_TOLERANCE = 1.03
# Positions a size estimate scores at effort 3 (a third of a 768x512 image's grid): estimates only
# steer, and real encodes confirm; same files as exact estimates on the Kodak images checked, 1.3-1.4x faster.
ESTIMATE_POSITIONS = 8192
# ...and at efforts 0-2 (effort 2 on Kodak: -0.015 / +0.006 / -0.023 dB at 0.1 / 0.2 / 0.3 bpp against 8192)
FAST_ESTIMATE_POSITIONS = 4096

# The encoder's effort levels (``--effort``, ``effort=``), cheapest first; each level does what the one
# below does and more. Times and quality of each on Kodak: docs/DESIGN.md "Effort levels".
EFFORTS: tuple[SearchSettings, ...] = (
    # 0: nearest-neighbour indices at the largest size that fits
    SearchSettings(
        refine_steps=0,
        rate_constrained=False,
        residual_search=False,
        estimate_positions=FAST_ESTIMATE_POSITIONS,
        estimate_sharpness=ESTIMATE_SHARPNESS,
        residual_sample_blocks=RESIDUAL_SAMPLE_BLOCKS,
    ),
    # 1: and a rate-constrained grid of a 4x larger codebook (its lambda fitted until it fills 99% of the
    # budget) up to RATE_CONSTRAINED_MAX_RATE
    SearchSettings(
        refine_steps=0,
        rate_constrained_factors=(4.0,),
        rate_constrained_neighbours=False,
        rate_constrained_fill=RATE_CONSTRAINED_FILL,
        rate_constrained_max_rate=RATE_CONSTRAINED_MAX_RATE,
        residual_search=False,
        estimate_positions=FAST_ESTIMATE_POSITIONS,
        estimate_sharpness=ESTIMATE_SHARPNESS,
        residual_sample_blocks=RESIDUAL_SAMPLE_BLOCKS,
    ),
    # 2 (the default): and two refinement steps at the fitting size, rate-constrained grids at 2x and 4x (as
    # at 1), the residual stage at every budget (its winner not refined: that gained 0.025 dB on Kodak at
    # 0.2-0.3 bpp for a refinement and an encode, ~0.8 s at 768x512). An 8x grid won only at 0.1 bpp (0.04
    # dB on Kodak) and is the costliest probe; refinement over a ladder of sizes gained 0.03-0.05 dB on
    # Kodak and 0.14 on held-out photos at 0.2-0.3 bpp for 25-45% more time: effort 3 has it.
    SearchSettings(
        refine_steps=2,
        refine_ladder=False,
        refine_residual_winner=False,
        rate_constrained_factors=(2.0, 4.0),
        rate_constrained_neighbours=False,
        rate_constrained_fill=RATE_CONSTRAINED_FILL,
        rate_constrained_reach=RATE_CONSTRAINED_REACH,
        rate_constrained_max_rate=RATE_CONSTRAINED_MAX_RATE,
        residual_sample_blocks=RESIDUAL_SAMPLE_BLOCKS,
        estimate_positions=FAST_ESTIMATE_POSITIONS,
        estimate_sharpness=ESTIMATE_SHARPNESS,
        size_tolerance=SIZE_TOLERANCE,
    ),
    # 3: refinement paths of 8 steps over a ladder of sizes, the neighbours of the best rate-constrained
    # size, and the residual stage's candidates scored on every block
    SearchSettings(estimate_positions=ESTIMATE_POSITIONS),
)
assert len(EFFORTS) == MAX_EFFORT + 1


DEFAULT_SEARCH = EFFORTS[DEFAULT_EFFORT]


@dataclass
class BudgetSession:
    """One encode's shared state: the model, the analysed image and the coder, with per-size caches
    (rate control's search and confirmation ask for the same sizes again)."""

    model: CodecModel
    coder: IndexCoder
    rows: Tensor  # the encoder's latent rows (CodecModel.analyse)
    grid: tuple[int, int]  # index grid (h, w)
    rgb: np.ndarray  # the source pixels, unpadded (refinement compares decodes with them)
    padded: np.ndarray  # the source padded to the grid (the residual stage codes its difference)
    adapter: str
    positions: int | None  # tile budget in latent positions (raqcodec.model.tiling)
    _indices: dict[int, np.ndarray] = field(default_factory=dict)
    _estimates: dict[int, int] = field(default_factory=dict)
    _sections: dict[tuple[int, bytes], bytes] = field(default_factory=dict)

    def quantize(self, size: int) -> np.ndarray:
        """Nearest-neighbour indices at ``size``, int32 (rate control keeps a dozen grids: 0.6 GB in int64
        for an 8000x6000 image). The residual stage's ladder sizes come with the first (nested codebooks
        share one product: ``CodecModel.indices_at``)."""
        if size not in self._indices:
            sizes = [size]
            if self.model.residual is not None and not self._indices:
                lo, hi = self.model.size_range
                sizes += [s for s in SIZE_LADDER if lo <= s <= hi]
            for s, found in self.model.indices_at(self.rows, self.adapter, sizes).items():
                self._indices[s] = found.astype(np.int32)
        return self._indices[size]

    def refined(self, size: int, steps: int) -> np.ndarray:
        """Indices after ``steps`` of decoder-aware refinement (``raqcodec.model.refine``)."""
        return self.model.refined_indices(
            self.rows, self.grid, self.rgb, self.adapter, size, steps, self.positions
        ).astype(np.int32)

    def path(self, size: int, steps: int) -> RefinementPath:
        return self.model.refinement_path(self.rows, self.grid, self.rgb, self.adapter, size, steps, self.positions)

    def section(self, indices: np.ndarray, size: int) -> bytes:
        """The index section the coder writes for ``indices`` at ``size`` (each grid coded once: the
        search may ask again for the winner's)."""
        key = (size, hashlib.blake2b(np.ascontiguousarray(indices, np.int32).tobytes(), digest_size=16).digest())
        if key not in self._sections:
            self._sections[key] = self.coder.encode(indices.reshape(self.grid), self.model.codebook(self.adapter, size))
        return self._sections[key]

    def books(self, size: int) -> tuple[Tensor, Tensor]:
        """The (integer, float) codebooks of ``size``."""
        return self.model.codebook(self.adapter, size), self.model.float_codebook(self.adapter, size)

    def preview(self, indices: np.ndarray, size: int) -> np.ndarray:
        """The float decoder's image of ``indices`` at ``size`` (uint8, padded): candidates are scored on it."""
        return self.model.preview(indices, self.grid, self.adapter, size, self.positions)

    def decoded_error(self, indices: np.ndarray, size: int) -> float:
        """The float decoder's MSE of ``indices`` at ``size`` against the source (what refinement measures)."""
        return self.model.decoded_error(indices, self.grid, self.rgb, self.adapter, size)

    def estimated_bits(self, size: int) -> int:
        """Estimated section bits of the nearest-neighbour grid at ``size`` (one estimate per size)."""
        if size not in self._estimates:
            self._estimates[size] = self.coder.estimate_bits(
                self.quantize(size).reshape(self.grid), self.model.codebook(self.adapter, size)
            )
        return self._estimates[size]

    def grid_bits(self, indices: np.ndarray, size: int) -> int:
        """Estimated section bits of any grid at ``size``: a path's step 0 is rate control's estimate;
        refined grids are scored at their size's nearest-neighbour sharpness (no search of their own)."""
        if np.array_equal(indices, self.quantize(size)):
            return self.estimated_bits(size)
        return self.coder.estimate_bits(
            indices.reshape(self.grid),
            self.model.codebook(self.adapter, size),
            like=self.quantize(size).reshape(self.grid),
        )


def refinement_steps(refine: int | None, settings: SearchSettings, searched: bool = True) -> int:
    """Refinement steps of an encode: ``refine`` when given, else the settings' path length under a budget
    (``searched``), at most DEFAULT_REFINE_STEPS at an explicit size or on images too large to search."""
    if refine is not None:
        return refine
    return settings.refine_steps if searched else min(settings.refine_steps, DEFAULT_REFINE_STEPS)


@dataclass
class BudgetFit:
    """What the budget search chose."""

    size: int
    indices: np.ndarray
    section: bytes | None  # None only inside the search (the largest size, not yet coded)
    layers: tuple[Layer, ...] = ()  # the residual stage's layers (none: the base stage alone)
    refinement_sections: tuple[bytes, ...] = ()
    budget_unused: str | None = None  # why the file is well under the budget (the model's limit)
    notes: list[str] = field(default_factory=list)
    choice: ResidualChoice | None = None  # the residual search's, when it won or layers follow


def fit_budget(
    session: BudgetSession,
    bpp: float,
    overhead: int,
    refine: int | None = None,
    settings: SearchSettings = DEFAULT_SEARCH,
    done: StageDone = lambda stage, then=None: None,
    layers: Sequence[float] = (),
) -> BudgetFit:
    """The closest grid (and residual sections) whose file of ``overhead`` bytes plus the sections fits
    ``bpp``; raises BudgetError when even the smallest codebook does not. ``refine``: the longest
    refinement path searched, overriding ``settings.refine_steps`` (None: the settings'; 0: none).
    ``done(stage, then)`` marks the end of (a part of) each stage, for timings, and names the one that
    follows when it is not the planned next (the residual stage ranks its candidates before the
    rate-constrained choice and codes the winner after it). ``layers``: smaller budgets (bpp, ascending)
    that the stream can be trimmed to: the base stage and a first residual layer are chosen for the
    first, each further budget (and ``bpp``) adds a layer coding what the earlier ones left."""
    m = session.model
    if layers:
        if m.residual is None or m.residual.layer_caps is None:
            raise BudgetError(f"model {m.name} has no layered residual stage: it cannot write layers")
        fit = _fit(session, layers[0], overhead, refine, settings, done, keep_coding=True)
        assert fit.choice is not None and fit.choice.coding is not None
        choice = fit.choice
        for budget_bpp in [*layers[1:], bpp]:
            pixels = session.rgb.shape[0] * session.rgb.shape[1]
            choice = add_layer(m.residual, choice, int(budget_bpp * pixels // 8) - overhead)
        done("residual layers")
        fit.layers, fit.refinement_sections = choice.layers, tuple(choice.sections)
        return fit
    return _fit(session, bpp, overhead, refine, settings, done)


def _fit(
    session: BudgetSession,
    bpp: float,
    overhead: int,
    refine: int | None,
    settings: SearchSettings,
    done: StageDone,
    keep_coding: bool = False,
    settle: bool = False,
) -> BudgetFit:
    """``fit_budget`` at one budget; ``keep_coding``: the residual stage searched, and what a further
    layer needs kept (``BudgetFit.choice``). With a residual stage the largest codebook enters its
    search on its estimate alone and is coded only should it win (``settle``: coded first, as without
    one); the rare grid whose real section then overruns starts the search again, settled."""
    m = session.model
    height, width = session.rgb.shape[:2]
    pixels = width * height
    budget = int(bpp * pixels // 8) - overhead

    def describe(lo_bytes: int, hi_bytes: int) -> str:
        lo_bpp, hi_bpp = (lo_bytes + overhead) * 8 / pixels, (hi_bytes + overhead) * 8 / pixels
        if m.residual is not None:  # its residual stage spends any budget above the base stage's smallest file
            return (
                f"{bpp:g} bpp is below the smallest file model {m.name} can write for this image: "
                f"{lo_bpp:.3f} bpp (codebook size {m.size_range[0]})"
            )
        return (
            f"{bpp:g} bpp is below what model {m.name} can reach for this image: "
            f"{lo_bpp:.3f} to {hi_bpp:.3f} bpp (codebook sizes {m.size_range[0]}..{m.size_range[1]})"
        )

    choice = choose_size(
        session.quantize,
        m.size_range,
        budget,
        describe,
        session.section,
        session.estimated_bits,
        settings.size_tolerance,
        settle=settle or m.residual is None,
    )
    size, indices, section = choice.size, choice.indices, choice.section
    done("rate control")
    limited = size == m.size_range[1]  # the largest codebook fits: only refinement can use more
    # small images search a long refinement path (its extra steps take minutes on large ones)
    steps = refinement_steps(refine, settings, searched=pixels <= settings.max_pixels)
    # When the largest codebook fits, a residual stage takes the rest of the budget, and the residual search
    # refines whichever nearest-neighbour grid wins: a refinement path at the largest size (seconds) would
    # only add a candidate that lost on every image checked (same files at 0.3-1.0 bpp, 2-4x faster).
    refinement_searched = bool(steps) and not (limited and m.residual is not None)
    if refinement_searched:

        def largest_fitting(below: int, section_bytes: int) -> int | None:
            try:
                return choose_size(
                    session.quantize,
                    (m.size_range[0], below),
                    section_bytes,
                    describe,
                    session.section,
                    session.estimated_bits,
                    settings.size_tolerance,
                ).size
            except BudgetError:
                return None

        size, indices, section, limited = refine_under_budget(
            choice,
            functools.partial(session.path, steps=steps),
            budget,
            m.size_range,
            session.section,
            session.grid_bits,
            largest_fitting,
            settings,
        )
        done("refinement search")
    fit = BudgetFit(size, indices, section)
    # The residual stage ranks the base stage's best and the ladder's sizes first: where a residual layer
    # already wins by more than a rate-constrained grid can gain, that search is skipped.
    ranking, alone = None, None
    if m.residual is not None and (settings.residual_search or limited or keep_coding):
        ranking = Ranking(m.residual, session.padded, budget, session.preview, settings.residual_sample_blocks)
        # a grid the refinement search chose is not refined again
        settled = refinement_searched or not np.array_equal(indices, session.quantize(size))
        bits = 8.0 * len(section) if section is not None else session.estimated_bits(size)
        alone = ranking.score(BaseCandidate(size, indices, bits, section, settled))
        for cand in ladder_candidates(session.quantize, session.estimated_bits, m.size_range, budget):
            if cand.size != size:
                ranking.score(cand)
    if (
        settings.rate_constrained
        and isinstance(session.coder, ContextCoder)
        and pixels <= settings.max_pixels
        and choice.size < m.size_range[1]
        and 8 * budget <= settings.rate_constrained_max_rate * session.grid[0] * session.grid[1]
        and not (ranking is not None and ranking.residual_gain(alone) > settings.rate_constrained_reach)
    ):
        if ranking is not None:
            done("residual stage", "rate-constrained choice")
        incumbent = session.decoded_error(indices, size)
        constrained = ecvq.search(
            session.coder.model,
            session.rows,
            session.grid,
            choice.size,
            m.size_range[1],
            budget,
            session.books,
            session.section,
            session.decoded_error,
            settings.rate_constrained_factors,
            settings.rate_constrained_neighbours,
            settings.rate_constrained_fill,
        )
        best = constrained[0] if constrained else None
        assert section is not None  # settled: only the largest size is left uncoded, and it fits
        if best is not None and _closer_or_fuller(best.error, len(best.section), incumbent, len(section)):
            fit.size, fit.indices, fit.section = best.size, best.indices, best.section
            if ranking is not None:  # it fills the budget: the residual stage's other candidates compete with it
                ranking.score(BaseCandidate(best.size, best.indices, 8.0 * len(best.section), best.section, True))
        done("rate-constrained choice", "residual stage" if ranking is not None else None)
    if ranking is not None:

        def refine_winner(cand: BaseCandidate) -> BaseCandidate:
            indices = session.refined(cand.size, LADDER_REFINE_STEPS).astype(np.int32)
            section = session.section(indices, cand.size)  # refined grids code worse than estimated
            return BaseCandidate(cand.size, indices, 8.0 * len(section), section, refined=True)

        found = ranking.choose(
            session.section,
            lambda indices, size: m.synthesize(
                indices, m.codebook(session.adapter, size), session.grid, session.positions
            ),
            keep_coding,
            refine_winner if settings.refine_steps and settings.refine_residual_winner else None,
        )
        if found is not None and (found.sections or keep_coding):
            fit.size, fit.indices, fit.section = found.size, found.indices, found.index_section
            fit.layers, fit.refinement_sections, fit.choice = found.layers, tuple(found.sections), found
        done("residual stage")
    if fit.section is None:  # the largest size won alone on its estimate: now it is coded
        fit.section = session.section(fit.indices, fit.size)
        if len(fit.section) > budget:
            return _fit(session, bpp, overhead, refine, settings, done, keep_coding, settle=True)
    used = (len(fit.section) + overhead) * 8 / pixels
    if limited and not fit.refinement_sections and used < settings.unused_share * bpp:
        with_steps = f" with {steps} refinement steps" if steps else " (no refinement)"
        fit.budget_unused = (
            f"--bpp {bpp:g} is more than model {m.name} can use for this image, so the budget "
            f"is not used up: its largest codebook (K~={fit.size}){with_steps} takes {used:.3f} bpp"
        )
        fit.notes.append(fit.budget_unused)
    return fit


# Decoded errors within this ratio (0.01 dB) are a tie: the float decoder that scores candidates is not
# that exact, and of two tied grids the one that spends more of the budget the user asked for wins (kodim13
# at 0.05 bpp: K~ = 2 refined at 0.041 bpp and a rate-constrained K~ = 8 grid at 0.048 bpp, 0.0003 dB apart).
TIE_RATIO = 10 ** (0.01 / 10)


def _closer_or_fuller(error: float, size_bytes: int, incumbent_error: float, incumbent_bytes: int) -> bool:
    """Whether a candidate beats the incumbent: it decodes closer, or as close (TIE_RATIO) with more bytes."""
    return error < incumbent_error or (error <= incumbent_error * TIE_RATIO and size_bytes > incumbent_bytes)


@dataclass(frozen=True)
class _Fit:
    """The closest step of one size's refinement path that fits, and what the next closer one costs."""

    error: float  # the float decoder's MSE
    size: int
    indices: np.ndarray
    section: bytes
    growth: int | None  # estimated bytes of the first closer step that does not fit, over nearest neighbour's


def refine_under_budget(
    choice: RateChoice,
    path: Callable[[int], RefinementPath],
    budget: int,
    size_range: tuple[int, int],
    section_of: SectionCoder,
    estimate_bits: Callable[[np.ndarray, int], int],
    largest_fitting: Callable[[int, int], int | None],
    settings: SearchSettings = DEFAULT_SEARCH,
) -> tuple[int, np.ndarray, bytes, bool]:
    """The refined grid that decodes closest among those whose section fits ``budget`` bytes, and whether
    the model rather than the budget was the limit (the largest size won with every step of its path).

    Probed sizes: ``choice.size`` (the largest whose nearest-neighbour grid fits); then the largest
    smaller size that leaves room for the bytes the first step that did not fit there would add
    (``largest_fitting(below, section_bytes)``); from there sizes ``settings.size_ladder`` times smaller
    until one decodes no closer than the best so far; then halfway (in log size) between the best and each
    probed neighbour. The plain choice stands if nothing refined fits."""
    # rate control codes every size it settles on except the largest, which is never refined here
    assert choice.section is not None
    section: bytes = choice.section
    smallest = size_range[0]
    tried: dict[int, _Fit | None] = {}

    def probe(size: int) -> _Fit | None:
        if size not in tried:
            tried[size] = best_fitting(path(size), size, budget, section_of, estimate_bits, settings.confirm_tries)
        return tried[size]

    def error(size: int) -> float:
        fit = tried.get(size)
        return fit.error if fit is not None else math.inf

    first = probe(choice.size)
    if not settings.refine_ladder:
        if first is None:
            return choice.size, choice.indices, section, False
        return first.size, first.indices, first.section, first.size == size_range[1] and first.growth is None
    size = choice.size
    if first is not None and first.growth is not None and choice.size > smallest:
        size = largest_fitting(choice.size - 1, budget - first.growth) or choice.size
    best, targeted = error(choice.size), True
    while size != choice.size and probe(size) is not None:
        if error(size) >= best and not targeted:
            break  # a rung that decodes no closer (the targeted size always leads on to the ladder)
        best, targeted = min(best, error(size)), False
        smaller = max(smallest, round(size * settings.size_ladder))
        if smaller >= size:
            break
        size = smaller
    ranked = sorted(tried)
    i = ranked.index(min(tried, key=error))
    for neighbour in ranked[max(0, i - 1) : i] + ranked[i + 1 : i + 2]:
        probe(round(math.sqrt(ranked[i] * neighbour)))  # halfway (in log size) to each neighbour
    top = tried[min(tried, key=error)]
    if top is None:
        return choice.size, choice.indices, section, False
    return top.size, top.indices, top.section, top.size == size_range[1] and top.growth is None


def best_fitting(
    path: RefinementPath,
    size: int,
    budget: int,
    section_of: SectionCoder,
    estimate_bits: Callable[[np.ndarray, int], int],
    confirm_tries: int = 3,
) -> _Fit | None:
    """The closest step of a refinement path whose section fits ``budget`` bytes, or None.

    Along the steps that improve on every earlier one the error falls and the bits mostly rise. The
    newest such step is estimated at steps 1, 2, 4, 8...; the path stops at the first that does not fit
    (the rest would not either, and computing them costs most of the search), the last fitting one
    between is found by bisection on the estimates (step 0, nearest neighbour, is taken to fit), and it
    is confirmed by up to ``confirm_tries`` real encodes, stepping back while it does not fit."""
    improving: list[tuple[np.ndarray, float]] = []
    bits: dict[int, int] = {}  # position in ``improving`` -> estimated bits

    def fits(j: int) -> bool:
        if j not in bits:
            bits[j] = estimate_bits(improving[j][0], size)
        return bits[j] <= 8 * budget

    for step, (indices, error) in enumerate(path):
        if not improving or error < improving[-1][1]:
            improving.append((indices, error))
        if step and step & (step - 1) == 0 and not fits(len(improving) - 1):
            break
    lo = max([0] + [j for j in bits if fits(j)])
    hi = min([j for j in bits if not fits(j)], default=len(improving))
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    growth = (bits[hi] - estimate_bits(improving[0][0], size)) // 8 if hi in bits else None
    for j in range(lo, max(-1, lo - confirm_tries), -1):
        indices, error = improving[j]
        section = section_of(indices, size)
        if len(section) <= budget:
            return _Fit(error, size, indices, section, growth)
    return None
