"""Rate control for refined streams (format 3): base codebook size, step level and refined group count.

A refined stream spends its bytes on two things: the base stage's index grid (size K~) and the refinement
symbols of the first G channel groups at step level L. For a budget the encoder tries base sizes on a
ladder; for each it finds, from estimated bits, the finest level at which all groups fit and the finest
level one step finer at which only leading groups fit, decodes those candidates with the float decoder,
and keeps the one closest to the image. The winner is then coded exactly; should the real section sizes
overrun the budget (the estimate is the ideal information), it steps back one group at a time.

Estimates use the float twin of the prior (``ExactRefinement.float_stage``), which differs from the exact
prior in the last bits only: they choose, the exact encode decides.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from .gaussian_coder import SCALE_LEVELS, SCALE_MAX, SCALE_MIN
from .model import CodecModel
from .refinement import GROUP_CHANNELS, LOG_SCALE_OFFSET, Prior

# Base sizes tried under a budget (a 2^(1/2) ladder) and how finely their neighbourhood is searched.
SIZE_LADDER = (8, 11, 16, 23, 32, 45, 64, 91, 128, 181, 256, 362, 512, 724, 1024)


@dataclass(frozen=True)
class RefinedCandidate:
    size: int
    level: int | None
    groups: int
    bits: float  # estimated bits of the base section plus the refinement sections
    error: float = math.inf  # float decoder's MSE against the image (pixels in [0, 1])


@dataclass(frozen=True)
class RefinedCoding:
    """A refined stream's sections, ready for the container."""

    size: int
    indices: np.ndarray
    index_section: bytes
    level: int | None
    sections: list[bytes]


