"""Encoder-side index refinement: never worse than nearest neighbour, budgets still hold, streams unchanged in form."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import raqcodec
from raqcodec import bitstream, codec
from raqcodec.cli import main
from raqcodec.model import CodecModel
from raqcodec.nn.quantizer import nearest_indices
from raqcodec.refine import refine_indices

from conftest import smooth_image


def _decoded_error(decoder, book: torch.Tensor, idx: torch.Tensor, grid: tuple[int, int], target: torch.Tensor) -> float:
    h, w = grid
    with torch.no_grad():
        out = decoder(book[idx].reshape(h, w, -1).permute(2, 0, 1)[None])[0, :, : target.shape[1], : target.shape[2]]
    return float(torch.mean((out - target) ** 2))


def test_refinement_lowers_the_decoded_error(tiny_model_path: Path) -> None:
    model = CodecModel.load(tiny_model_path)
    rgb = smooth_image(30, 45, seed=3)  # not a multiple of 4: padding pixels must not count
    padded = np.pad(rgb, ((0, 2), (0, 3), (0, 0)), mode="edge")
    rows = model.analyse(padded)
    grid = (8, 12)
    latents = rows.reshape(*grid, -1).permute(2, 0, 1)
    target = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0
    book = model.float_codebook("seq2seq", 32)

    nearest = nearest_indices(rows, book)
    assert torch.equal(refine_indices(model.float_decoder, latents, target, book, steps=0), nearest)
    refined = refine_indices(model.float_decoder, latents, target, book, steps=8, lr=0.05)
    before = _decoded_error(model.float_decoder, book, nearest, grid, target)
    after = _decoded_error(model.float_decoder, book, refined, grid, target)
    assert after <= before
    assert not torch.equal(refined, nearest) and after < before  # the search found something better


def test_refined_streams_decode_and_respect_the_budget(tiny_model_path: Path) -> None:
    image = smooth_image(40, 52, seed=5)
    plain = raqcodec.encode(image, codebook_size=32, model=tiny_model_path, refine=0)
    refined = raqcodec.encode(image, codebook_size=32, model=tiny_model_path, refine=3)
    assert bitstream.read_header(refined).codebook_size == 32
    assert np.asarray(raqcodec.decode(refined, model=tiny_model_path)).shape == (40, 52, 3)
    assert refined == raqcodec.encode(image, codebook_size=32, model=tiny_model_path, refine=3)  # deterministic
    assert plain == raqcodec.encode(image, codebook_size=32, model=tiny_model_path, refine=0)
    for bpp in (1.2, 2.0):
        data = raqcodec.encode(image, bpp=bpp, model=tiny_model_path, refine=3)
        assert len(data) * 8 / (40 * 52) <= bpp


def test_refine_bounds(tiny_model_path: Path) -> None:
    image = smooth_image(16, 16)
    with pytest.raises(ValueError, match="refine"):
        raqcodec.encode(image, codebook_size=16, model=tiny_model_path, refine=-1)
    res = CliRunner().invoke(main, ["encode", "--refine", "99", "-k", "16", "x.png"])
    assert res.exit_code == 2



@pytest.mark.parametrize(("budget", "expected_steps", "tried"), [
    (103, 2, [4]),             # the first doubling does not fit
    (109, 4, [4]),             # 4 steps fit (105 bytes); 8, by the last growth (5), would not: not tried
    (110, 4, [4, 8]),          # by the last growth it would, so it is tried, and does not (111)
    (116, 8, [4, 8]),          # 8 fits (111); the next doubling's growth (6) would overshoot by 1
    (117, 16, [4, 8, 16]),     # and with that byte, 16 fits (117)
    (10**6, 16, [4, 8, 16]),   # never beyond MAX_ROOM_REFINE_STEPS
])
def test_room_left_at_the_largest_codebook_buys_more_refinement(budget: int, expected_steps: int,
                                                                tried: list[int]) -> None:
    from raqcodec.codec import MAX_ROOM_REFINE_STEPS, _refine_into_room

    section_bytes = {2: 100, 4: 105, 8: 111, 16: 117, 32: 124}
    calls: list[int] = []

    def refined_with(steps: int) -> np.ndarray:
        calls.append(steps)
        return np.full(3, steps)

    indices, section = _refine_into_room(np.full(3, 2), b"x" * section_bytes[2], 2, budget, refined_with,
                                         lambda grid: b"x" * section_bytes[int(grid[0])])
    assert MAX_ROOM_REFINE_STEPS == 16
    assert int(indices[0]) == expected_steps and len(section) == section_bytes[expected_steps] <= budget
    assert calls == tried


def test_a_roomy_budget_at_the_largest_codebook_refines_further(tiny_model_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end: a budget well above what the largest codebook needs gives a file refined further than
    2 steps, which decodes closer to the image and still fits (the tiny model's context model is
    uniform, so here extra steps cost no bytes)."""
    image = smooth_image(64, 80, seed=12)
    model = CodecModel.load(tiny_model_path)
    largest = model.size_range[1]
    two_steps = raqcodec.encode(image, codebook_size=largest, model=tiny_model_path, refine=2)
    bpp = 1.3 * len(two_steps) * 8 / image[..., 0].size
    roomy = raqcodec.encode(image, bpp=bpp, model=tiny_model_path, refine=2)
    assert bitstream.read_header(roomy).codebook_size == largest
    assert roomy != two_steps and len(roomy) <= bpp * image[..., 0].size / 8

    def error(data: bytes) -> float:
        decoded = np.asarray(raqcodec.decode(data, model=tiny_model_path)).astype(float)
        return float(np.mean((decoded - image) ** 2))

    assert error(roomy) < error(two_steps)
    # larger images than ROOM_REFINE_MAX_PIXELS keep the steps asked for (time)
    monkeypatch.setattr(codec, "ROOM_REFINE_MAX_PIXELS", image[..., 0].size - 1)
    assert raqcodec.encode(image, bpp=bpp, model=tiny_model_path, refine=2) == two_steps
