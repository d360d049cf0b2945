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
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .scan import MEAN_SLOTS, NUM_PASSES, SLOT_OFFSETS, size_bin
from .schedule import DEFAULT_SCHEDULE, Schedule

try:  # the C kernel (raqcodec/entropy/_context_kernel.c): the torch path's rows in one pass per position
    from . import _context_kernel as _kernel  # type: ignore[attr-defined]
except ImportError:  # not built (no C compiler at install): the torch path, same bits, slower
    _kernel = None

PREFIX = "context."
ACT_BITS = 12  # activation scale of the integer network
ACT_LIMIT = 2**21
PRECISION = 20  # frequencies sum to 2^20
EXP_STEPS = 256  # EXP_LUT covers t = 0..255 sixteenths of a nat (e^-16 below that)
TABLES_BYTES = 256 << 20  # per-codebook tables kept (``ContextModel.size_tables``)
PROJ_LIMIT = 2**17  # projections and mixture centres are clamped here: squared distances < 2^42
# Precision of a component: e^(j/64) nats per unit squared distance, j in -LOW..HIGH, stored as an exact
# float64 factor with an 8-bit mantissa (so distance x factor is exact) in 1/16 nat per 2^-24 units.
LOG_PREC_BITS = 6  # steps of 1/64 in the log precision (coarser steps cost measurable bits at large K~)
LOG_PREC_LOW, LOG_PREC_HIGH = 8 << LOG_PREC_BITS, 16 << LOG_PREC_BITS
FEATURE_SPLIT = 11  # slot features (|f| <= 2^21) are summed as two float32 halves of 11 bits
_CONSTRICTION_PRECISION = 24


# ---------------------------------------------------------------- freezing


def _floor_shift(x: Tensor, bits: int) -> Tensor:
    return torch.floor(x * 2.0**-bits)


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

    def nbytes(self) -> int:
        parts = (self.features, self.bias, self.projected, self.distance_rhs, self.single_lut, self.pair_lut)
        return sum(t.numel() * t.element_size() for t in parts)


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
        cached = self._tables.pop(key, None)
        if cached is not None:
            self._tables[key] = cached  # most recently used last
            return cached
        book = codebook.to(torch.float64)
        if book.abs().max() >= ACT_LIMIT:
            raise ValueError("codebook values exceed the context model's exact range")
        k = book.shape[0]
        # every slot's features of every codeword as one matrix product (integers: exact in any order)
        s, h, d = self.slot_weight.shape
        products = (self.slot_weight.reshape(s * h, d) @ book.t()).reshape(s, h, k).transpose(1, 2)
        feats = _floor_shift(products, self.codebook_bits + self.slot_bits - ACT_BITS).clamp(-ACT_LIMIT, ACT_LIMIT)
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
        # least recently used first out, within TABLES_BYTES: an encode reuses a dozen sizes (16 MB at
        # K~ = 1024), and a clear-all made the next encode rebuild them
        self._tables[key] = tables
        while len(self._tables) > 1 and sum(t.nbytes() for t in self._tables.values()) > TABLES_BYTES:
            del self._tables[next(iter(self._tables))]
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
                log_prec=torch.cat([b.log_prec for b in blocks]),
                sharpness=sharpness,
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
        log_prec = torch.div(out[..., r + 1], 2 ** (ACT_BITS - LOG_PREC_BITS), rounding_mode="floor")
        # f * |mu - p_k|^2 as one product: f [-2 mu, |mu|^2, 1] . [p_k, 1, |p_k|^2]. Every term is an
        # integer (< 2^50) times the power of two of f's 8-bit mantissa, so the product is exact in any order.
        lhs = torch.cat([-2 * mu, (mu * mu).sum(1, keepdim=True), torch.ones(len(mu), 1, dtype=torch.int64)], 1)
        a = torch.div(out[..., r], 2 ** (ACT_BITS - 4), rounding_mode="floor")
        offset = (a.amax(1, keepdim=True) - a).to(torch.float64).view(-1, 1)
        return Mixtures(
            rows=lhs.to(torch.float64).mul_(self._factors(log_prec, sharpness)).view(-1, m, r + 2),
            offset=offset.view(-1, m, 1),
            tables=tb,
            log_prec=log_prec,
            sharpness=sharpness,
        )

    def _factors(self, log_prec: Tensor, sharpness: int) -> Tensor:
        """(n*M, 1) float64: each component's precision factor f at the stream's ``sharpness``."""
        return self.scale_lut[(log_prec + sharpness).clamp(-LOG_PREC_LOW, LOG_PREC_HIGH) + LOG_PREC_LOW].view(-1, 1)

    @staticmethod
    def _distances(mix: Mixtures) -> Tensor:
        """(n*M, K) float64: f_m |mu_m - p_k|^2 for every component and codeword (exact, see ``mixtures``)."""
        return mix.rows.view(-1, mix.rows.shape[2]) @ mix.tables.distance_rhs

    def unscaled_distances(self, mix: Mixtures) -> Tensor:
        """(n*M, K) float64 integers: |mu_m - p_k|^2, which ``distances_at`` scales to any sharpness (the
        sharpness search scores several on one network output). A row's last entry is its factor f."""
        rows = mix.rows.view(-1, mix.rows.shape[2])
        return (rows / rows[:, -1:]) @ mix.tables.distance_rhs

    def distances_at(self, mix: Mixtures, sharpness: int, unscaled: Tensor) -> Tensor:
        """What ``_distances`` gives for ``mix`` computed at ``sharpness``, from ``unscaled_distances(mix)``.

        The same bits: |mu - p_k|^2 is an integer below 2^41, and so is every partial sum of
        [-2 mu, |mu|^2, 1] . [p_k, 1, |p_k|^2], so the unscaled product is exact; times f's 8-bit mantissa
        it stays below 2^53, so f x d2 is exact whichever is formed first."""
        return unscaled * self._factors(mix.log_prec, sharpness)

    def scaled_weights(self, mix: Mixtures, distances: Tensor | None = None) -> Tensor:
        """(n, K) float64 integers: the weights w_k of the module docstring times (2^P - K), so that
        normalising needs one division (``_normalise``). The torch path, which the C kernel reproduces.
        Consumes ``distances`` (default: ``mix``'s own)."""
        tb = mix.tables
        k = tb.distance_rhs.shape[1]
        m = self.components
        x = self._distances(mix) if distances is None else distances  # (n*M, K)
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

    def chosen_frequencies(self, mix: Mixtures, chosen: np.ndarray, distances: Tensor | None = None) -> Tensor:
        """(n,) int64: the frequencies the ``chosen`` indices get, without building the rows (what a
        size estimate needs). ``distances``: ``mix``'s at another sharpness (``distances_at``)."""
        kernel = self._kernel
        x = self._distances(mix) if distances is None else distances
        if kernel is not None:
            n, k = len(mix.rows), mix.tables.distance_rhs.shape[1]
            out = np.empty(n, np.int64)
            kernel.chosen_frequencies(
                x.numpy(),
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
        scaled = self.scaled_weights(mix, x)
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
    log_prec: Tensor  # (n, M) int64: each component's log precision index before the sharpness
    sharpness: int  # the stream's shift of log_prec that the factors in ``rows`` include

    def __getitem__(self, part: slice) -> Mixtures:
        return Mixtures(self.rows[part], self.offset[part], self.tables, self.log_prec[part], self.sharpness)


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
