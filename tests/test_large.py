"""Large images in bounded memory: tiled evaluation agrees with whole-image evaluation.

Every test forces tiling on small images with a tiny budget (``max_tile_pixels`` / ``max_positions``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import TINY, smooth_image
from PIL import Image

import raqcodec
from raqcodec import codec
from raqcodec.cli import main
from raqcodec.entropy import context, context_coding
from raqcodec.entropy.schedule import Schedule
from raqcodec.model import tiling
from raqcodec.model.loaded import CodecModel
from raqcodec.nn.autoencoder import Decoder, Encoder
from raqcodec.nn.config import ModelConfig


@pytest.fixture(scope="module")
def tiny(tiny_model_path: Path) -> CodecModel:
    return CodecModel.load(tiny_model_path)


def _padded(rgb: np.ndarray) -> np.ndarray:
    return np.pad(rgb, ((0, -rgb.shape[0] % 4), (0, -rgb.shape[1] % 4), (0, 0)), mode="edge")


# -- receptive fields ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", [ModelConfig(), TINY, ModelConfig(res_blocks=3, decoder_res_blocks=1)])
def test_radii_follow_the_architecture(cfg: ModelConfig) -> None:
    # decoder: 3x3 stem, one 3x3 per residual block, 3x3 head; encoder: the 8x8/4 stem reaches one latent
    assert tiling.decoder_radius(Decoder(cfg)) == 2 + cfg.decoder_blocks
    assert tiling.encoder_radius(Encoder(cfg), cfg.downsampling) == 1 + cfg.res_blocks


def test_decoder_radius_is_exact(tiny: CodecModel) -> None:
    """Changing one latent changes pixels up to r cells away (float decoder: tight) and never further
    (exact decoder, the one tiles rely on)."""
    r, grid, centre = tiny.decoder_halo, (15, 17), (7, 8)
    book = tiny.codebook("seq2seq", 32)
    idx = np.random.default_rng(0).integers(0, 32, grid)
    other = idx.copy()
    other[centre] = (idx[centre] + 1) % 32
    exact = [tiny.synthesize(g.reshape(-1), book, grid).astype(int) for g in (idx, other)]
    fbook = tiny.float_codebook("seq2seq", 32)
    with torch.no_grad():
        fl = [
            tiny.float_decoder(fbook[torch.from_numpy(g)].permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
            for g in (idx, other)
        ]
    for a, b, tight in ((exact[0], exact[1], False), (fl[0], fl[1], True)):
        cells = np.abs(a - b).reshape(grid[0], 4, grid[1], 4, 3).max(axis=(1, 3, 4)) > 0
        ys, xs = np.nonzero(cells)
        reach = max(np.abs(ys - centre[0]).max(), np.abs(xs - centre[1]).max())
        assert reach <= r
        if tight:
            assert reach == r


def test_encoder_radius_is_exact(tiny: CodecModel) -> None:
    r, centre = tiny.encoder_halo, (6, 7)
    rgb = smooth_image(56, 60, seed=2)
    other = rgb.copy()
    other[4 * centre[0] : 4 * centre[0] + 4, 4 * centre[1] : 4 * centre[1] + 4] ^= 0x55
    za, zb = (tiny.analyse(x).reshape(14, 15, -1) for x in (rgb, other))
    ys, xs = np.nonzero((za - zb).abs().amax(2).numpy() > 0)
    assert max(np.abs(ys - centre[0]).max(), np.abs(xs - centre[1]).max()) == r


# -- the schedule ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("grid", [(1, 1), (1, 50), (50, 1), (9, 23), (40, 41), (30, 200), (200, 12)])
@pytest.mark.parametrize("budget", [1, 60, 300, 2000])
def test_tiles_cover_the_grid_once_with_their_halo(grid: tuple[int, int], budget: int) -> None:
    halo = 3
    tiles = tiling.plan_tiles(grid, budget, halo)
    cover = np.zeros(grid, int)
    for t in tiles:
        cover[t.core] += 1
        assert (t.oy0, t.oy1, t.ox0, t.ox1) == (
            max(0, t.y0 - halo),
            min(grid[0], t.y1 + halo),
            max(0, t.x0 - halo),
            min(grid[1], t.x1 + halo),
        )
        assert t.positions <= max(budget, (tiling.MIN_CORE + 2 * halo) ** 2)
    assert (cover == 1).all()
    if grid[0] * grid[1] <= budget:
        assert len(tiles) == 1


def test_budget_keyword_environment_and_default(monkeypatch: pytest.MonkeyPatch, tiny_model_path: Path) -> None:
    monkeypatch.delenv(tiling.TILE_PIXELS_ENV, raising=False)
    assert tiling.tile_pixels() == tiling.DEFAULT_TILE_PIXELS
    monkeypatch.setenv(tiling.TILE_PIXELS_ENV, "5000")
    assert tiling.tile_pixels() == 5000 and tiling.tile_pixels(7000) == 7000  # the keyword wins
    for bad in ("lots", "10"):
        monkeypatch.setenv(tiling.TILE_PIXELS_ENV, bad)
        with pytest.raises(ValueError, match=tiling.TILE_PIXELS_ENV):
            tiling.tile_pixels()
    monkeypatch.delenv(tiling.TILE_PIXELS_ENV)
    image = smooth_image(20, 20)
    with pytest.raises(ValueError, match="max_tile_pixels"):
        raqcodec.encode(image, codebook_size=16, model=tiny_model_path, max_tile_pixels=100)
    data = raqcodec.encode(image, codebook_size=16, model=tiny_model_path)
    with pytest.raises(ValueError, match="max_tile_pixels"):
        raqcodec.decode(data, model=tiny_model_path, max_tile_pixels=True)


# -- decoding: bit-identical --------------------------------------------------------------------------


@pytest.mark.parametrize("grid", [(1, 1), (1, 37), (37, 1), (5, 6), (9, 23), (26, 19), (17, 64)])
def test_tiled_synthesis_is_bit_identical(tiny: CodecModel, grid: tuple[int, int]) -> None:
    book = tiny.codebook("seq2seq", 40)
    idx = np.random.default_rng(grid[0] * 100 + grid[1]).integers(0, 40, grid).reshape(-1)
    whole = tiny.synthesize(idx, book, grid)
    for positions in (1, 50, 150, 400):  # cores from the smallest up: stripes, squares, edges
        assert np.array_equal(tiny.synthesize(idx, book, grid, positions), whole), positions


@pytest.mark.parametrize(("height", "width"), [(37, 53), (90, 61), (13, 130)])
def test_striped_decode_is_bit_identical_through_the_api(tiny_model_path: Path, height: int, width: int) -> None:
    rgba = np.dstack([smooth_image(height, width, seed=height), np.full((height, width), 200, np.uint8)])
    data = raqcodec.encode(rgba, codebook_size=24, model=tiny_model_path, refine=0)
    whole = np.asarray(raqcodec.decode(data, model=tiny_model_path))
    tiled = np.asarray(raqcodec.decode(data, model=tiny_model_path, max_tile_pixels=tiling.MIN_TILE_PIXELS))
    assert whole.shape == (height, width, 4) and np.array_equal(tiled, whole)


# -- encoding: the same indices up to float rounding ------------------------------------------------------


def test_tiled_encoder_gives_the_same_latents(tiny: CodecModel) -> None:
    rgb = _padded(smooth_image(70, 91, seed=5))
    whole = tiny.analyse(rgb)
    for positions in (1, 40, 200):
        assert torch.allclose(tiny.analyse(rgb, positions), whole, atol=1e-5, rtol=1e-5)


def test_tiled_refinement_follows_the_whole_image_search(tiny: CodecModel) -> None:
    """With the halo of tiling.refine_halo the tiles replay the whole-image search: the same indices up
    to float rounding at near-ties (a halo of one radius only already differs in 5 of these 2,950)."""
    rgb = smooth_image(198, 233, seed=7)  # not a multiple of 4: padding pixels must not count
    grid = (50, 59)
    rows = tiny.analyse(_padded(rgb))
    whole = tiny.refined_indices(rows, grid, rgb, "seq2seq", 32, 2)
    tiled = tiny.refined_indices(rows, grid, rgb, "seq2seq", 32, 2, max_positions=1600)
    assert len(tiling.plan_tiles(grid, 1600 // tiling.REFINE_SHARE, tiling.refine_halo(tiny.decoder_halo, 2))) > 40
    assert np.count_nonzero(tiled != whole) <= 1


def test_tiled_refinement_path_has_the_whole_image_errors(tiny: CodecModel) -> None:
    """Every step's grid and MSE, tile by tile, as in one piece (the budget search compares them)."""
    rgb = smooth_image(61, 77, seed=8)
    grid = (16, 20)
    rows = tiny.analyse(_padded(rgb))
    whole = list(tiny.refinement_path(rows, grid, rgb, "seq2seq", 32, 3))
    tiled = list(tiny.refinement_path(rows, grid, rgb, "seq2seq", 32, 3, max_positions=60))
    assert len(whole) == len(tiled) == 4
    assert np.array_equal(whole[0][0], tiny.indices(rows, "seq2seq", 32))  # step 0: nearest neighbour
    for (a, error_a), (b, error_b) in zip(whole, tiled):
        assert np.count_nonzero(a != b) <= 1 and error_b == pytest.approx(error_a, rel=1e-4)


