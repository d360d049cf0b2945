"""Model v2 (raq-photo2): format 3 streams with a residual stage, end to end on a real photo, and trim."""

from __future__ import annotations

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
from raqcodec.model.residual import GROUP_COEFFICIENTS, pad_to_blocks
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
def high(crop: np.ndarray) -> bytes:
    return encode_detailed(crop, bpp=1.5, model=MODEL).data


def test_budget_is_used_by_the_residual_stage(crop: np.ndarray, high: bytes) -> None:
    header = bitstream.read_header(high)
    stream = bitstream.unpack(high)
    assert header.version == 3 and header.refine_level is not None and stream.refinement_sections
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
    level = stream.header.refine_level
    assert level is not None
    sizes = trimmed_sizes(high)
    assert sizes == sorted(sizes) and sizes[-1] == len(high)
    base = np.asarray(raqcodec.decode(trim(high, groups=0)))
    full_symbols = stage.decode_groups(list(stream.refinement_sections), stage.classes(pad_to_blocks(base)), level)
    for kept in range(len(stream.refinement_sections) + 1):
        cut = trim(high, groups=kept)
        assert len(cut) == sizes[kept]
        symbols = full_symbols.copy()
        symbols[:, kept * GROUP_COEFFICIENTS :] = 0
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
    symbols = info["residual_symbols"]
    assert symbols.shape == (blocks, 192) and symbols.any()
    stream = bitstream.unpack(high)
    assert not symbols[:, 24 * len(stream.refinement_sections) :].any()
    assert info["residual_bits"] == 8 * sum(len(x) for x in stream.refinement_sections)
    basis = info["residual_basis"]
    assert np.allclose(basis @ basis.T, np.eye(192), atol=1e-3)  # orthonormal up to its 2^-14 rounding
    assert "residual_symbols" not in raqcodec.inspect(trim(high, groups=0))


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
