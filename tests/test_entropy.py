"""Tests for raqcodec.entropy.order0: integer quantization, section round trips, estimates, corruption."""

from __future__ import annotations

import math

import constriction
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rans_reference import rans_encode

from raqcodec.entropy import order0 as E
from raqcodec.entropy.order0 import (
    EntropyError,
    decode_indices,
    empirical_entropy_bits,
    encode_indices,
    estimate_section_bits,
    quantize_counts,
)

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def skewed(rng: np.random.Generator, n: int, alphabet: int, exponent: float = 1.2) -> np.ndarray:
    """Zipf-like index grid, the typical shape of VQ code usage."""
    p = 1.0 / np.arange(1, alphabet + 1) ** exponent
    return rng.choice(alphabet, size=n, p=p / p.sum())


def roundtrip(indices: np.ndarray, alphabet: int) -> bytes:
    section = encode_indices(indices, alphabet)
    out = decode_indices(section, indices.size, alphabet)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, np.asarray(indices).ravel())
    return section


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("alphabet", [2, 4096])
def test_roundtrip_uniform(alphabet: int) -> None:
    rng = np.random.default_rng(alphabet)
    x = rng.integers(0, alphabet, 20000)
    section = roundtrip(x, alphabet)
    # a uniform grid cannot be compressed below log2(K) bits per index (+ table)
    assert len(section) * 8 >= 20000 * math.log2(alphabet) * 0.99


@pytest.mark.parametrize("alphabet", [64, 1024])
def test_roundtrip_skewed_close_to_entropy(alphabet: int) -> None:
    x = skewed(np.random.default_rng(7), 24576, alphabet)
    section = roundtrip(x, alphabet)
    h = empirical_entropy_bits(x, alphabet)
    assert h <= len(section) * 8 <= h * 1.04 + 200


def test_roundtrip_2d_grid_and_small_dtype() -> None:
    grid = skewed(np.random.default_rng(3), 48 * 64, 300).astype(np.uint16).reshape(48, 64)
    section = encode_indices(grid, 300)
    out = decode_indices(section, grid.size, 300)
    np.testing.assert_array_equal(out, grid.ravel().astype(np.int64))


@pytest.mark.parametrize("alphabet,symbol", [(2, 0), (2, 1), (4096, 4095), (65535, 12345)])
def test_single_symbol_grid(alphabet: int, symbol: int) -> None:
    x = np.full(5000, symbol)
    section = roundtrip(x, alphabet)
    assert section[0] == 0  # P = 0: the one frequency is 2**0
    assert len(section) <= 8  # precision byte + a few table bytes, no payload


def test_single_index() -> None:
    roundtrip(np.array([3]), 5)


def test_unused_symbols_are_not_in_the_table() -> None:
    rng = np.random.default_rng(11)
    x = rng.choice(np.array([3, 17, 4000]), size=3000, p=[0.7, 0.2, 0.1])
    section = roundtrip(x, 4096)
    # 3 used symbols out of 4096: the table must not spend a bit per unused symbol
    assert len(section) * 8 < empirical_entropy_bits(x, 4096) + 200


