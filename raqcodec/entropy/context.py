"""Context-model entropy coding of an index grid, exact on every machine.

The frozen context network (``raqcodec.nn.context``) is evaluated in integer arithmetic, so the
frequency tables fed to rANS are the same bits in encoder and decoder whatever the machine, BLAS,
thread count or device.

Exactness argument. Every tensor holds integers: weights at per-tensor scales 2^-s (|w| <= 2^15),
activations at 2^-ACT_BITS, clamped to +-2^21, codewords at the codec's 2^-F (checked below 2^21).
Matrix products run in float64 on such integers: with at most 96 terms per dot product every product and
partial sum stays below 2^52, so each is exact and the result does not depend on summation order or FMA.
Rescaling is a multiplication by a power of two followed by ``floor`` (exact). Everything after the
distances (log-weights, precisions, the exponential, normalisation) is int64 arithmetic with stored
integer look-up tables; no float function (exp, log, pow) is ever evaluated while coding.

Probability of codeword k at one position, in 1/16-nat units:
``t[m,k] = (A_max - A_m) + floor(d2[m,k] * f_m)`` (d2 the squared distance of the projections, below 2^42;
f_m a stored dyadic factor with an 8-bit mantissa, below 2^10, so the product is exact), shifted so the
smallest t is 0 and clamped to the table; ``w_k = sum_m EXP_LUT[t[m,k]]`` (EXP_LUT[t] = round(2^16 e^(-t/16)));
frequencies
``1 + floor(w_k (2^P - K) / sum(w))`` with the remainder given to the first largest ``w_k``: every
codeword keeps a frequency >= 1 and they sum to 2^P exactly. rANS receives them through the same
exact integer-to-weight mapping as the order-0 coder (``raqcodec.entropy.order0``).
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import constriction
import numpy as np
import torch
from torch import Tensor

from ..errors import ContextError
from ..model.exact import quantize_tensor, weight_frac_bits
from ..nn.context import MEAN_SLOTS, NUM_PASSES, SLOT_OFFSETS, ContextNet, context_slots, pass_map, size_bin
from .order0 import EntropyError, check_information
from .schedule import DEFAULT_SCHEDULE, Schedule
from .workers import default_workers, ordered_map

try:  # the C kernel (raqcodec/entropy/_context_kernel.c): the torch path's rows in one pass per position
    from . import _context_kernel as _kernel  # type: ignore[attr-defined]
except ImportError:  # not built (no C compiler at install): the torch path, same bits, slower
    _kernel = None

PREFIX = "context."
ACT_BITS = 12  # activation scale of the integer network
ACT_LIMIT = 2**21
PRECISION = 20  # frequencies sum to 2^20
EXP_STEPS = 256  # EXP_LUT covers t = 0..255 sixteenths of a nat (e^-16 below that)
PROJ_LIMIT = 2**17  # projections and mixture centres are clamped here: squared distances < 2^42
# Precision of a component: e^(j/64) nats per unit squared distance, j in -LOW..HIGH, stored as an exact
# float64 factor with an 8-bit mantissa (so distance x factor is exact) in 1/16 nat per 2^-24 units.
LOG_PREC_BITS = 6  # steps of 1/64 in the log precision (coarser steps cost measurable bits at large K~)
LOG_PREC_LOW, LOG_PREC_HIGH = 8 << LOG_PREC_BITS, 16 << LOG_PREC_BITS
FEATURE_SPLIT = 11  # slot features (|f| <= 2^21) are summed as two float32 halves of 11 bits
_CONSTRICTION_PRECISION = 24

T = TypeVar("T")


# ---------------------------------------------------------------- freezing


def _floor_shift(x: Tensor, bits: int) -> Tensor:
    return torch.floor(x * 2.0**-bits)


@torch.no_grad()
def freeze(net: ContextNet) -> dict[str, Tensor]:
    """Integer tensors of a trained network (the ``context.*`` entries of a model file)."""

    def weight(name: str, value: Tensor) -> dict[str, Tensor]:
        bits = weight_frac_bits(value)
        return {
            name: quantize_tensor(value, bits).to(torch.int32),
            f"{name}_bits": torch.tensor(bits, dtype=torch.int32),
        }

    def bias(name: str, value: Tensor) -> dict[str, Tensor]:
        return {name: quantize_tensor(value, ACT_BITS).clamp(-ACT_LIMIT, ACT_LIMIT).to(torch.int32)}

    t: dict[str, Tensor] = {}
    t |= weight("slot_weight", net.slot_weight)
    t |= weight("proj", net.proj)
    t |= weight("hidden_weight", net.hidden.weight)
    t |= weight("head_weight", net.head.weight)
    t |= bias("missing", net.missing) | bias("pass_bias", net.pass_bias) | bias("size_bias", net.size_bias)
    t |= bias("hidden_bias", net.hidden.bias) | bias("head_bias", net.head.bias)
    steps = torch.arange(EXP_STEPS, dtype=torch.float64)
    t["exp_lut"] = torch.round(2.0**16 * torch.exp(-steps / 16)).to(torch.int64)
    # factor = e^(j/64) * 16 * 2^-24: 1/16 nats per squared distance at 2^-2*ACT_BITS = 2^-24
    j = torch.arange(-LOG_PREC_LOW, LOG_PREC_HIGH + 1, dtype=torch.float64)
    mantissa, exponent = torch.frexp(torch.exp(j / (1 << LOG_PREC_BITS)) * 2.0 ** (4 - 2 * ACT_BITS))
    t["scale_mantissa"] = torch.round(mantissa * 256).to(torch.int64)  # 128..256
    t["scale_exponent"] = (exponent - 8).to(torch.int64)
    t["components"] = torch.tensor(net.cfg.components, dtype=torch.int32)
    return {PREFIX + k: v.contiguous() for k, v in t.items()}


def checksum(tensors: dict[str, Tensor]) -> int:
    """CRC32 over the context tensors (name, dtype, shape, little-endian bytes) and the coding constants.
    A stream carries it, so a decoder with a different context model stops with a clear error."""
    crc = zlib.crc32(f"passes={NUM_PASSES};P={PRECISION};slots={SLOT_OFFSETS}".encode())
    for name in sorted(k for k in tensors if k.startswith(PREFIX)):
        t = tensors[name].contiguous()
        crc = zlib.crc32(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode(), crc)
        crc = zlib.crc32(t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes(), crc)
    return crc


# ---------------------------------------------------------------- the integer model


@dataclass(frozen=True)
class _SizeTables:
    """What depends on the codebook only: per-slot features of every codeword and the projections."""

    # (S * (K + 1), 2H) float32: slot s, codeword k at row s * (K + 1) + k ('missing' = K); the integer
    # feature split as hi * 2^FEATURE_SPLIT + lo, columns [hi | lo] (see ContextModel._hidden_input)
    features: Tensor
    bias: Tensor  # (passes, H) float64: pass bias + this size's bias
    projected: Tensor  # (K + 1, r) float64 integers at 2^-ACT_BITS, row K = 0
    distance_rhs: Tensor  # (r + 2, K) float64: [p_k, 1, |p_k|^2] per column
    single_lut: Tensor  # (c + 1,) float64: EXP_LUT[t] * (2^P - K) for t = 0..c (c: ContextModel.exp_cut)
    pair_lut: Tensor  # ((c + 1)^2,) float64: single_lut[i] + single_lut[j] at i * (c + 1) + j


class ContextModel:
    """The frozen network in integer arithmetic (CPU). Build with the model file's tensors."""

    def __init__(self, tensors: dict[str, Tensor], codebook_bits: int) -> None:
        t = {k[len(PREFIX) :]: v for k, v in tensors.items() if k.startswith(PREFIX)}
        try:
            self.components = int(t["components"])
            self.slot_weight = t["slot_weight"].to(torch.float64)
            self.slot_bits = int(t["slot_weight_bits"])
            self.proj = t["proj"].to(torch.float64)
            self.proj_bits = int(t["proj_bits"])
            self.hidden_weight = t["hidden_weight"].to(torch.float64).t().contiguous()
            self.hidden_bits = int(t["hidden_weight_bits"])
            self.head_weight = t["head_weight"].to(torch.float64).t().contiguous()
            self.head_bits = int(t["head_weight_bits"])
            self.missing = t["missing"].to(torch.int64)
            self.pass_bias = t["pass_bias"].to(torch.int64)
            self.size_bias = t["size_bias"].to(torch.int64)
            self.hidden_bias = t["hidden_bias"].to(torch.int64)
            self.head_bias = t["head_bias"].to(torch.int64)
            self.exp_lut = t["exp_lut"].to(torch.int64)
            self.scale_lut = torch.ldexp(t["scale_mantissa"].to(torch.float64), t["scale_exponent"].to(torch.int64))
        except KeyError as exc:
            raise ValueError(f"context model is incomplete (missing {exc})") from None
        s, h, d = self.slot_weight.shape
        r = self.proj.shape[0]
        m = self.components
        if (
            s != len(SLOT_OFFSETS)
            or self.proj.shape != (r, d)
            or self.hidden_weight.shape != (h, h)
            or self.head_weight.shape != (h, m * (r + 2))
            or self.pass_bias.shape != (NUM_PASSES, h)
            or self.exp_lut.shape != (EXP_STEPS,)
            or self.scale_lut.shape != (LOG_PREC_LOW + LOG_PREC_HIGH + 1,)
            or not bool((self.scale_lut < 2**10).all())
        ):
            raise ValueError("context model tensors have inconsistent shapes")
        self.hidden_size, self.proj_dim, self.codebook_bits = h, r, codebook_bits
        # EXP_LUT is 0 from exp_cut on (e^-11.8 rounds to 0), so t is clamped there: smaller pair tables
        zero = (self.exp_lut == 0).flip(0).cumprod(0).sum()  # length of the run of zeros at the end
        self.exp_cut = min(EXP_STEPS - 1, EXP_STEPS - int(zero))
        self._kernel_lut = self.exp_lut[: self.exp_cut + 1].numpy().copy()
        self.checksum = checksum(tensors)
        self._tables: dict[bytes, _SizeTables] = {}
        self.schedule = DEFAULT_SCHEDULE

    def with_schedule(self, schedule: Schedule) -> ContextModel:
        """This model working to ``schedule`` (``raqcodec.entropy.schedule``): the same bits, other cuts."""
        twin = copy.copy(self)
        twin.schedule = schedule
        return twin

    @property
    def _kernel(self) -> Any:
        """The C kernel when it was built and the schedule uses it, else None (the torch path)."""
        return _kernel if self.schedule.kernel else None

    # -- per codebook ------------------------------------------------------------------------------
    def size_tables(self, codebook: Tensor) -> _SizeTables:
        key = codebook.numpy().tobytes()
        cached = self._tables.get(key)
        if cached is not None:
            return cached
        book = codebook.to(torch.float64)
        if book.abs().max() >= ACT_LIMIT:
            raise ValueError("codebook values exceed the context model's exact range")
        k = book.shape[0]
        feats = _floor_shift(
            torch.einsum("shd,kd->skh", self.slot_weight, book), self.codebook_bits + self.slot_bits - ACT_BITS
        ).clamp(-ACT_LIMIT, ACT_LIMIT)
        feats = torch.cat([feats, self.missing[:, None, :].to(torch.float64)], 1).reshape(-1, self.hidden_size)
        proj = _floor_shift(book @ self.proj.t(), self.codebook_bits + self.proj_bits - ACT_BITS)
        proj = proj.clamp(-PROJ_LIMIT, PROJ_LIMIT).to(torch.int64)
        rhs = torch.cat([proj.t(), torch.ones(1, k, dtype=torch.int64), (proj * proj).sum(1)[None]])
        bias = (self.pass_bias + self.size_bias[size_bin(k)]).to(torch.float64)
        lo = torch.remainder(feats, 2**FEATURE_SPLIT)
        split = torch.cat([(feats - lo) * 2.0**-FEATURE_SPLIT, lo], 1).to(torch.float32)
        single = self.exp_lut[: self.exp_cut + 1].to(torch.float64) * float(_spare(k))  # exact, < 2^36
        tables = _SizeTables(
            features=split.contiguous(),
            bias=bias,
            projected=torch.cat([proj, torch.zeros_like(proj[:1])]).to(torch.float64),
            distance_rhs=rhs.to(torch.float64).contiguous(),
            single_lut=single,
            pair_lut=(single[:, None] + single[None, :]).reshape(-1),
        )
        if len(self._tables) > 16:
            self._tables.clear()
        self._tables[key] = tables
        return tables

    def _hidden_input(self, rows: Tensor, features: Tensor) -> Tensor:
        """(n, H) float64: the sum of each position's slot features. Summed in float32, which has the
        fast embedding_bag kernel, yet exact: the halves of the split are integers below 2^11 in
        magnitude, so 20 of them sum to below 2^16 in any order; recombined in float64."""
        both = torch.nn.functional.embedding_bag(rows, features, mode="sum").to(torch.float64)
        hi, lo = both.split(self.hidden_size, 1)
        return hi.mul_(2.0**FEATURE_SPLIT).add_(lo)

    # -- per position ------------------------------------------------------------------------------
    def mixtures(self, codebook: Tensor, slots: np.ndarray, pass_ids: np.ndarray, sharpness: int = 0) -> Mixtures:
        """The network's output for n positions: their M mixture components (K~-independent work,
        done once per block of a pass). ``sharpness`` is added to every log precision index (units of 1/64 nat):
        the stream's per-image calibration. Runs ``schedule.block_positions`` positions at a time."""
        block = self.schedule.block_positions
        if len(slots) > block:
            blocks = [
                self.mixtures(codebook, slots[i : i + block], pass_ids[i : i + block], sharpness)
                for i in range(0, len(slots), block)
            ]
            return Mixtures(
                rows=torch.cat([b.rows for b in blocks]),
                offset=torch.cat([b.offset for b in blocks]),
                tables=blocks[0].tables,
            )
        tb = self.size_tables(codebook)
        k = codebook.shape[0]
        m, r = self.components, self.proj_dim
        sl = torch.from_numpy(slots)
        # sum of the slots' feature rows: one bag per position over the flattened (slot, codeword) table
        rows = sl + torch.arange(len(SLOT_OFFSETS))[None, :] * (k + 1)
        h1 = self._hidden_input(rows, tb.features)
        h1 = h1.add_(tb.bias[torch.from_numpy(pass_ids)]).clamp_(0, ACT_LIMIT)
        h2 = _floor_shift(h1 @ self.hidden_weight, self.hidden_bits).to(torch.int64) + self.hidden_bias
        h2 = h2.clamp(0, ACT_LIMIT).to(torch.float64)
        out = _floor_shift(h2 @ self.head_weight, self.head_bits).to(torch.int64) + self.head_bias
        out = out.clamp(-ACT_LIMIT, ACT_LIMIT).view(-1, m, r + 2)
        near = sl[:, :MEAN_SLOTS] < k
        # sum of the decoded neighbours' projections ('missing' rows are zero): 8 integers below 2^17
        total = torch.nn.functional.embedding_bag(sl[:, :MEAN_SLOTS], tb.projected, mode="sum").to(torch.int64)
        base = torch.div(total, near.sum(1).clamp(min=1)[:, None], rounding_mode="floor")
        mu = (base[:, None, :] + out[..., :r]).clamp(-PROJ_LIMIT, PROJ_LIMIT).view(-1, r)  # (n*M, r)
        log_prec = torch.div(out[..., r + 1], 2 ** (ACT_BITS - LOG_PREC_BITS), rounding_mode="floor") + sharpness
        factor = self.scale_lut[log_prec.clamp(-LOG_PREC_LOW, LOG_PREC_HIGH) + LOG_PREC_LOW].view(-1, 1)
        # f * |mu - p_k|^2 as one product: f [-2 mu, |mu|^2, 1] . [p_k, 1, |p_k|^2]. Every term is an
        # integer (< 2^50) times the power of two of f's 8-bit mantissa, so the product is exact in any order.
        lhs = torch.cat([-2 * mu, (mu * mu).sum(1, keepdim=True), torch.ones(len(mu), 1, dtype=torch.int64)], 1)
        a = torch.div(out[..., r], 2 ** (ACT_BITS - 4), rounding_mode="floor")
        offset = (a.amax(1, keepdim=True) - a).to(torch.float64).view(-1, 1)
        return Mixtures(
            rows=lhs.to(torch.float64).mul_(factor).view(-1, m, r + 2), offset=offset.view(-1, m, 1), tables=tb
        )

    @staticmethod
    def _distances(mix: Mixtures) -> Tensor:
        """(n*M, K) float64: f_m |mu_m - p_k|^2 for every component and codeword (exact, see ``mixtures``)."""
        return mix.rows.view(-1, mix.rows.shape[2]) @ mix.tables.distance_rhs

    def scaled_weights(self, mix: Mixtures) -> Tensor:
        """(n, K) float64 integers: the weights w_k of the module docstring times (2^P - K), so that
        normalising needs one division (``_normalise``). The torch path, which the C kernel reproduces."""
        tb = mix.tables
        k = tb.distance_rhs.shape[1]
        m = self.components
        x = self._distances(mix)  # (n*M, K)
        # t = floor(x) + offset - (its minimum over (m, k)), clamped to the table, as one integer shift s
        # per row: floor(min x) = min floor(x). x is a multiple of 2^-39 (f's least bit), so x + s is exact
        # wherever it is below 2^13 and rounds to >= c wherever the exact value is (c = exp_cut <= 255,
        # the table is 0 from c on), and it is >= 0: the clamp at c and then truncation (= floor on
        # values >= 0) give exactly min(floor(x) + s, c), which indexes the same table entries.
        offset = mix.offset.reshape(-1, m)
        row_min = x.amin(1).floor_().view(-1, m).add_(offset)
        shift = (offset - row_min.amin(1, keepdim=True)).view(-1, 1)
        t = x.add_(shift).clamp_(max=self.exp_cut).to(torch.int32).view(-1, m, k)
        # sum over components of the table at t, two components per look-up (fewer, cache-resident gathers)
        width = self.exp_cut + 1
        w: Tensor | None = None
        for i in range(0, m, 2):
            if i + 1 < m:
                index = torch.add(t[:, i + 1], t[:, i], alpha=width)
                part = torch.index_select(tb.pair_lut, 0, index.view(-1))
            else:
                part = torch.index_select(tb.single_lut, 0, t[:, i].reshape(-1))
            w = part if w is None else w.add_(part)
        assert w is not None
        return w.view(-1, k)

    def coding_weights(self, mix: Mixtures) -> np.ndarray:
        """(n, K) float64 constriction weights reproducing the integer CDF exactly (``freq * 2^(24 - P) - 1``,
        see raqcodec.entropy.order0)."""
        return self._rows(mix, 1 << (_CONSTRICTION_PRECISION - PRECISION))

    def frequencies(self, codebook: Tensor, slots: np.ndarray, pass_ids: np.ndarray, sharpness: int = 0) -> Tensor:
        """(n, K) int64 frequencies, each row >= 1 and summing to 2^PRECISION."""
        rows = self._rows(self.mixtures(codebook, slots, pass_ids, sharpness), 1)
        return torch.from_numpy(rows).to(torch.int64) + 1

    def _rows(self, mix: Mixtures, unit: int) -> np.ndarray:
        """(n, K) float64: ``unit * frequency - 1``, from the C kernel where it was built, else torch."""
        kernel = self._kernel
        if kernel is None:
            return _normalise(self.scaled_weights(mix), unit=unit).numpy()
        n, k = len(mix.rows), mix.tables.distance_rhs.shape[1]
        out = np.empty((n, k), np.float64)
        kernel.coding_weights(
            self._distances(mix).numpy(),
            mix.offset.numpy(),
            self._kernel_lut,
            out,
            n,
            self.components,
            k,
            self.exp_cut,
            _spare(k),
            unit,
        )
        return out

    def chosen_frequencies(self, mix: Mixtures, chosen: np.ndarray) -> Tensor:
        """(n,) int64: the frequencies the ``chosen`` indices get, without building the rows (what a
        size estimate needs)."""
        kernel = self._kernel
        if kernel is not None:
            n, k = len(mix.rows), mix.tables.distance_rhs.shape[1]
            out = np.empty(n, np.int64)
            kernel.chosen_frequencies(
                self._distances(mix).numpy(),
                mix.offset.numpy(),
                self._kernel_lut,
                np.ascontiguousarray(chosen, np.int64),
                out,
                n,
                self.components,
                k,
                self.exp_cut,
                _spare(k),
            )
            return torch.from_numpy(out)
        scaled = self.scaled_weights(mix)
        total = scaled.sum(1).div_(_spare(scaled.shape[1]))
        picked = torch.from_numpy(chosen)
        freq = 1 + scaled[torch.arange(len(scaled)), picked].div_(total).floor_()
        top = torch.nonzero(scaled.argmax(1) == picked).view(-1)  # only these rows get _normalise's remainder
        if len(top):
            shares = scaled[top].div_(total[top, None]).floor_()
            freq[top] += _spare(scaled.shape[1]) - shares.sum(1)
        return freq.to(torch.int64)


