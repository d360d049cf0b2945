"""A short run of the decoder fuzzer (benchmarks/fuzz_decode.py) with the tiny test model: every mutated
or truncated stream either decodes or is rejected with a one-line user error."""

from __future__ import annotations

import importlib.util
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import raqcodec
from raqcodec.io import bitstream

_spec = importlib.util.spec_from_file_location(
    "fuzz_decode", Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz_decode.py"
)
assert _spec is not None and _spec.loader is not None
fuzz_decode = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz_decode)


@pytest.fixture(scope="module")
def tiny(tiny_model_path: Path) -> Any:
    return raqcodec.load_model(str(tiny_model_path))


@pytest.fixture(scope="module")
def seeds(tiny: Any) -> list[bytes]:
    return fuzz_decode.make_seeds(tiny, (2, 16, 64))


def test_seeds_cover_both_coders_and_decode(seeds: list[bytes], tiny: Any) -> None:
    coders = {bitstream.read_header(s).coder for s in seeds}
    assert coders == {"order0", "context"}
    assert any(bitstream.read_header(s).has_alpha for s in seeds)
    for s in seeds:
        assert fuzz_decode.run_case(s, tiny, 10.0) == ("decoded", "")


@pytest.mark.parametrize("name", sorted(fuzz_decode.MUTATORS))
def test_every_mutator_changes_the_stream(name: str, seeds: list[bytes]) -> None:
    rng = np.random.default_rng(0)
    changed = sum(fuzz_decode.MUTATORS[name](seeds[i % len(seeds)], rng) != seeds[i % len(seeds)] for i in range(20))
    assert changed >= 15


def test_fixed_crc_is_valid(seeds: list[bytes]) -> None:
    damaged = fuzz_decode.flip_bits(seeds[0], np.random.default_rng(3))
    fixed = fuzz_decode.fix_crc(damaged)
    assert zlib.crc32(fixed[:-4]) == int.from_bytes(fixed[-4:], "big")
    assert fuzz_decode.fix_crc(seeds[0]) == seeds[0]


def test_a_broken_decoder_is_reported_as_failed(seeds: list[bytes], tiny: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness itself can fail: an unexpected exception is a FAILED case, not a rejection."""

    def broken(*args: Any, **kwargs: Any) -> None:
        raise KeyError("bug")

    monkeypatch.setattr(raqcodec, "decode", broken)
    outcome, detail = fuzz_decode.run_case(seeds[0], tiny, 10.0)
    assert outcome == "FAILED" and "KeyError" in detail


@settings(max_examples=250, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_mutated_streams_decode_or_fail_with_one_line(seeds: list[bytes], tiny: Any, case_seed: int) -> None:
    rng = np.random.default_rng(case_seed)
    name, data = fuzz_decode.mutate(seeds[int(rng.integers(len(seeds)))], rng)
    outcome, detail = fuzz_decode.run_case(data, tiny, 10.0)
    assert outcome != "FAILED", f"{name}: {detail}"
