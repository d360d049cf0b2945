"""The refinement stage's symbol coder: frozen integer tables, escapes, and the exact latent decoder path."""

from __future__ import annotations

import numpy as np
import pytest

from raqcodec.entropy.gaussian import PRECISION, GaussianTables, SymbolStreamError, freeze_tables, scale_ladder


@pytest.fixture(scope="module")
def tables() -> GaussianTables:
    return GaussianTables(*freeze_tables())


def test_tables_are_integer_and_sum_to_precision() -> None:
    tails, freqs = freeze_tables()
    assert freqs.dtype == np.int32 and tails.dtype == np.int32
    for tail, row in zip(tails, freqs):
        used = row[: 2 * tail + 3]
        assert used.min() >= 1 and int(used.sum()) == 1 << PRECISION
        assert np.all(row[2 * tail + 3 :] == 0)
        # unimodal around symbol 0 (index tail + 1), symmetric up to the remainder given to 0
        assert int(np.argmax(used)) == tail + 1
        assert np.array_equal(used[1 : tail + 1], used[tail + 2 : 2 * tail + 2][::-1])


def test_round_trip_with_escapes_matches_ideal_bits(tables: GaussianTables) -> None:
    rng = np.random.default_rng(1)
    table = rng.integers(0, 40, 50_000)
    symbols = np.round(rng.normal(0, scale_ladder()[table])).astype(np.int64)
    symbols[:6] = [1000, -5000, 2**20, -(2**20), 0, 7]  # far beyond every tail: escapes
    data = tables.encode(symbols, table)
    assert np.array_equal(tables.decode(data, table), symbols)
    ideal = tables.ideal_bits(symbols, table)
    assert ideal <= len(data) * 8 <= ideal + 64  # rANS spends the information plus its flush


def test_decoding_with_other_tables_or_damage_is_not_silent(tables: GaussianTables) -> None:
    rng = np.random.default_rng(2)
    table = rng.integers(10, 30, 4096)
    symbols = np.round(rng.normal(0, scale_ladder()[table])).astype(np.int64)
    data = tables.encode(symbols, table)
    assert not np.array_equal(tables.decode(data, np.full_like(table, 5)), symbols)
    with pytest.raises(SymbolStreamError):
        tables.decode(data[:-1], table)
    with pytest.raises(ValueError):
        tables.encode(symbols, np.full_like(table, 64))


def test_tables_from_a_file_are_checked() -> None:
    tails, freqs = freeze_tables()
    bad = freqs.copy()
    bad[3, 0] += 1
    with pytest.raises(ValueError, match="2\\^16"):
        GaussianTables(tails, bad)
    with pytest.raises(ValueError):
        GaussianTables(tails[:-1], freqs)
