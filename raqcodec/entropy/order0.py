"""Order-0 entropy coding of a VQ index grid (integer frequency table + rANS).

An image's flattened index array (values in ``[0, K)``) is coded with one
histogram per image.  The histogram is quantized to integer frequencies with
integer arithmetic only, transmitted in the section, and the decoder builds its
model from those integers alone, so encoder and decoder always agree bit for bit.

Section layout (this is what ``encode_indices`` returns; docs/FORMAT.md is the
normative description):

``byte 0``
    ``P``, the table precision (0..24): frequencies sum to exactly ``2**P``.
``bytes 1..`` table, a bit stream written MSB-first, zero-padded to a byte:
    * 16 bits ``n_used - 1`` (number of symbols with a non-zero frequency);
    * 5 bits ``k_gap`` (0..16) and 5 bits ``k_freq`` (0..24);
    * unless ``n_used == K``: for each used symbol in increasing order, the
      gap ``s_i - s_{i-1} - 1`` (with ``s_{-1} = -1``) as an order-``k_gap``
      Exp-Golomb code; when ``n_used == K`` the gaps are all zero and omitted;
    * for every used symbol but the last, ``freq - 1`` as an order-``k_freq``
      Exp-Golomb code; the last frequency is ``2**P`` minus the others (>= 1).
``rest``
    rANS payload: 32-bit words, each big-endian, in the order
    ``constriction.stream.stack.AnsCoder.get_compressed`` returns them.  It
    codes the *ranks* of the symbols among the used symbols (the alphabet
    excludes unused symbols, so no probability mass is wasted on them).  Empty
    when only one symbol is used (nothing needs coding).

Order-``k`` Exp-Golomb code of ``v >= 0``: let ``u = v + 2**k`` and ``b`` its
bit length; write ``b - k - 1`` zero bits, then the ``b`` bits of ``u``.

Exactness of the rANS model.  constriction's ``Categorical`` only accepts float
probabilities and quantizes them to its fixed 24-bit precision.  With
``perfect=False`` it uses a documented deterministic rule: with ``n`` symbols,
weights ``w_i`` and ``W = sum(w)`` (summed in f64), the left cumulative of rank
``i`` is ``floor(sum_{j<i} w_j * ((2**24 - n) / W)) + i``.  We pass
``w_i = freq_i * 2**(24 - P) - 1``: integers below ``2**24``, so every input,
partial sum and ``W = 2**24 - n`` is an exact f64, the scale is exactly 1.0 and
the rule yields ``cdf_i = C_i * 2**(24 - P)`` exactly, where ``C_i`` is our
integer cumulative frequency.  No rounding happens anywhere, so the model is
the same on every IEEE-754 machine; tests/test_entropy.py probes the model
built by the installed constriction and checks every CDF boundary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import constriction
import numpy as np

from ..errors import EntropyError

__all__ = [
    "EntropyError",
    "quantize_counts",
    "encode_indices",
    "decode_indices",
    "estimate_section_bits",
    "empirical_entropy_bits",
]

MAX_ALPHABET = 65535
MAX_PRECISION = 24  # constriction's Categorical precision; P may not exceed it
MAX_COUNT = 1 << 28  # ceil(65535 / 4) ** 2: one index per 4x4 block of the largest image
_CONSTRICTION_PRECISION = 24
_N_USED_BITS = 16
_K_BITS = 5
_K_GAP_MAX = 16  # gaps are < 2**16
_K_FREQ_MAX = MAX_PRECISION  # freq - 1 is < 2**24
_TABLE_HEADER_BITS = _N_USED_BITS + 2 * _K_BITS
# Observed mean overhead of the rANS flush over the information content.
_PAYLOAD_OVERHEAD_BITS = 32


# ---------------------------------------------------------------- quantization


def _quantize_used(counts: np.ndarray, precision: int) -> np.ndarray:
    """Quantize strictly positive counts to frequencies >= 1 summing to 2**precision.

    Optimal real-valued shape under a ">= 1" constraint is ``max(1, lambda*c)``:
    symbols whose proportional share is below 1 are clamped to 1 and the rest of
    the mass is shared proportionally (repeat until stable), then
    largest-remainder rounding.  Integers only.
    """
    target = 1 << precision
    total = int(counts.sum())
    ordered = np.sort(counts)
    prefix = np.concatenate(([0], np.cumsum(ordered)))
    clamped = 0  # the `clamped` smallest counts get frequency 1
    while True:
        mass, rest = target - clamped, total - int(prefix[clamped])
        # c * mass < rest  <=>  c < ceil(rest / mass)
        nxt = int(np.searchsorted(ordered, -(-rest // mass), side="left"))
        if nxt <= clamped:
            break
        clamped = nxt
    freqs = np.ones_like(counts)
    free = counts >= ordered[clamped] if clamped else np.ones(counts.shape, dtype=bool)
    scaled = counts[free] * mass
    base, remainder = scaled // rest, scaled % rest
    deficit = mass - int(base.sum())  # < number of free symbols
    if deficit:
        # stable sort: ties go to the lower index
        base[np.argsort(-remainder, kind="stable")[:deficit]] += 1
    freqs[free] = base
    return freqs


def _as_counts(counts: np.ndarray) -> np.ndarray:
    arr = np.asarray(counts)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise ValueError("counts must be a one-dimensional integer array")
    if arr.size and int(arr.min()) < 0:
        raise ValueError("counts must be non-negative")
    return arr.astype(np.int64)


def quantize_counts(counts: np.ndarray, precision: int) -> np.ndarray:
    """Integer frequencies summing to ``2**precision``, >= 1 exactly where ``counts > 0``.

    Deterministic and integer-only (ties broken by index).  Requires at least
    one and at most ``2**precision`` used symbols.
    """
    c = _as_counts(counts)
    if not isinstance(precision, (int, np.integer)) or not 0 <= precision <= 30:
        raise ValueError(f"precision must be an integer in 0..30, got {precision!r}")
    precision = int(precision)
    used = c > 0
    n_used = int(used.sum())
    if n_used == 0:
        raise ValueError("counts are all zero: nothing to quantize")
    if n_used > 1 << precision:
        raise ValueError(f"{n_used} used symbols do not fit in precision {precision}")
    if int(c.sum()).bit_length() + precision > 62:
        raise ValueError("counts too large for exact int64 arithmetic at this precision")
    freqs = np.zeros_like(c)
    freqs[used] = _quantize_used(c[used], precision)
    return freqs


# ---------------------------------------------------------------- table costs


def _bit_length(values: np.ndarray) -> np.ndarray:
    # frexp is exact for integers below 2**53, which covers every value coded here
    return np.frexp(values.astype(np.float64))[1].astype(np.int64)


def _eg_lengths(values: np.ndarray, k: int) -> np.ndarray:
    return 2 * _bit_length(values + (1 << k)) - k - 1


def _best_k(values: np.ndarray, k_max: int) -> tuple[int, int]:
    """(k, total bits) of the cheapest order-k Exp-Golomb code for ``values``, smallest k on ties.

    Exhaustive over k, on distinct values only: frequencies sum to 2**P and gaps
    to < K, so there are at most a few thousand distinct ones.
    """
    if values.size == 0:
        return 0, 0
    distinct, multiplicity = np.unique(values, return_counts=True)
    ks = np.arange(k_max + 1)
    lengths = 2 * _bit_length(distinct[:, None] + (1 << ks)[None, :]) - ks - 1
    totals = multiplicity @ lengths
    k = int(np.argmin(totals))
    return k, int(totals[k])


@dataclass(frozen=True)
class _Plan:
    """Everything the encoder decides; shared with ``estimate_section_bits``."""

    precision: int
    symbols: np.ndarray  # used symbols, increasing
    freqs: np.ndarray  # their quantized frequencies
    k_gap: int
    k_freq: int
    table_bits: int
    info_bits: float  # ideal payload cost under the quantized model

    @property
    def section_bits(self) -> int:
        payload = math.ceil(self.info_bits) + _PAYLOAD_OVERHEAD_BITS if len(self.symbols) > 1 else 0
        return 8 + 8 * (-(-self.table_bits // 8)) + payload


def _plan(counts: np.ndarray) -> _Plan:
    """Choose P (and Exp-Golomb orders) minimising table bits + ideal payload bits.

    Scans P upward from ceil(log2(n_used)) and stops after two consecutive
    non-improving steps (the cost is unimodal in P in practice) or at 24.
    """
    alphabet = len(counts)
    symbols = np.flatnonzero(counts)
    used = counts[symbols]
    n_used = len(symbols)
    if n_used == 0:
        raise ValueError("no symbols to code")
    if int(used.sum()).bit_length() + MAX_PRECISION > 62:
        raise ValueError("too many indices for exact int64 quantization")
    if n_used == alphabet:
        k_gap, gap_bits = 0, 0
    else:
        k_gap, gap_bits = _best_k(np.diff(symbols, prepend=-1) - 1, _K_GAP_MAX)
    p_lo = (n_used - 1).bit_length()
    if n_used == 1:  # nothing to code: the smallest table wins
        return _Plan(0, symbols, np.ones(1, np.int64), k_gap, 0, _TABLE_HEADER_BITS + gap_bits, 0.0)
    best: _Plan | None = None
    best_cost = math.inf
    misses = 0
    for precision in range(p_lo, MAX_PRECISION + 1):
        freqs = _quantize_used(used, precision)
        k_freq, freq_bits = _best_k(freqs[:-1] - 1, _K_FREQ_MAX)
        info = float(precision * int(used.sum()) - np.dot(used.astype(np.float64), np.log2(freqs)))
        plan = _Plan(precision, symbols, freqs, k_gap, k_freq, _TABLE_HEADER_BITS + gap_bits + freq_bits, info)
        cost = plan.section_bits
        if cost < best_cost:
            best, best_cost, misses = plan, cost, 0
        else:
            misses += 1
            if misses == 2:
                break
    assert best is not None
    return best


# ---------------------------------------------------------------- bit I/O


def _pack_codes(values: np.ndarray, lengths: np.ndarray) -> bytes:
    """Concatenate the low ``lengths[i]`` bits of ``values[i]``, MSB-first, zero-padded."""
    big_endian = values.astype(">u8").view(np.uint8).reshape(-1, 8)
    bits = np.unpackbits(big_endian, axis=1)
    keep = np.arange(64) >= (64 - lengths)[:, None]
    return np.packbits(bits[keep]).tobytes()


def _eg_codes(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    # the leading zeros are implicit: writing u in `length` bits puts them first
    return values + (1 << k), _eg_lengths(values, k)


def _write_table(plan: _Plan, alphabet: int) -> bytes:
    n_used = len(plan.symbols)
    parts = [
        (
            np.array([n_used - 1, plan.k_gap, plan.k_freq], np.int64),
            np.array([_N_USED_BITS, _K_BITS, _K_BITS], np.int64),
        )
    ]
    if n_used < alphabet:
        parts.append(_eg_codes(np.diff(plan.symbols, prepend=-1) - 1, plan.k_gap))
    parts.append(_eg_codes(plan.freqs[:-1] - 1, plan.k_freq))
    values = np.concatenate([v for v, _ in parts])
    lengths = np.concatenate([n for _, n in parts])
    return _pack_codes(values, lengths)


def _max_table_bytes(alphabet: int) -> int:
    # a gap code is at most 33 bits and a frequency code at most 49: the decoder
    # never unpacks more than this many bytes into its bit string
    return -(-(_TABLE_HEADER_BITS + alphabet * (33 + 49)) // 8)


class _BitReader:
    """MSB-first reader over a '0'/'1' string; every read is bounds-checked."""

    def __init__(self, data: bytes) -> None:
        raw = np.unpackbits(np.frombuffer(data, dtype=np.uint8)) + ord("0")
        self.bits = raw.tobytes().decode("ascii")
        self.pos = 0

    def read(self, n: int) -> int:
        end = self.pos + n
        if end > len(self.bits):
            raise EntropyError("truncated index section: the frequency table ends early")
        value = int(self.bits[self.pos : end], 2)
        self.pos = end
        return value

    def read_eg(self, k: int, max_value: int) -> int:
        one = self.bits.find("1", self.pos)
        if one < 0:
            raise EntropyError("truncated index section: the frequency table ends early")
        zeros = one - self.pos
        if zeros > 25:  # no legal code has this many leading zeros
            raise EntropyError("corrupt index section: invalid code in the frequency table")
        self.pos = one
        value = self.read(zeros + k + 1) - (1 << k)
        if value > max_value:
            raise EntropyError("corrupt index section: frequency table value out of range")
        return value


def _read_table(reader: _BitReader, precision: int, alphabet: int) -> tuple[np.ndarray, np.ndarray]:
    """Parse and validate the table; returns (used symbols, frequencies)."""
    target = 1 << precision
    n_used = reader.read(_N_USED_BITS) + 1
    k_gap, k_freq = reader.read(_K_BITS), reader.read(_K_BITS)
    if n_used > alphabet or n_used > target:
        raise EntropyError(
            f"corrupt index section: {n_used} used symbols do not fit alphabet size {alphabet} at precision {precision}"
        )
    if k_gap > _K_GAP_MAX or k_freq > _K_FREQ_MAX:
        raise EntropyError("corrupt index section: invalid Exp-Golomb order in the frequency table")
    if n_used == alphabet:
        symbols = np.arange(alphabet, dtype=np.int64)
    else:
        gaps = [reader.read_eg(k_gap, alphabet) for _ in range(n_used)]
        symbols = np.cumsum(np.array(gaps, dtype=np.int64) + 1) - 1
        if symbols[-1] >= alphabet:
            raise EntropyError(f"corrupt index section: table names a symbol beyond alphabet size {alphabet}")
    head = [reader.read_eg(k_freq, target - 2) + 1 for _ in range(n_used - 1)]
    last = target - sum(head)
    if last < 1:
        raise EntropyError(f"corrupt index section: frequencies exceed 2**{precision}")
    return symbols, np.array(head + [last], dtype=np.int64)


# ---------------------------------------------------------------- rANS


def _model(freqs: np.ndarray, precision: int) -> constriction.stream.model.Categorical:
    """constriction model whose 24-bit CDF is exactly ``cumsum(freqs) * 2**(24 - P)``.

    See the module docstring for why these weights reproduce it without rounding.
    """
    weights = freqs.astype(np.float64) * float(1 << (_CONSTRICTION_PRECISION - precision)) - 1.0
    return constriction.stream.model.Categorical(weights, perfect=False)


def _check_alphabet(alphabet_size: int, error: type[ValueError]) -> int:
    if not isinstance(alphabet_size, (int, np.integer)) or not 2 <= alphabet_size <= MAX_ALPHABET:
        raise error(f"alphabet size must be an integer in 2..{MAX_ALPHABET}, got {alphabet_size!r}")
    return int(alphabet_size)


def encode_indices(indices: np.ndarray, alphabet_size: int) -> bytes:
    """Self-contained section: precision byte, frequency table, rANS payload."""
    alphabet = _check_alphabet(alphabet_size, ValueError)
    flat = np.asarray(indices).ravel()
    if not np.issubdtype(flat.dtype, np.integer):
        raise ValueError("indices must be an integer array")
    if not 1 <= flat.size <= MAX_COUNT:
        raise ValueError(f"number of indices must be in 1..{MAX_COUNT}, got {flat.size}")
    if int(flat.min()) < 0 or int(flat.max()) >= alphabet:
        raise ValueError(f"indices must lie in [0, {alphabet})")
    flat = flat.astype(np.int64)
    plan = _plan(np.bincount(flat, minlength=alphabet))
    section = bytes([plan.precision]) + _write_table(plan, alphabet)
    if len(plan.symbols) == 1:
        return section
    rank_of = np.zeros(alphabet, dtype=np.int32)
    rank_of[plan.symbols] = np.arange(len(plan.symbols), dtype=np.int32)
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(rank_of[flat], _model(plan.freqs, plan.precision))
    return section + coder.get_compressed().astype(">u4").tobytes()


def decode_indices(section: bytes, count: int, alphabet_size: int) -> np.ndarray:
    """Inverse of ``encode_indices``; returns ``count`` int64 indices or raises EntropyError."""
    alphabet = _check_alphabet(alphabet_size, EntropyError)
    if not isinstance(count, (int, np.integer)) or not 1 <= count <= MAX_COUNT:
        raise EntropyError(f"index count must be an integer in 1..{MAX_COUNT}, got {count!r}")
    section = bytes(section)
    if not section:
        raise EntropyError("truncated index section: it is empty")
    precision = section[0]
    if precision > MAX_PRECISION:
        raise EntropyError(f"corrupt index section: precision {precision} exceeds {MAX_PRECISION}")
    reader = _BitReader(section[1 : 1 + _max_table_bytes(alphabet)])
    symbols, freqs = _read_table(reader, precision, alphabet)
    table_end = -(-reader.pos // 8)
    if reader.bits[reader.pos : table_end * 8].strip("0"):
        raise EntropyError("corrupt index section: non-zero padding after the frequency table")
    payload = section[1 + table_end :]
    if len(symbols) == 1:
        if payload:
            raise EntropyError("corrupt index section: unexpected payload for a single-symbol grid")
        return np.full(int(count), symbols[0], dtype=np.int64)
    return symbols[_decode_ranks(payload, int(count), freqs, precision)]


def _decode_ranks(payload: bytes, count: int, freqs: np.ndarray, precision: int) -> np.ndarray:
    if len(payload) % 4:
        raise EntropyError(f"corrupt index section: payload length {len(payload)} is not a multiple of 4")
    words = np.frombuffer(payload, dtype=">u4").astype(np.uint32)
    try:
        coder = constriction.stream.stack.AnsCoder(words)
        ranks = coder.decode(_model(freqs, precision), count)
        leftover = coder.num_words()
    except Exception as exc:  # noqa: BLE001 - constriction reports bad data as ValueError; never leak it
        raise EntropyError(f"corrupt index section: rANS payload rejected ({exc})") from None
    if leftover:
        raise EntropyError("corrupt index section: rANS payload does not end where the last index does")
    ranks = ranks.astype(np.int64)
    if ranks.size != count or (ranks.size and (ranks.min() < 0 or ranks.max() >= len(freqs))):
        raise EntropyError("corrupt index section: decoded symbols out of range")
    check_information(count * precision - float(np.log2(freqs.astype(np.float64))[ranks].sum()), len(words))
    return ranks


INFORMATION_SLACK_BITS = 64  # a valid rANS payload holds its symbols' information plus ~32 bits of state


def check_information(bits: float, words: int) -> None:
    """Reject a payload whose decoded symbols carry more information (``bits``, under the model that
    decoded them) than its ``words`` 32-bit words can hold. rANS never does that for a stream it
    encoded, so this only fires on corrupt data, such as a header that declares a much larger image
    than its payload codes: decoding then stops early instead of going on to the synthesis."""
    if bits > 32 * words + INFORMATION_SLACK_BITS:
        raise EntropyError(
            f"corrupt index section: the indices decoded so far need {bits:.0f} bits, but the "
            f"payload holds {32 * words}"
        )


# ---------------------------------------------------------------- estimates


def estimate_section_bits(counts: np.ndarray) -> int:
    """Fast estimate of ``8 * len(encode_indices(...))`` for a histogram of length K.

    Table bits are exact; the payload is the ideal cost under the quantized
    model plus a small constant for the rANS flush.
    """
    c = _as_counts(counts)
    _check_alphabet(len(c), ValueError)
    return _plan(c).section_bits


def empirical_entropy_bits(indices: np.ndarray, alphabet_size: int) -> float:
    """Order-0 empirical entropy of ``indices`` times their number, in bits."""
    alphabet = _check_alphabet(alphabet_size, ValueError)
    flat = np.asarray(indices).ravel().astype(np.int64)
    if flat.size == 0:
        return 0.0
    counts = np.bincount(flat, minlength=alphabet)
    used = counts[counts > 0].astype(np.float64)
    n = float(flat.size)
    return float(n * math.log2(n) - np.dot(used, np.log2(used)))