def test_all_symbols_used_omits_gaps() -> None:
    """With every symbol of the alphabet used, the table holds its header and the frequencies only: not one
    bit of gap codes (a gap code of 0 costs k + 1 bits each)."""
    x = np.array([0, 1, 2, 3, 3, 3, 2, 1, 0, 0, 0, 0])
    roundtrip(x, 4)
    plan = E._plan(np.bincount(x, minlength=4))
    assert plan.symbols.tolist() == [0, 1, 2, 3]
    freq_bits = int(E._eg_lengths(plan.freqs[:-1] - 1, plan.k_freq).sum())
    assert plan.table_bits == E._TABLE_HEADER_BITS + freq_bits
    assert len(E._write_table(plan, 4)) == -(-plan.table_bits // 8)
    # one symbol fewer in the alphabet's use: now the gaps are there, and they cost bits
    gapped = E._plan(np.bincount(np.where(x == 2, 3, x), minlength=4))
    assert gapped.table_bits > E._TABLE_HEADER_BITS + int(E._eg_lengths(gapped.freqs[:-1] - 1, gapped.k_freq).sum())


def test_golden_section_is_stable() -> None:
    # Pins the format: any change in table layout, quantization or constriction's coder shows here.
    x = np.array(
        [
            0,
            7,
            1,
            6,
            3,
            3,
            6,
            1,
            7,
            0,
            4,
            0,
            7,
            1,
            6,
            3,
            3,
            6,
            1,
            7,
            0,
            4,
            0,
            7,
            1,
            6,
            3,
            3,
            6,
            1,
            7,
            0,
            4,
            0,
            7,
            1,
            6,
            3,
            3,
            6,
        ]
    )
    section = encode_indices(x, 9)
    assert section.hex() == "03000500355d50ad20000069e788394f1c41cd25c20e6b"
    np.testing.assert_array_equal(decode_indices(section, x.size, 9), x)


def test_encoding_is_deterministic() -> None:
    x = skewed(np.random.default_rng(5), 5000, 512)
    assert encode_indices(x, 512) == encode_indices(x.copy(), 512)


@FAST
@given(st.integers(2, 300), st.integers(1, 400), st.integers(0, 2**32 - 1))
def test_roundtrip_property(alphabet: int, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    used = rng.integers(1, alphabet + 1)
    support = rng.choice(alphabet, size=used, replace=False)
    roundtrip(rng.choice(support, size=n, p=rng.dirichlet(np.ones(used) * 0.3)), alphabet)


def test_encode_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        encode_indices(np.array([0, 4]), 4)
    with pytest.raises(ValueError):
        encode_indices(np.array([-1, 0]), 4)
    with pytest.raises(ValueError):
        encode_indices(np.array([], dtype=np.int64), 4)
    with pytest.raises(ValueError):
        encode_indices(np.array([0.0, 1.0]), 4)
    with pytest.raises(ValueError):
        encode_indices(np.array([0, 1]), 1)
    with pytest.raises(ValueError):
        encode_indices(np.array([0, 1]), 65536)


# ---------------------------------------------------------------- quantize_counts


def test_quantize_known_values() -> None:
    assert quantize_counts(np.array([1, 1, 1, 1]), 2).tolist() == [1, 1, 1, 1]
    assert quantize_counts(np.array([3, 1]), 2).tolist() == [3, 1]
    # equal remainders: the lower index gets the extra unit
    assert quantize_counts(np.array([1, 1, 1]), 2).tolist() == [2, 1, 1]
    # a rare symbol is clamped to 1 and the rest of the mass goes to the others
    assert quantize_counts(np.array([1, 0, 1000]), 4).tolist() == [1, 0, 15]
    assert quantize_counts(np.array([0, 9, 0]), 0).tolist() == [0, 1, 0]
    assert quantize_counts(np.array([1, 2, 1000, 1000]), 3).tolist() == [1, 1, 3, 3]


@FAST
@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=300), st.integers(0, 24))
def test_quantize_properties(counts: list[int], precision: int) -> None:
    c = np.array(counts, dtype=np.int64)
    used = int((c > 0).sum())
    if used == 0 or used > 1 << precision:
        with pytest.raises(ValueError):
            quantize_counts(c, precision)
        return
    q = quantize_counts(c, precision)
    assert q.dtype == np.int64 and q.shape == c.shape
    assert int(q.sum()) == 1 << precision
    assert np.all(q[c > 0] >= 1) and np.all(q[c == 0] == 0)
    np.testing.assert_array_equal(q, quantize_counts(c.copy(), precision))  # deterministic
    total = int(c.sum())
    if np.all(c[c > 0] * (1 << precision) >= total):
        # nothing clamped: largest remainder is within one unit of proportional
        exact = c[c > 0] * (1 << precision)
        assert np.all(np.abs(q[c > 0] * total - exact) < total)


def test_quantize_is_near_optimal() -> None:
    c = np.bincount(skewed(np.random.default_rng(2), 100000, 1024), minlength=1024)
    q = quantize_counts(c, 16)
    used = c > 0
    cross = float(np.dot(c[used], 16 - np.log2(q[used])))
    p = c[used] / c.sum()
    entropy = float(-np.dot(c[used], np.log2(p)))
    assert cross <= entropy * 1.002


def test_quantize_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        quantize_counts(np.array([0, 0]), 4)
    with pytest.raises(ValueError):
        quantize_counts(np.array([1, 1, 1]), 1)
    with pytest.raises(ValueError):
        quantize_counts(np.array([1, -1]), 4)
    with pytest.raises(ValueError):
        quantize_counts(np.array([0.5, 1.0]), 4)
    with pytest.raises(ValueError):
        quantize_counts(np.array([1, 1]), 31)


# ---------------------------------------------------------------- constriction exactness


def probe_model(model: constriction.stream.model.Categorical, quantile: int) -> tuple[int, int]:
    """Decode one symbol from state 2**32 + quantile; return (rank, state afterwards).

    constriction decodes: rank r with cdf[r] <= quantile < cdf[r+1], then
    state = (state >> 24) * freq[r] + (quantile - cdf[r]) = 256 * freq[r] + remainder.
    """
    coder = constriction.stream.stack.AnsCoder(np.array([quantile, 1], dtype=np.uint32))
    rank = int(coder.decode(model, 1)[0])
    return rank, int(coder.pos()[1])