class RefinementSearch:
    """Everything the search needs about one image, computed once per base size."""

    def __init__(self, model: CodecModel, rows: Tensor, grid: tuple[int, int], target: Tensor,
                 quantize: Callable[[int], np.ndarray], base_bits: Callable[[int], float],
                 codebook: Callable[[int], Tensor]) -> None:
        if model.refinement is None:
            raise ValueError(f"model {model.name} has no refinement stage")
        self.m, self.refinement = model, model.refinement
        self.grid = grid
        h, w = grid
        # the refinement encoder's latents (h*w, d) as (d, h, w), latent units
        self.z = rows.reshape(h, w, -1).permute(2, 0, 1).double().cpu()
        self.target = target  # (1, 3, 4h, 4w) float pixels in [0, 1], padding included
        self.quantize, self.base_bits, self.codebook = quantize, base_bits, codebook
        self._priors: dict[int, tuple[Tensor, Tensor, Tensor]] = {}
        self._bits: dict[tuple[int, int], list[float]] = {}

    # -- estimates ---------------------------------------------------------------------------------
    def _float_prior(self, size: int) -> tuple[Tensor, Tensor, Tensor]:
        """(q1, mean, log sigma) in latent units, float64 (d, h, w)."""
        if size not in self._priors:
            h, w = self.grid
            book = self.codebook(size).to(torch.float64) * 2.0**-self.m.act_frac_bits
            q1 = book[torch.from_numpy(self.quantize(size).astype(np.int64))].reshape(h, w, -1).permute(2, 0, 1)
            with torch.no_grad():
                out = self.refinement.float_stage.prior(q1[None].float())[0].double()
            d = q1.shape[0]
            self._priors[size] = (q1, out[:d], out[d:] - LOG_SCALE_OFFSET)
        return self._priors[size]

    def _symbols(self, size: int, level: int) -> tuple[np.ndarray, np.ndarray]:
        q1, mean, log_sigma = self._float_prior(size)
        frac = self.refinement.frac_bits
        log_step = self.refinement.log_steps[level].double()[:, None, None] * 2.0**-frac
        step = torch.exp(log_step)
        symbols = torch.round((self.z - q1 - mean) / step).to(torch.int64).numpy()
        width = math.log(SCALE_MAX / SCALE_MIN) / (SCALE_LEVELS - 1)
        tables = torch.round((log_sigma - log_step - math.log(SCALE_MIN)) / width).clamp(0, SCALE_LEVELS - 1)
        return symbols, tables.to(torch.int64).numpy()

    def group_bits(self, size: int, level: int) -> list[float]:
        """Estimated bits of each group's section at this base size and level."""
        key = (size, level)
        if key not in self._bits:
            symbols, tables = self._symbols(size, level)
            per_channel = self.refinement.tables.symbol_bits(symbols, tables).reshape(symbols.shape[0], -1).sum(1)
            self._bits[key] = per_channel.reshape(self.refinement.groups, -1).sum(1).tolist()
        return self._bits[key]

    def total_bits(self, size: int, level: int | None, groups: int) -> float:
        refined = 0.0 if level is None else sum(self.group_bits(size, level)[:groups])
        return self.base_bits(size) + refined + 32.0 * groups  # each section's rANS flush

    # -- candidates -----------------------------------------------------------------------------------
    def candidates(self, size: int, budget_bits: float) -> list[RefinedCandidate]:
        """The base stage alone, the finest level with every group, and one level finer with the
        leading groups that fit (when they fit)."""
        base = self.total_bits(size, None, 0)
        if base > budget_bits:
            return []
        found = [RefinedCandidate(size, None, 0, base)]
        groups = self.refinement.groups
        levels = self.refinement.steps.shape[0]
        if self.total_bits(size, 0, groups) > budget_bits:
            fitting = [g for g in range(1, groups) if self.total_bits(size, 0, g) <= budget_bits]
            if fitting:
                found.append(RefinedCandidate(size, 0, fitting[-1], self.total_bits(size, 0, fitting[-1])))
            return found
        lo, hi = 0, levels - 1  # lo fits with every group; find the finest that does
        if self.total_bits(size, hi, groups) <= budget_bits:
            lo = hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self.total_bits(size, mid, groups) <= budget_bits else (lo, mid)
        found.append(RefinedCandidate(size, lo, groups, self.total_bits(size, lo, groups)))
        if lo + 1 < levels:
            partial = [g for g in range(1, groups) if self.total_bits(size, lo + 1, g) <= budget_bits]
            if partial:
                found.append(RefinedCandidate(size, lo + 1, partial[-1], self.total_bits(size, lo + 1, partial[-1])))
        return found

    def error(self, c: RefinedCandidate) -> float:
        """Float decoder's MSE of a candidate against the (padded) image."""
        q1, mean, _ = self._float_prior(c.size)
        device = self.m.device
        with torch.no_grad():
            if c.level is None:  # the base stage: the base decoder on the codewords
                decoded = self.m.float_decoder(q1[None].float().to(device))
            else:
                symbols, _ = self._symbols(c.size, c.level)
                kept = c.groups * GROUP_CHANNELS
                step = torch.exp(self.refinement.log_steps[c.level].double() * 2.0**-self.refinement.frac_bits)
                y = q1 + mean
                y[:kept] += torch.from_numpy(symbols[:kept]).double() * step[:kept, None, None]
                condition = (torch.tensor([c.level + 1], device=device), torch.tensor([c.groups], device=device))
                decoded = self.refinement.float_decoder(y[None].float().to(device), *condition)
        return float(torch.mean((decoded.clamp(0, 1) - self.target) ** 2))

    def best(self, budget_bits: float) -> RefinedCandidate | None:
        """The candidate closest to the image among those estimated to fit: base sizes on the ladder's
        powers of two first, then the ladder's sizes on either side of the best."""
        scored: dict[int, list[RefinedCandidate]] = {}

        def score(size: int) -> None:
            if size in scored or not self.m.size_range[0] <= size <= self.m.size_range[1]:
                return
            scored[size] = [dataclasses.replace(c, error=self.error(c)) for c in self.candidates(size, budget_bits)]

        for size in SIZE_LADDER[::2]:
            score(size)
        found = [c for cs in scored.values() for c in cs]
        if not found:
            return None
        top = min(found, key=lambda c: c.error)
        i = SIZE_LADDER.index(top.size)
        for j in (i - 1, i + 1):
            if 0 <= j < len(SIZE_LADDER):
                score(SIZE_LADDER[j])
        return min((c for cs in scored.values() for c in cs), key=lambda c: c.error)

    # -- the real encode --------------------------------------------------------------------------------
    def exact_prior(self, size: int) -> tuple[Tensor, Prior]:
        h, w = self.grid
        book = self.codebook(size).to(torch.float64)
        q1 = book[torch.from_numpy(self.quantize(size).astype(np.int64))].reshape(h, w, -1).permute(2, 0, 1)
        q1 = q1.contiguous()
        return q1, self.refinement.prior(q1)

    def error_of(self, coding: RefinedCoding) -> float:
        """Float MSE of what was coded (groups dropped after the exact encode included)."""
        return self.error(RefinedCandidate(coding.size, coding.level, len(coding.sections), 0.0))

    def encode(self, c: RefinedCandidate, index_section: bytes) -> RefinedCoding:
        sections: list[bytes] = []
        if c.level is not None and c.groups:
            q1, prior = self.exact_prior(c.size)
            symbols = self.refinement.quantize(self.z.float(), q1, prior, c.level)
            sections = self.refinement.encode_groups(symbols, prior, c.level, c.groups)
        return RefinedCoding(c.size, self.quantize(c.size), index_section, c.level, sections)


def search_and_encode(search: RefinementSearch, budget_bytes: int,
                      section_of: Callable[[np.ndarray, int], bytes]) -> RefinedCoding | None:
    """The closest candidate under ``budget_bytes`` (sections plus their lengths in the header), coded
    exactly. The estimate is the ideal information, so the real sections can overrun it by a few bytes:
    then trailing groups go one at a time (the base stage alone last). None when nothing fits."""
    best = search.best(8.0 * budget_bytes)
    if best is None:
        return None
    index_section = section_of(search.quantize(best.size), best.size)
    coding = search.encode(best, index_section)
    while True:
        used = len(index_section) + sum(len(x) + 4 for x in coding.sections)
        if used <= budget_bytes:
            return coding
        if not coding.sections:
            return None
        kept = coding.sections[:-1]
        coding = RefinedCoding(coding.size, coding.indices, index_section, coding.level if kept else None, kept)


def _group(g: int) -> slice:
    return slice(g * GROUP_CHANNELS, (g + 1) * GROUP_CHANNELS)
