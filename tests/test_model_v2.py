"""Model v2 (raq-photo2): format 3 streams with a residual stage, end to end on a real photo, and trim."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import raqcodec
from raqcodec.codec import encode_detailed
from raqcodec.io import bitstream
from raqcodec.model.registry import load
from raqcodec.model.residual import coefficients_in, pad_to_blocks
from raqcodec.trim import TrimError, trim, trimmed_sizes

MODEL = "raq-photo2"


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(float) - b.astype(float)) ** 2)))


@pytest.fixture(scope="module")
def crop(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    import matplotlib.cbook

    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))[100:292, 120:376].copy()  # 256x192, a face and a uniform


@pytest.fixture(scope="module")
def high_result(crop: np.ndarray) -> raqcodec.EncodeResult:
    return encode_detailed(crop, bpp=1.5, model=MODEL)


@pytest.fixture(scope="module")
def high(high_result: raqcodec.EncodeResult) -> bytes:
    return high_result.data


def test_budget_is_used_by_the_residual_stage(crop: np.ndarray, high: bytes, high_result) -> None:
    # the largest codebook fits 1.5 bpp: the residual takes the rest, and no refinement path runs at that size
    assert "refinement search" not in high_result.stages
    assert "residual stage" in high_result.stages
    header = bitstream.read_header(high)
    stream = bitstream.unpack(high)
    assert header.version == 3 and len(header.layers) == 1 and stream.refinement_sections
    bpp = len(high) * 8 / (crop.shape[0] * crop.shape[1])
    assert 0.9 * 1.5 <= bpp <= 1.5
    decoded = np.asarray(raqcodec.decode(high))
    base_only = np.asarray(raqcodec.decode(trim(high, groups=0)))
    assert _psnr(decoded, crop) > _psnr(base_only, crop) + 3.0  # the residual is worth its bytes
    assert _psnr(decoded, crop) > 33.0


def test_trimmed_streams_decode_to_their_sections(crop: np.ndarray, high: bytes) -> None:
    model = load(MODEL)
    stage = model.residual
    assert stage is not None
    stream = bitstream.unpack(high)
    ((level, _),) = stream.header.layers
    sizes = trimmed_sizes(high)
    assert sizes == sorted(sizes) and sizes[-1] == len(high)
    base = np.asarray(raqcodec.decode(trim(high, groups=0)))
    full_symbols = stage.decode_groups(list(stream.refinement_sections), stage.classes(pad_to_blocks(base)), level)
    for kept in range(len(stream.refinement_sections) + 1):
        cut = trim(high, groups=kept)
        assert len(cut) == sizes[kept]
        symbols = full_symbols.copy()
        symbols[:, coefficients_in(kept) :] = 0
        expected = stage.reconstruct(pad_to_blocks(base), symbols, level) if kept else pad_to_blocks(base)
        assert np.array_equal(np.asarray(raqcodec.decode(cut)), expected[: crop.shape[0], : crop.shape[1]])
    budget = (sizes[1] + sizes[2]) / 2 * 8 / (crop.shape[0] * crop.shape[1])
    assert len(trim(high, bpp=budget)) == sizes[1]
    with pytest.raises(TrimError, match="base stage"):
        trim(high, bpp=sizes[0] * 8 / (crop.shape[0] * crop.shape[1]) / 2)


def test_inspect_returns_both_stages(crop: np.ndarray, high: bytes) -> None:
    info = raqcodec.inspect(high)
    h, w = crop.shape[0] // 4, crop.shape[1] // 4
    assert info["indices"].shape == (h, w) and info["codebook"].shape[1] == 64
    blocks = (crop.shape[0] // 8) * (crop.shape[1] // 8)
    (layer,) = info["residual_layers"]
    symbols = layer["symbols"]
    assert symbols.shape == (blocks, 192) and symbols.any()
    stream = bitstream.unpack(high)
    assert layer["groups"] == len(stream.refinement_sections) and not symbols[:, 24 * layer["groups"] :].any()
    assert np.array_equal(info["residual_coefficients"], symbols * layer["step"])
    assert info["residual_bits"] == 8 * sum(len(x) for x in stream.refinement_sections)
    basis = info["residual_basis"]
    assert np.allclose(basis @ basis.T, np.eye(192), atol=1e-3)  # orthonormal up to its 2^-14 rounding
    assert "residual_layers" not in raqcodec.inspect(trim(high, groups=0))


def test_a_format_2_stream_has_nothing_to_trim(crop: np.ndarray) -> None:
    data = raqcodec.encode(crop, codebook_size=64, model="raq-photo", refine=0)
    with pytest.raises(TrimError, match="format 2"):
        trim(data, bpp=0.1)


def test_trim_command(tmp_path: Path, high: bytes) -> None:
    source = tmp_path / "high.raq"
    source.write_bytes(high)
    out = tmp_path / "low.raq"
    run = subprocess.run(
        [sys.executable, "-m", "raqcodec", "trim", str(source), "--sections", "1", "-o", str(out)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert out.read_bytes() == trim(high, groups=1)
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    run = subprocess.run(
        [sys.executable, "-m", "raqcodec", "trim", str(source), "--sections", "1", "-o", str(notes)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and notes.read_text() == "mine"
    assert run.stderr.count("\n") == 1 and "not written by raqcodec" in run.stderr
    run = subprocess.run(
        [sys.executable, "-m", "raqcodec", "trim", str(source), "--sections", "1", "-o", str(source)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and source.read_bytes() == high


# ---------------------------------------------------------------- layers: files that cut to a smaller budget


@pytest.fixture(scope="module")
def layered(crop: np.ndarray) -> bytes:
    return encode_detailed(crop, bpp=1.5, model=MODEL, layers=(0.9,)).data


def test_a_layered_file_cuts_to_the_file_coded_for_its_first_budget(
    crop: np.ndarray, high: bytes, layered: bytes
) -> None:
    pixels = crop.shape[0] * crop.shape[1]
    layers = bitstream.read_header(layered).layers
    assert len(layers) == 2 and layers[0].level < layers[1].level
    assert 0.9 * 1.5 <= len(layered) * 8 / pixels <= 1.5
    first = trim(layered, groups=layers[0].groups)
    assert first == encode_detailed(crop, bpp=0.9, model=MODEL).data  # the 0.9 bpp file, byte for byte
    cut = trim(layered, bpp=0.9)
    assert len(first) <= len(cut) <= 0.9 * pixels / 8
    whole = _psnr(np.asarray(raqcodec.decode(layered)), crop)
    assert whole > _psnr(np.asarray(raqcodec.decode(first)), crop) + 2.0  # the second layer is worth its bytes
    assert whole > _psnr(np.asarray(raqcodec.decode(high)), crop) - 1.0  # and layering costs little


def test_every_cut_of_a_layered_file_decodes_to_its_sections(crop: np.ndarray, layered: bytes) -> None:
    stage = load(MODEL).residual
    assert stage is not None
    stream = bitstream.unpack(layered)
    base = pad_to_blocks(np.asarray(raqcodec.decode(trim(layered, groups=0))))
    _, symbols = stage.decode_layers(list(stream.refinement_sections), stream.header.layers, stage.classes(base))
    for kept in range(len(stream.refinement_sections) + 1):
        values, left = np.zeros_like(symbols[0]), kept
        for layer, layer_symbols in zip(stream.header.layers, symbols, strict=True):
            groups = min(layer.groups, left)
            left -= groups
            values[:, : coefficients_in(groups)] += (
                layer_symbols[:, : coefficients_in(groups)] * stage.steps[layer.level]
            )
        expected = stage.reconstruct_values(base, values)
        decoded = np.asarray(raqcodec.decode(trim(layered, groups=kept)))
        assert np.array_equal(decoded, expected[: crop.shape[0], : crop.shape[1]])


def test_layers_are_checked(crop: np.ndarray, layered: bytes) -> None:
    with pytest.raises(raqcodec.BudgetError, match="layered residual stage"):
        raqcodec.encode(crop, bpp=0.5, layers=(0.2,), model="raq-photo")
    for bad in [(0.6,), (0.3, 0.2), (0.1, 0.2, 0.3, 0.4)]:
        with pytest.raises(raqcodec.BudgetError, match="ascending budgets below"):
            raqcodec.encode(crop, bpp=0.5, layers=bad, model=MODEL)
    with pytest.raises(raqcodec.BudgetError, match="need a bpp budget"):
        raqcodec.encode(crop, codebook_size=64, layers=(0.2,), model=MODEL)
    stream = bitstream.unpack(layered)
    first, second = stream.header.layers
    swapped = bitstream.Layer(second.level, first.groups), bitstream.Layer(first.level, second.groups)
    header = dataclasses.replace(stream.header, layers=swapped)
    with pytest.raises(raqcodec.CodecError, match="not finer"):
        raqcodec.decode(bitstream.pack(dataclasses.replace(stream, header=header)))


def test_layers_option(tmp_path: Path, crop: np.ndarray) -> None:
    source = tmp_path / "crop.png"
    Image.fromarray(crop).save(source)
    for args in (["--layers", "0.3", "-k", "64"], ["--bpp", "0.5", "--layers", "0.5"], ["--bpp", "1", "--layers", "x"]):
        run = subprocess.run(
            [sys.executable, "-m", "raqcodec", "encode", str(source), "--model", MODEL, *args],
            capture_output=True,
            text=True,
        )
        assert run.returncode == 2 and "--layers" in run.stderr and "Traceback" not in run.stderr
    assert not list(tmp_path.glob("*.raq"))


def test_effort_2_skips_the_rate_constrained_search_where_a_residual_layer_wins(
    crop: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 0.36 bpp the largest codebook does not fit this crop (the rate-constrained search would run, from
    K~ = 407), yet K~ = 256 with a residual layer decodes more than RATE_CONSTRAINED_REACH closer than the
    base stage's best: effort 2 skips the search (also for the budget: above RATE_CONSTRAINED_MAX_RATE bits
    a position) and writes the file the search would have lost to."""
    from raqcodec.ratecontrol import search

    searched: list[int] = []
    original = search.ecvq.search

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        searched.append(args[3])  # the largest size whose nearest-neighbour grid fits
        return original(*args, **kwargs)

    monkeypatch.setattr(search.ecvq, "search", spy)
    model = load(MODEL)
    inf = float("inf")
    effort2 = search.EFFORTS[2]
    assert 0.36 * 16 > effort2.rate_constrained_max_rate  # 16 pixels a latent position
    any_rate = dataclasses.replace(effort2, rate_constrained_max_rate=inf)
    skipped = encode_detailed(crop, bpp=0.36, model=model, search=any_rate)
    assert searched == [] and "rate-constrained choice" not in skipped.stages
    assert bitstream.read_header(skipped.data).layers  # a residual layer won
    assert encode_detailed(crop, bpp=0.36, model=model, effort=2).data == skipped.data
    assert searched == []
    events: list[str] = []
    always = dataclasses.replace(any_rate, rate_constrained_reach=inf)
    searched_result = encode_detailed(crop, bpp=0.36, model=model, search=always, progress=events.append)
    assert len(searched) == 1 and "rate-constrained choice" in searched_result.stages
    # the residual stage ranks its candidates, the search runs, then the residual stage codes the winner
    assert events[3:] == [
        "rate control",
        "refinement search",
        "residual stage",
        "rate-constrained choice",
        "residual stage",
        "container",
    ]
    assert searched_result.data == skipped.data