@pytest.mark.parametrize("alphabet,precision", [(2, 1), (64, 9), (300, 12), (1000, 16), (3000, 24)])
def test_constriction_model_has_exactly_our_frequencies(alphabet: int, precision: int) -> None:
    rng = np.random.default_rng(precision)
    counts = np.bincount(skewed(rng, 50000, alphabet), minlength=alphabet)
    freqs = quantize_counts(counts, precision)
    freqs = freqs[freqs > 0]
    shift = 24 - precision
    left = np.concatenate(([0], np.cumsum(freqs)[:-1])) << shift
    model = E._model(freqs, precision)
    # every CDF boundary and every frequency, read back from constriction's own decoder
    for rank in np.linspace(0, len(freqs) - 1, min(len(freqs), 200)).astype(int):
        assert probe_model(model, int(left[rank])) == (rank, 256 * (int(freqs[rank]) << shift))
        if rank:
            assert probe_model(model, int(left[rank]) - 1)[0] == rank - 1
    assert probe_model(model, (1 << 24) - 1)[0] == len(freqs) - 1


def reference_rans_encode(ranks: np.ndarray, freqs: np.ndarray, precision: int) -> list[int]:
    """docs/FORMAT.md's rANS encoder with one table for every symbol."""
    return rans_encode(ranks.tolist(), [freqs] * len(ranks), precision)


def reference_rans_decode(words: list[int], count: int, freqs: np.ndarray, precision: int) -> list[int]:
    """docs/FORMAT.md's rANS decoder, in plain Python integers."""
    shift = 24 - precision
    cum = np.concatenate(([0], np.cumsum(freqs))) << shift
    words = list(words)
    state = words.pop() if words else 0
    if words:
        state = state << 32 | words.pop()
    out = []
    for _ in range(count):
        q = state & 0xFFFFFF
        r = int(np.searchsorted(cum, q, side="right")) - 1
        state = (state >> 24) * (int(freqs[r]) << shift) + q - int(cum[r])
        if state < 1 << 32 and words:
            state = state << 32 | words.pop()
        out.append(r)
    assert state == 0 and not words
    return out