def test_tiled_encode_matches_untiled_under_a_budget(tiny_model_path: Path) -> None:
    image = smooth_image(75, 101, seed=9)
    whole = codec.encode_detailed(image, bpp=1.5, model=tiny_model_path)
    tiled = codec.encode_detailed(image, bpp=1.5, model=tiny_model_path, max_tile_pixels=tiling.MIN_TILE_PIXELS)
    assert not any("skipped" in n for n in tiled.notes)
    assert tiled.bpp <= 1.5 and tiled.codebook_size == whole.codebook_size
    a, b = (raqcodec.inspect(r.data, model=tiny_model_path)["indices"] for r in (whole, tiled))
    assert np.mean(a == b) >= 0.995


def test_images_over_the_budget_are_refined_in_tiles(tiny_model_path: Path, tiny: CodecModel) -> None:
    """Refinement used to be skipped above 2 MP with a note; now it runs tile by tile."""
    image = smooth_image(64, 72, seed=4)
    common = dict(codebook_size=32, model=tiny_model_path, max_tile_pixels=tiling.MIN_TILE_PIXELS)
    refined = codec.encode_detailed(image, refine=2, **common)
    plain = codec.encode_detailed(image, refine=0, **common)
    assert refined.notes == [] and refined.data != plain.data
    err = [_float_decoder_error(tiny, raqcodec.inspect(r.data, model=tiny)["indices"], image) for r in (plain, refined)]
    assert err[1] <= err[0]  # by the measure refinement minimises (the exact decoder rounds on top)