def test_the_largest_codebook_is_coded_only_if_it_wins_and_settled_if_its_estimate_was_short(
    crop: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 1.5 bpp the largest codebook fits by its estimate: the residual search compares it with the
    ladder's sizes uncoded, and only the winner's index section is coded. Where the estimate was short
    of the real section (here made 40% short), a winner that overruns starts the search again, settled:
    the file still fits."""
    from raqcodec.entropy.coders import ContextCoder
    from raqcodec.ratecontrol import search

    model = load(MODEL)
    coded: list[int] = []
    original_encode = ContextCoder.encode

    def encode(self, grid, codebook):  # type: ignore[no-untyped-def]
        coded.append(codebook.shape[0])
        return original_encode(self, grid, codebook)

    monkeypatch.setattr(ContextCoder, "encode", encode)
    result = encode_detailed(crop, bpp=1.5, model=model, effort=2)
    assert result.codebook_size < model.size_range[1] and model.size_range[1] not in coded
    assert coded == [result.codebook_size]  # the winner's section, once

    original_estimate = ContextCoder.estimate_bits
    largest = model.size_range[1]

    def short(self, grid, codebook, like=None):  # type: ignore[no-untyped-def]
        bits = original_estimate(self, grid, codebook, like)
        return int(bits * 0.6) if codebook.shape[0] == largest else bits

    settled: list[bool] = []
    original_fit = search._fit

    def fit(*args, **kwargs):  # type: ignore[no-untyped-def]
        settled.append(kwargs.get("settle", False))
        return original_fit(*args, **kwargs)

    monkeypatch.setattr(ContextCoder, "estimate_bits", short)
    monkeypatch.setattr(search, "ladder_candidates", lambda *args: [])  # the largest size is the only candidate
    monkeypatch.setattr(search, "_fit", fit)
    # the largest grid's section is 0.42 bpp: it fits 0.35 by the short estimate, not really
    tight = encode_detailed(crop, bpp=0.35, model=model, effort=2)
    assert settled == [False, True]
    assert len(tight.data) * 8 / (crop.shape[0] * crop.shape[1]) <= 0.35 and tight.codebook_size < largest


def test_a_budget_below_the_smallest_file_names_that_file_and_no_upper_bound(crop: np.ndarray) -> None:
    """With a residual stage the base stage's largest codebook is no ceiling (files reach 1+ bpp), so the
    error names only the smallest file, not the base stage's range."""
    with pytest.raises(raqcodec.BudgetError) as caught:
        raqcodec.encode(crop, bpp=0.001)
    message = str(caught.value)
    assert "below the smallest file model raq-photo2 can write for this image" in message
    assert " to " not in message and "codebook size 2)" in message