@pytest.mark.parametrize("alphabet,n", [(5, 40), (64, 3000), (1024, 3000)])
def test_payload_matches_reference_rans(alphabet: int, n: int) -> None:
    # Independent cross-check: an integer-only rANS with our frequencies produces the
    # very words constriction wrote, so its model must be exactly our table.
    x = skewed(np.random.default_rng(n), n, alphabet)
    section = encode_indices(x, alphabet)
    plan = E._plan(np.bincount(x, minlength=alphabet))
    payload = section[1 + -(-plan.table_bits // 8) :]
    words = np.frombuffer(payload, dtype=">u4").tolist()
    ranks = np.searchsorted(plan.symbols, x)
    assert reference_rans_encode(ranks, plan.freqs, plan.precision) == words
    assert reference_rans_decode(words, n, plan.freqs, plan.precision) == ranks.tolist()


# ---------------------------------------------------------------- estimates


@pytest.mark.parametrize(
    "alphabet,n", [(2, 100), (2, 30000), (64, 24576), (1024, 24576), (4096, 5000), (4096, 100000), (65535, 20000)]
)
def test_estimate_matches_real_size(alphabet: int, n: int) -> None:
    x = skewed(np.random.default_rng(n + alphabet), n, alphabet)
    real = len(encode_indices(x, alphabet)) * 8
    estimate = estimate_section_bits(np.bincount(x, minlength=alphabet))
    assert isinstance(estimate, int)
    assert abs(estimate - real) <= 0.005 * real + 64


def test_estimate_single_symbol_is_exact() -> None:
    x = np.full(1000, 5)
    assert estimate_section_bits(np.bincount(x, minlength=64)) == len(encode_indices(x, 64)) * 8


def test_empirical_entropy() -> None:
    assert empirical_entropy_bits(np.array([0, 1, 2, 3] * 250), 4) == pytest.approx(2000.0)
    assert empirical_entropy_bits(np.full(100, 3), 8) == 0.0
    x = np.array([0] * 75 + [1] * 25)
    expected = -(75 * math.log2(0.75) + 25 * math.log2(0.25))
    assert empirical_entropy_bits(x, 2) == pytest.approx(expected)


# ---------------------------------------------------------------- corrupt input


@pytest.fixture(scope="module")
def sample() -> tuple[np.ndarray, bytes]:
    x = skewed(np.random.default_rng(9), 600, 64)
    x[-1] = 5  # not the lowest used symbol (see test_short_count_is_detected)
    return x, encode_indices(x, 64)


def assert_rejected_or_valid(section: bytes, count: int, alphabet: int) -> None:
    """A damaged section must raise EntropyError or decode to a well-formed grid, nothing else.

    (Some payload damage is undetectable by construction; the container CRC catches it.)
    """
    try:
        out = decode_indices(section, count, alphabet)
    except EntropyError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert out.shape == (count,) and out.dtype == np.int64
    assert out.min() >= 0 and out.max() < alphabet


def test_truncated_table_always_rejected(sample: tuple[np.ndarray, bytes]) -> None:
    x, section = sample
    table_end = 1 + -(-E._plan(np.bincount(x, minlength=64)).table_bits // 8)
    for cut in range(table_end):
        with pytest.raises(EntropyError):
            decode_indices(section[:cut], x.size, 64)


def test_truncated_payload_never_crashes(sample: tuple[np.ndarray, bytes]) -> None:
    x, section = sample
    rejected = 0
    for cut in range(len(section)):
        try:
            decode_indices(section[:cut], x.size, 64)
        except EntropyError:
            rejected += 1
    assert rejected >= len(section) * 0.9


def test_bit_flips_are_rejected_or_harmless(sample: tuple[np.ndarray, bytes]) -> None:
    x, section = sample
    for bit in range(0, len(section) * 8, 3):
        damaged = bytearray(section)
        damaged[bit // 8] ^= 1 << (bit % 8)
        assert_rejected_or_valid(bytes(damaged), x.size, 64)


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda s: bytes([25]) + s[1:], "precision"),
        (lambda s: s + b"\x00\x00\x00", "multiple of 4"),
        (lambda s: s + b"\x01\x00\x00\x00", "payload"),
        (lambda s: b"", "empty"),
    ],
)
def test_specific_corruptions(sample: tuple[np.ndarray, bytes], mutate, message: str) -> None:
    x, section = sample
    with pytest.raises(EntropyError, match=message):
        decode_indices(mutate(section), x.size, 64)


def test_single_symbol_section_with_payload_is_rejected() -> None:
    section = encode_indices(np.zeros(10, dtype=np.int64), 4)
    with pytest.raises(EntropyError):
        decode_indices(section + b"\x00\x00\x00\x01", 10, 4)


def test_bad_caller_arguments_raise_entropy_error(sample: tuple[np.ndarray, bytes]) -> None:
    x, section = sample
    for count, alphabet in [(0, 64), (-5, 64), (E.MAX_COUNT + 1, 64), (x.size, 1), (x.size, 70000)]:
        with pytest.raises(EntropyError):
            decode_indices(section, count, alphabet)
    # a smaller alphabet than the table names
    with pytest.raises(EntropyError):
        decode_indices(section, x.size, int(x.max()))


def test_short_count_is_detected(sample: tuple[np.ndarray, bytes]) -> None:
    x, section = sample
    # Stopping early leaves rANS state behind unless the last index is the lowest used
    # symbol coded onto the empty initial state (then it cost nothing and is invisible);
    # for the same reason extra trailing lowest symbols cannot be detected at all.
    assert x[-1] != x.min()
    with pytest.raises(EntropyError, match="payload"):
        decode_indices(section, x.size - 1, 64)


@FAST
@given(st.binary(max_size=64), st.integers(1, 500), st.integers(2, 70))
def test_random_bytes_never_escape(data: bytes, count: int, alphabet: int) -> None:
    assert_rejected_or_valid(data, count, alphabet)


@FAST
@given(st.data())
def test_random_damage_never_escapes(sample: tuple[np.ndarray, bytes], data: st.DataObject) -> None:
    x, section = sample
    damaged = bytearray(section)
    for _ in range(data.draw(st.integers(1, 4))):
        damaged[data.draw(st.integers(0, len(damaged) - 1))] = data.draw(st.integers(0, 255))
    assert_rejected_or_valid(bytes(damaged), x.size, 64)


def test_a_payload_too_small_for_the_count_is_rejected() -> None:
    """More indices than the payload can hold (a header declaring a larger image): refused, not decoded
    into garbage for the synthesis."""
    rng = np.random.default_rng(0)
    indices = rng.integers(0, 50, 500)
    section = encode_indices(indices, 50)
    assert np.array_equal(decode_indices(section, 500, 50), indices)
    with pytest.raises(EntropyError, match="payload holds"):
        decode_indices(section, 200_000, 50)
