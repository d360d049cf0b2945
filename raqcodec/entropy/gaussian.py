"""Integer symbols under frozen discretized Gaussian or Laplacian tables, coded with rANS (the residual
stage's coder, ``raqcodec.model.residual``).

Each symbol comes with a table index chosen by the caller from integers only (the residual stage: a
frozen index per step level, activity class and coefficient). Table b holds the frequencies, at precision
``PRECISION``, of the symbols -T_b..T_b of a zero-mean Gaussian or Laplacian with scale
``scale_ladder()[b]`` (in symbol units), plus two escape symbols for values below and above. Tables are
computed once with float math and frozen into the model file as integers (``freeze_tables``), so coding never
depends on float:
the same bits on every machine (the CompressAI ``update()`` idea).

Stream layout (``encode``): symbols are grouped by table, tables in increasing order, each group in the
order the symbols are given; then, for every escaped symbol in that same order, its excess
e = |v| - T_b - 1 as an Exp-Golomb code of order 0 whose length (0..MAX_ESCAPE_BITS) and bits are coded
with uniform rANS models. The payload is constriction's 32-bit words, big-endian.

Exactness of the model: as in ``raqcodec.entropy.order0``, a Categorical built with ``perfect=False`` from
weights freq * 2^(24 - P) - 1 has exactly the integer cumulative frequencies we froze.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import constriction
import numpy as np

from ..errors import SymbolStreamError

PRECISION = 16
SCALE_LEVELS = 64
SCALE_MIN = 0.11  # below this a symbol is 0 with probability > 1 - 2^-16 (numerically)
SCALE_MAX = 96.0
TAIL_SIGMAS = 6.0  # symbols beyond this many scales escape
MAX_ESCAPE_BITS = 24
_CONSTRICTION_PRECISION = 24


def scale_ladder() -> np.ndarray:
    """The table scales (symbol units), geometric from SCALE_MIN to SCALE_MAX."""
    return SCALE_MIN * (SCALE_MAX / SCALE_MIN) ** (np.arange(SCALE_LEVELS) / (SCALE_LEVELS - 1))


FAMILIES = ("gaussian", "laplace")


def _table(scale: float, family: str) -> np.ndarray:
    """Frequencies (2T + 3,) summing to 2^PRECISION: [escape below, -T..T, escape above]. ``scale``: the
    standard deviation (gaussian) or the mean absolute value (laplace), in symbol units."""
    tail = max(1, int(math.ceil(TAIL_SIGMAS * scale * (1.4 if family == "laplace" else 1.0))))
    edges = np.arange(-tail, tail + 2) - 0.5
    if family == "gaussian":
        cdf = 0.5 * np.array([math.erfc(-e / (scale * math.sqrt(2))) for e in edges])  # P(X < edge)
    else:
        cdf = np.where(
            edges < 0, 0.5 * np.exp(np.minimum(edges, 0) / scale), 1 - 0.5 * np.exp(-np.maximum(edges, 0) / scale)
        )
    probs = np.concatenate([[cdf[0]], np.diff(cdf), [1 - cdf[-1]]])
    total = 1 << PRECISION
    freqs = np.maximum(1, np.floor(probs * (total - len(probs))).astype(np.int64))
    freqs[tail + 1] += total - int(freqs.sum())  # the remainder goes to symbol 0, the most likely
    return freqs


def freeze_tables(family: str = "gaussian") -> tuple[np.ndarray, np.ndarray]:
    """(tails (L,), freqs (L, 2 T_max + 3)) int32, zero-padded: what the model file stores."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    tables = [_table(s, family) for s in scale_ladder()]
    tails = np.array([(len(t) - 3) // 2 for t in tables], dtype=np.int32)
    out = np.zeros((len(tables), max(len(t) for t in tables)), dtype=np.int32)
    for i, t in enumerate(tables):
        out[i, : len(t)] = t
    return tails, out


@dataclass(frozen=True)
class TableLookup:
    """Per position: the flat index of symbol 0 in its table's -log2 P row, and the table's tail + 1 (the
    magnitude from which a symbol escapes)."""

    zero: np.ndarray
    reach: np.ndarray


class GaussianTables:
    """Frozen tables from a model file, checked before use."""

    def __init__(self, tails: np.ndarray, freqs: np.ndarray) -> None:
        tails, freqs = np.asarray(tails, dtype=np.int64), np.asarray(freqs, dtype=np.int64)
        if tails.ndim != 1 or freqs.ndim != 2 or len(tails) != len(freqs) or len(tails) == 0:
            raise ValueError("refinement tables have inconsistent shapes")
        self.tails = tails
        self.freqs: list[np.ndarray] = []
        for tail, row in zip(tails, freqs):
            width = 2 * int(tail) + 3
            if tail < 1 or width > row.shape[0]:
                raise ValueError("refinement table tail out of range")
            used = row[:width]
            if used.min() < 1 or int(used.sum()) != 1 << PRECISION or np.any(row[width:] != 0):
                raise ValueError("refinement table frequencies do not sum to 2^16")
            self.freqs.append(used)
        self._models = [_categorical(f) for f in self.freqs]
        # -log2 P per (table, rank): estimates are one gather (unused ranks never occur)
        self._cost = np.zeros((len(self.freqs), max(len(f) for f in self.freqs)))
        for i, f in enumerate(self.freqs):
            self._cost[i, : len(f)] = PRECISION - np.log2(f)
        self._flat_cost = self._cost.reshape(-1)

    @property
    def levels(self) -> int:
        return len(self.freqs)

    def ideal_bits(self, symbols: np.ndarray, tables: np.ndarray) -> float:
        """Information content of ``symbols`` (escapes: the escape symbol plus its Exp-Golomb bits)."""
        return float(self.symbol_bits(symbols, tables).sum())

    def symbol_bits(self, symbols: np.ndarray, tables: np.ndarray | TableLookup) -> np.ndarray:
        """Information of every symbol, shaped like ``symbols`` (one gather from a table of -log2 P).
        ``tables``: each symbol's table index, or their ``lookup`` (for several symbols per position)."""
        symbols = np.asarray(symbols, dtype=np.int64)
        look = tables if isinstance(tables, TableLookup) else self.lookup(tables)
        return self.magnitude_bits(np.abs(symbols), np.where(symbols < 0, -1, 1), look)

    def magnitude_bits(self, magnitude: np.ndarray, sign: np.ndarray, look: TableLookup) -> np.ndarray:
        """Information of the symbols ``sign`` x ``magnitude`` (int64 magnitudes >= 0, signs +-1, shaped like
        ``look``'s arrays): the rate-distortion quantizer scores three magnitudes of the same signs under the
        same tables, and a symbol's rank is its sign times its magnitude capped at the escape."""
        bits = self._flat_cost[look.zero + sign * np.minimum(magnitude, look.reach)]
        escaped = magnitude >= look.reach
        if escaped.any():
            excess = magnitude[escaped] - look.reach[escaped]
            bits[escaped] += (_bit_length(excess + 1) - 1) + math.log2(MAX_ESCAPE_BITS + 1)
        return bits

    def lookup(self, tables: np.ndarray) -> TableLookup:
        """What ``symbol_bits`` reads per position: worth keeping where several symbols are scored under the
        same tables (rate-distortion quantization scores three per coefficient)."""
        tables = np.asarray(tables, dtype=np.int64)
        reach = self.tails[tables] + 1
        return TableLookup(tables * self._cost.shape[1] + reach, reach)

    def _ranks(self, values: np.ndarray, b: int) -> tuple[np.ndarray, np.ndarray]:
        tail = int(self.tails[b])
        ranks = np.clip(values, -tail - 1, tail + 1) + tail + 1
        excess = np.abs(values[(values < -tail) | (values > tail)]) - tail - 1
        return ranks.astype(np.int32), excess.astype(np.int64)

    def encode(self, symbols: np.ndarray, tables: np.ndarray) -> bytes:
        """symbols and tables: same shape, int; tables in 0..levels-1 (checked)."""
        symbols, tables = np.asarray(symbols, dtype=np.int64).ravel(), np.asarray(tables, dtype=np.int64).ravel()
        self._check_tables(tables)
        order = np.argsort(tables, kind="stable")
        groups = np.split(order, np.flatnonzero(np.diff(tables[order])) + 1) if len(order) else []
        coder = constriction.stream.stack.AnsCoder()
        escapes: list[np.ndarray] = []
        main: list[tuple[np.ndarray, int]] = []
        for positions in groups:
            b = int(tables[positions[0]])
            ranks, excess = self._ranks(symbols[positions], b)
            main.append((ranks, b))
            escapes.append(excess)
        excess_all = np.concatenate(escapes) if escapes else np.zeros(0, dtype=np.int64)
        if excess_all.size and int(excess_all.max()) + 1 >= 1 << MAX_ESCAPE_BITS:
            raise ValueError("a refinement symbol is too large to code")
        # rANS is a stack: what is decoded last goes in first
        lengths = _bit_length(excess_all + 1) - 1
        for value, length in zip((excess_all + 1)[::-1], lengths[::-1]):
            if length:
                coder.encode_reverse(
                    np.array([int(value) - (1 << int(length))], dtype=np.int32),
                    constriction.stream.model.Uniform(1 << int(length)),
                )
        if lengths.size:
            coder.encode_reverse(lengths.astype(np.int32), constriction.stream.model.Uniform(MAX_ESCAPE_BITS + 1))
        for ranks, b in reversed(main):
            coder.encode_reverse(ranks, self._models[b])
        return coder.get_compressed().astype(">u4").tobytes()

    def decode(self, data: bytes, tables: np.ndarray) -> np.ndarray:
        """Inverse of ``encode`` for the same table indices; returns int64 symbols shaped like ``tables``."""
        shape = np.shape(tables)
        tables = np.asarray(tables, dtype=np.int64).ravel()
        self._check_tables(tables)
        if len(data) % 4:
            raise SymbolStreamError("refinement payload is not a whole number of 32-bit words")
        words = np.frombuffer(data, dtype=">u4").astype(np.uint32)
        try:
            coder = constriction.stream.stack.AnsCoder(words)
            out = np.zeros(tables.shape, dtype=np.int64)
            order = np.argsort(tables, kind="stable")
            groups = np.split(order, np.flatnonzero(np.diff(tables[order])) + 1) if len(order) else []
            escaped: list[np.ndarray] = []
            for positions in groups:
                b = int(tables[positions[0]])
                tail = int(self.tails[b])
                values = coder.decode(self._models[b], len(positions)).astype(np.int64) - tail - 1
                out[positions] = values
                escaped.append(positions[np.abs(values) > tail])
            where = np.concatenate(escaped) if escaped else np.zeros(0, dtype=np.int64)
            if where.size:
                lengths = coder.decode(constriction.stream.model.Uniform(MAX_ESCAPE_BITS + 1), len(where))
                for pos, length in zip(where, lengths):
                    low = int(coder.decode(constriction.stream.model.Uniform(1 << int(length)), 1)[0]) if length else 0
                    tail = int(self.tails[tables[pos]])
                    magnitude = tail + (1 << int(length)) + low
                    out[pos] = magnitude if out[pos] > 0 else -magnitude
        except (ValueError, RuntimeError) as exc:
            raise SymbolStreamError(f"corrupt refinement payload ({exc})") from None
        return out.reshape(shape)

    def _check_tables(self, tables: np.ndarray) -> None:
        if tables.size and (int(tables.min()) < 0 or int(tables.max()) >= self.levels):
            raise ValueError("table index out of range")


def _categorical(freqs: np.ndarray) -> constriction.stream.model.Categorical:
    weights = freqs.astype(np.float64) * float(1 << (_CONSTRICTION_PRECISION - PRECISION)) - 1.0
    return constriction.stream.model.Categorical(weights, perfect=False)


def _bit_length(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.int64)
    out = np.zeros(values.shape, dtype=np.int64)
    v = values.copy()
    while np.any(v > 0):
        out += v > 0
        v >>= 1
    return out