def _float_decoder_error(model: CodecModel, indices: np.ndarray, rgb: np.ndarray, size: int = 32) -> float:
    book = model.float_codebook("seq2seq", size)
    latents = book[torch.from_numpy(indices)].permute(2, 0, 1)[None]
    with torch.no_grad():
        decoded = model.float_decoder(latents)[0, :, : rgb.shape[0], : rgb.shape[1]]
    return float(torch.mean((decoded - model._pixels(rgb)[0]) ** 2))


# -- the context coder in blocks -----------------------------------------------------------------------------


@pytest.fixture
def evaluated(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the context network's runs (``ContextModel.mixtures`` calls, recursive ones included)."""
    sizes: list[int] = []
    mixtures = context.ContextModel.mixtures

    def counted(self, codebook, slots, *args):  # noqa: ANN001, ANN202
        sizes.append(len(slots))
        return mixtures(self, codebook, slots, *args)

    monkeypatch.setattr(context.ContextModel, "mixtures", counted)
    return sizes


def test_blocked_context_coding_gives_the_same_streams(tiny: CodecModel, evaluated: list[int]) -> None:
    """Streams and bit counts are the same whatever the block size, and each position runs through the
    network once per call, walking the passes forwards (decoder) or backwards (encoder)."""
    assert tiny.context is not None
    parts = Schedule(chunk_elements=5 * 48 * tiny.context.components)  # parts of 5: a pass holds many
    ctx = tiny.context.with_schedule(parts)
    book = tiny.codebook("seq2seq", 48)
    grid = np.random.default_rng(3).integers(0, 48, (21, 19))
    plain = context_coding.encode_grid(ctx, book, grid, 16)
    bits = context_coding.ideal_bits(ctx, book, grid, 16)
    for block in (1, 3, 7, 12, 10**6):  # smaller than a part, parts per block, whole passes
        ctx = tiny.context.with_schedule(replace(parts, block_positions=block))
        evaluated.clear()
        assert context_coding.encode_grid(ctx, book, grid, 16) == plain
        assert np.array_equal(context_coding.decode_grid(ctx, book, plain, *grid.shape), grid)
        assert context_coding.ideal_bits(ctx, book, grid, 16) == bits
        assert sum(n for n in evaluated if n <= block) == 3 * grid.size, block  # leaves of the recursion


def test_estimates_of_large_grids_score_a_bounded_sample(tiny: CodecModel, evaluated: list[int]) -> None:
    """Exact on grids up to ``Schedule.sampled_positions``, a sample of about that many positions beyond (how close
    the estimate is: tests/test_default_model.py, on a real photo with a trained context model)."""
    ctx = tiny.context
    assert ctx is not None
    book = tiny.codebook("seq2seq", 32)
    grid = np.random.default_rng(4).integers(0, 32, (40, 50))
    assert context_coding.estimated_bits(ctx, book, grid, 0) == context_coding.ideal_bits(ctx, book, grid, 0)
    sampled = ctx.with_schedule(Schedule(sampled_positions=150))
    step = context_coding.sample_step
    assert step(grid.size, most=150) == 15 and step(grid.size, 8, 150) == 15  # odd
    assert context_coding.sample_step(1000, 8, 150) == 8 and context_coding.sample_step(1000, 8, 50) == 21
    evaluated.clear()
    context_coding.estimated_bits(sampled, book, grid, 0)
    assert sum(evaluated) <= 150 + context.NUM_PASSES


def test_a_bad_budget_in_the_environment_is_one_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.fromarray(smooth_image(16, 16)).save(tmp_path / "a.png")
    monkeypatch.setenv(tiling.TILE_PIXELS_ENV, "lots")
    for args in (["encode", "-k", "16", str(tmp_path / "a.png")], ["decode", str(tmp_path / "a.png")]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 2 and tiling.TILE_PIXELS_ENV in res.output
        assert len(res.output.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]
