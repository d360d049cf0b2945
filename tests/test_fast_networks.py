"""The encoder's preview network (``raqcodec.model.fast_networks``): fast where the CPU allows, close to float32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from raqcodec.model import fast_networks as preview
from raqcodec.model.registry import load


def test_native_bfloat16_is_read_from_the_cpu_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    for flags, native in (("fpu avx2 avx512f", False), ("fpu avx512f avx512_bf16", True), ("amx_bf16 amx_tile", True)):
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        monkeypatch.setattr(preview, "CPU_FLAGS", cpuinfo)
        preview.native_bfloat16.cache_clear()
        assert preview.native_bfloat16() == (native and torch.backends.mkldnn.is_available())
    monkeypatch.setattr(preview, "CPU_FLAGS", tmp_path / "absent")
    preview.native_bfloat16.cache_clear()
    assert not preview.native_bfloat16()
    preview.native_bfloat16.cache_clear()


def test_the_preview_stays_within_a_level_of_the_float32_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whichever precision this machine previews in, candidates are scored on (nearly) the float32 image."""
    model = load("raq-photo2")
    rng = np.random.default_rng(0)
    grid = (24, 40)
    indices = rng.integers(0, 256, grid[0] * grid[1])
    fast = model.preview(indices, grid, "seq2seq", 256).astype(np.int64)
    book = model.float_codebook("seq2seq", 256)
    latents = book[torch.from_numpy(indices)].reshape(*grid, -1).permute(2, 0, 1)[None]
    with torch.no_grad():
        exact = model.float_decoder(latents)[0].clamp(0, 1).mul(255).round().permute(1, 2, 0).numpy()
    difference = np.abs(fast - exact.astype(np.int64))
    assert fast.shape == (4 * grid[0], 4 * grid[1], 3)
    assert difference.max() <= 2 and difference.mean() < 0.5
    assert (model._fast("decoder").dtype == torch.bfloat16) == preview.native_bfloat16()


def test_the_fast_analysis_stays_close_to_float32_and_tiles_alike() -> None:
    """The encoder's fast analysis: latents within 2% of float32's (bfloat16 keeps 8 bits), tiled as whole."""
    model = load("raq-photo2")
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    rgb[:48] = 128  # a flat half and a noisy half
    exact, fast = model.analyse(rgb), model.analyse(rgb, fast=True)
    assert float((fast - exact).norm() / exact.norm()) < 0.02
    tiled = model.analyse(rgb, max_positions=300, fast=True)  # up to a bfloat16 rounding here and there
    assert float((tiled - fast).abs().max()) <= 0.01 * float(fast.abs().max())


def test_the_preview_tiles_like_the_decoder() -> None:
    """Over the tile budget the preview runs tile by tile with the decoder's halo (memory bounded like
    ``synthesize``): the same image as whole, up to a rounding flip of the fast precision here and there."""
    model = load("raq-photo2")
    rng = np.random.default_rng(2)
    grid = (40, 56)
    indices = rng.integers(0, 128, grid[0] * grid[1])
    whole = model.preview(indices, grid, "seq2seq", 128).astype(np.int64)
    tiled = model.preview(indices, grid, "seq2seq", 128, max_positions=grid[0] * grid[1] // 3).astype(np.int64)
    assert model._plan(grid, grid[0] * grid[1] // 3, model.decoder_halo) is not None  # really tiled
    difference = np.abs(tiled - whole)
    assert tiled.shape == whole.shape and difference.max() <= 1 and difference.mean() < 0.01