@dataclass(frozen=True)
class Mixtures:
    """The network's output for n positions, ready for the distance product with the codebook."""

    rows: Tensor  # (n, M, r + 2) float64: f_m * [-2 mu_m, |mu_m|^2, 1] per component
    offset: Tensor  # (n, M, 1) float64 integers: A_max - A_m (1/16 nat)
    tables: _SizeTables  # of the codebook they were made for

    def __getitem__(self, part: slice) -> Mixtures:
        return Mixtures(self.rows[part], self.offset[part], self.tables)


def _spare(k: int) -> int:
    """What is left of 2^PRECISION once every codeword has its frequency of 1."""
    return (1 << PRECISION) - k


def _normalise(scaled: Tensor, unit: int) -> Tensor:
    """``unit * frequency - 1`` (held in float64; unit 16 gives constriction's weights) of the integer
    frequencies from ``scaled`` = w * spare (w the integer weights): ``1 + floor(w_k * spare / sum(w))``,
    the remainder to the first largest ``w_k``. Consumes ``scaled``.

    Exact in float64: ``w_k * spare < 2^38`` and sum(w) < 2^31, so the correctly rounded quotient (below
    2^21, rounding error < 2^-32) never crosses the integer ``floor`` lands on (a non-integer quotient
    is at least 1/sum(w) > 2^-31 away from one)."""
    spare = float(_spare(scaled.shape[1]))
    top = scaled.argmax(1)  # first of the largest
    shares = scaled.div_(scaled.sum(1, keepdim=True).div_(spare)).floor_()
    left = spare - shares.sum(1)
    out = shares.mul_(unit).add_(unit - 1)
    out[torch.arange(len(out)), top] += unit * left
    return out


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
    """Rows, columns and ``per_part(mixtures, rows, columns)`` of one pass's positions, part by part
    (``_tasks``; last part first with ``reverse``, the order rANS encodes in).

    Each task evaluates the network once for its parts and then ``per_part`` on each; tasks run ahead on
    the worker pool (``raqcodec.entropy.workers``) and their results come back in order. A position's context
    holds earlier passes only, so every task of a pass can run before any of the pass is decoded;
    ``per_part`` must only read the grid."""
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
    for positions in reversed(_passes(h, w)):  # rANS is a stack: last decoded goes in first
        for ys, xs, weights in _pass_results(
            ctx,
            codebook,
            grid,
            passes,
            positions,
            sharpness,
            lambda mix, _ys, _xs: ctx.coding_weights(mix),
            reverse=True,
        ):
            coder.encode_reverse(grid[ys, xs].astype(np.int32), _model(), weights)
    return sharpness.to_bytes(1, "big", signed=True) + coder.get_compressed().astype(">u4").tobytes()


