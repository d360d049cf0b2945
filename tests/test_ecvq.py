"""Entropy-constrained index choice (raqcodec.ratecontrol.ecvq) and its place in the budget search."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import smooth_image

from raqcodec import codec
from raqcodec.entropy.context_coding import ideal_bits
from raqcodec.model import registry
from raqcodec.model.loaded import CodecModel
from raqcodec.ratecontrol import ecvq
from raqcodec.ratecontrol.search import SearchSettings


@pytest.fixture(scope="module")
def bundled() -> CodecModel:
    return registry.load("raq-photo")


def _latents(model: CodecModel, side: int = 96) -> tuple[torch.Tensor, tuple[int, int]]:
    rgb = smooth_image(side, side, seed=3)
    return model.analyse(rgb), (side // 4, side // 4)


@pytest.mark.parametrize("lam, sharpness", [(0.0, 0), (0.5, 0), (2.0, 16)])
def test_counted_bits_are_the_integer_models_information(bundled, lam: float, sharpness: int) -> None:
    rows, shape = _latents(bundled)
    book, float_book = bundled.codebook("seq2seq", 64), bundled.float_codebook("seq2seq", 64)
    distances = ecvq.squared_distances(rows, float_book)
    scale = float(np.median(distances.min(1)))
    choice = ecvq.rate_constrained_indices(bundled.context, book, distances, shape, lam * scale, sharpness)
    exact = ideal_bits(bundled.context, book, choice.indices, sharpness)
    assert choice.bits == pytest.approx(exact + ecvq.SECTION_OVERHEAD_BITS, rel=1e-9)
    if lam == 0:
        assert np.array_equal(choice.indices.ravel(), distances.argmin(1))


def test_a_stronger_lambda_trades_distortion_for_bits(bundled) -> None:
    rows, shape = _latents(bundled)
    book, float_book = bundled.codebook("seq2seq", 256), bundled.float_codebook("seq2seq", 256)
    distances = ecvq.squared_distances(rows, float_book)
    scale = float(np.median(distances.min(1)))
    choices = [ecvq.rate_constrained_indices(bundled.context, book, distances, shape, lam * scale) for lam in (0, 1, 4)]
    bits = [c.bits for c in choices]
    distortion = [c.distortion for c in choices]
    assert bits[0] > bits[1] > bits[2]
    assert distortion[0] < distortion[1] < distortion[2]
    assert bits[2] < 0.6 * bits[0]


def test_fit_lambda_finds_the_smallest_fitting_lambda() -> None:
    calls: list[float] = []

    def choose(lam: float) -> ecvq.Choice:  # bits fall with lambda: 1000 / (1 + lam)
        calls.append(lam)
        return ecvq.Choice(np.zeros((1, 1), np.int64), lam, 1000.0 / (1.0 + lam))

    fitted = ecvq.fit_lambda(choose, budget_bits=250.0, start=0.3)  # exact answer: lambda = 3
    assert fitted is not None
    lam, choice = fitted.lam, fitted.choice
    assert choice.bits <= 250.0
    assert 3.0 <= lam <= 3.0 * ecvq.LAMBDA_PRECISION
    assert len(calls) < 12
    assert ecvq.fit_lambda(lambda lam: ecvq.Choice(np.zeros((1, 1)), 0.0, 1e9), 10.0, 0.3) is None
    nearest = ecvq.fit_lambda(choose, budget_bits=2000.0, start=0.3)  # fits without a rate term
    assert nearest is not None and nearest.lam < 1e-3 * 0.3


def test_fit_lambda_with_fill_takes_a_full_fitting_choice_in_fewer_passes() -> None:
    def passes(fill: float | None, start: float, growth: float) -> tuple[int, float | None]:
        calls: list[float] = []

        def choose(lam: float) -> ecvq.Choice:  # bits fall with lambda: 1000 / (1 + lam)
            calls.append(lam)
            return ecvq.Choice(np.zeros((1, 1), np.int64), lam, 1000.0 / (1.0 + lam))

        got = ecvq.fit_lambda(choose, budget_bits=250.0, start=start, growth=growth, fill=fill)
        assert got is None or got.choice.bits <= 250.0
        return len(calls), None if got is None else got.choice.bits

    for start, growth in ((0.3, 3.0), (40.0, 1.15)):  # the answer (lambda 3) near, and 13x off
        bisected, _ = passes(None, start, growth)
        interpolated, bits = passes(0.98, start, growth)
        assert bits is not None and bits >= 0.97 * 250.0  # 0.98, or the bracket within LAMBDA_PRECISION
        assert interpolated < bisected
    # 30x off: steps of 1.15 do not get there in LAMBDA_MAX_STEPS; extrapolation does, in a few passes
    assert passes(None, 0.1, 1.15)[1] is None
    count, bits = passes(0.98, 0.1, 1.15)
    assert bits is not None and bits >= 0.97 * 250.0 and count <= 8


def test_fit_lambda_starts_along_a_similar_grids_slope_and_reports_its_own() -> None:
    """Log bits fall about linearly with lambda; a fit that knows the slope (from the crop, or the last
    size) reaches the accepted range in one step from the start, and reports the slope it met."""

    def fit(slope: float | None) -> tuple[int, ecvq.Fitted]:
        calls: list[float] = []

        def choose(lam: float) -> ecvq.Choice:  # 1000 e^(-lambda / 2): the budget of 250 at lambda = 2.77
            calls.append(lam)
            return ecvq.Choice(np.zeros((1, 1), np.int64), lam, 1000.0 * math.exp(-0.5 * lam))

        got = ecvq.fit_lambda(choose, budget_bits=250.0, start=1.0, growth=1.15, fill=0.98, slope=slope)
        assert got is not None and 0.98 * 250.0 <= got.choice.bits <= 250.0
        return len(calls), got

    guided, fitted = fit(-0.5)
    unguided, _ = fit(None)
    assert guided == 2 and unguided > guided
    assert fitted.slope is not None and abs(fitted.slope + 0.5) < 0.01


def test_the_central_crop_is_the_middle_of_the_grid() -> None:
    distances = np.arange(80 * 64, dtype=np.float64)[:, None]  # position number as the only column
    (ch, cw), crop = ecvq.central_crop((80, 64), distances)
    assert (ch, cw) == (40, 32)
    assert crop[0, 0] == 20 * 64 + 16 and crop[-1, 0] == 59 * 64 + 47
    assert ecvq.central_crop((10, 10), distances[:100])[0] == (10, 10)


def test_tight_budget_is_filled_by_a_larger_rate_constrained_codebook(tmp_path: Path, photo: Path) -> None:
    """Grace Hopper (384x480) at 0.08 bpp: the nearest-neighbour and refined grids of the sizes that fit
    leave a fifth of the budget unused (measured: K~=7, 0.0625 bpp); the rate-constrained grid of a larger
    codebook fills it, stays within it and decodes closer (K~=18, 0.0799 bpp, +1.1 dB)."""
    image = PIL.Image.open(photo).convert("RGB").resize((384, 480))
    source = np.asarray(image, dtype=np.float64)

    def encode(rate_constrained: bool) -> tuple[codec.EncodeResult, float]:
        settings = SearchSettings(rate_constrained=rate_constrained)
        result = codec.encode_detailed(image, bpp=0.08, model="raq-photo", search=settings)
        decoded = np.asarray(codec.decode(result.data).convert("RGB"), dtype=np.float64)
        return result, 10 * np.log10(255**2 / np.mean((decoded - source) ** 2))

    (plain, plain_psnr), (constrained, constrained_psnr) = encode(False), encode(True)
    assert plain.bpp < 0.85 * 0.08
    assert 0.9 * 0.08 <= constrained.bpp <= 0.08
    assert constrained.codebook_size > plain.codebook_size
    assert constrained_psnr > plain_psnr + 0.5