def _pass_bits(
    ctx: ContextModel, codebook: Tensor, grid: np.ndarray, sharpness: int, sample: int
) -> list[tuple[float, int, int]]:
    """Per pass: information of every ``sample``-th position, how many were scored, how many it has."""
    h, w = grid.shape
    passes = pass_map(h, w)

    def part_bits(mix: Mixtures, ys: np.ndarray, xs: np.ndarray) -> float:
        chosen = ctx.chosen_frequencies(mix, grid[ys, xs])
        return float(PRECISION * len(chosen) - torch.log2(chosen.to(torch.float64)).sum())

    out = []
    for whole in _passes(h, w):
        positions = whole[::sample]
        bits = sum(b for _, _, b in _pass_results(ctx, codebook, grid, passes, positions, sharpness, part_bits))
        out.append((bits, len(positions), len(whole)))
    return out


def ideal_bits(ctx: ContextModel, codebook: Tensor, grid: np.ndarray, sharpness: int = 0, sample: int = 1) -> float:
    """Information content of the grid under the integer model (what rANS spends, minus its flush);
    with ``sample`` > 1, of every ``sample``-th position of each step only."""
    return sum(bits for bits, _, _ in _pass_bits(ctx, codebook, grid, sharpness, sample))


def estimated_bits(ctx: ContextModel, codebook: Tensor, grid: np.ndarray, sharpness: int = 0) -> float:
    """``ideal_bits`` of the whole grid, from at most about ``ctx.schedule.sampled_positions`` positions: each pass's
    sampled bits scaled to the pass. Exact (sample 1) on grids up to that size."""
    sample = sample_step(grid.size, most=ctx.schedule.sampled_positions)
    return sum(
        bits * total / max(1, scored) for bits, scored, total in _pass_bits(ctx, codebook, grid, sharpness, sample)
    )


def best_sharpness(ctx: ContextModel, codebook: Tensor, grid: np.ndarray) -> int:
    """The candidate sharpness with the fewest bits on a sample of the grid (first on ties)."""
    sample = sample_step(grid.size, SHARPNESS_SAMPLE, ctx.schedule.sharpness_positions)
    costs = [ideal_bits(ctx, codebook, grid, s, sample) for s in SHARPNESS_CANDIDATES]
    return SHARPNESS_CANDIDATES[int(np.argmin(costs))]


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
