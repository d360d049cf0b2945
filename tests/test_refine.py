"""Encoder-side index refinement: never worse than nearest neighbour, budgets still hold, streams unchanged in form."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import smooth_image
from PIL import Image

import raqcodec
from raqcodec import codec
from raqcodec.cli import main
from raqcodec.io import bitstream
from raqcodec.model.loaded import CodecModel
from raqcodec.model.refine import LatentAdam, refine_indices
from raqcodec.nn.quantizer import nearest_indices
from raqcodec.options import MAX_REFINE_STEPS
from raqcodec.ratecontrol import search
from raqcodec.ratecontrol import sizes as ratecontrol


def _decoded_error(
    decoder, book: torch.Tensor, idx: torch.Tensor, grid: tuple[int, int], target: torch.Tensor
) -> float:
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


def test_refine_bounds(tiny_model_path: Path, tmp_path: Path) -> None:
    image = smooth_image(16, 16)
    with pytest.raises(ValueError, match="refine"):
        raqcodec.encode(image, codebook_size=16, model=tiny_model_path, refine=-1)
    with pytest.raises(ValueError, match="refine"):
        raqcodec.encode(image, codebook_size=16, model=tiny_model_path, refine=MAX_REFINE_STEPS + 1)
    source = tmp_path / "x.png"
    Image.fromarray(image).save(source)  # a real input: the refusal must come from --refine itself
    args = ["encode", "-k", "16", "--model", str(tiny_model_path), str(source), "-o", str(tmp_path / "x.raq")]
    res = CliRunner().invoke(main, [*args, "--refine", str(MAX_REFINE_STEPS + 1)])
    assert res.exit_code == 2 and "--refine" in res.output and not (tmp_path / "x.raq").exists()
    assert CliRunner().invoke(main, [*args, "--refine", str(MAX_REFINE_STEPS)]).exit_code == 0


def _synthetic_path(errors: list[float], consumed: list[int]):  # noqa: ANN202
    """A refinement path whose step t has indices [t] and the given error; records the steps computed."""
    for step, error in enumerate(errors):
        consumed.append(step)
        yield np.array([step], np.int32), error


def test_the_closest_fitting_step_of_a_path_is_found_and_the_path_stops_early() -> None:
    """Section bytes grow with the step (100 + 10 t); errors fall, except steps 3 and 6, which do not
    improve on step 2 and 5 and are never candidates. Budget 155: step 5 is the last that fits."""
    errors = [1.0, 0.9, 0.8, 0.85, 0.7, 0.6, 0.65, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.04, 0.03, 0.02, 0.01]
    sections = lambda indices, size: b"x" * (100 + 10 * int(indices[0]))  # noqa: E731
    estimates: list[int] = []

    def estimate_bits(indices: np.ndarray, size: int) -> int:
        estimates.append(int(indices[0]))
        return 8 * len(sections(indices, size))

    consumed: list[int] = []
    fit = search.best_fitting(_synthetic_path(errors, consumed), 7, 155, sections, estimate_bits)
    assert fit is not None and int(fit.indices[0]) == 5 and fit.error == 0.6 and len(fit.section) == 150
    assert fit.size == 7 and consumed == list(range(9))  # step 8 is over the budget: 9..16 never computed
    assert fit.growth == (170 - 100) // 1  # the first closer step that does not fit (7) over nearest's bytes
    assert 3 not in estimates and 6 not in estimates

    # an estimate that is too low is caught by the real encode, which steps back to a closer-to-nearest step
    optimistic = lambda indices, size: 8 * len(sections(indices, size)) - 8 * 30  # noqa: E731
    fit = search.best_fitting(_synthetic_path(errors, []), 7, 155, sections, optimistic)
    assert fit is not None and int(fit.indices[0]) == 5
    # nothing fits: not even nearest neighbour
    assert search.best_fitting(_synthetic_path(errors, []), 7, 99, sections, estimate_bits) is None


def test_the_search_trades_codebook_size_for_refinement_steps() -> None:
    """A synthetic image where bytes grow with size and steps and the error falls with both; the
    search must land on the best fitting (size, step) pair of the sizes it probes, never over budget."""

    def error(size: int, step: int) -> float:
        return 1.0 / size + 0.004 / (1 + step)

    def nbytes(size: int, step: int) -> int:
        return 2 * size + 12 * step

    def path(size: int):  # noqa: ANN202
        for step in range(17):
            yield np.array([size, step], np.int32), error(size, step)

    def section_of(indices: np.ndarray, size: int) -> bytes:
        return b"x" * nbytes(int(indices[0]), int(indices[1]))

    def estimate_bits(indices: np.ndarray, size: int) -> int:
        return 8 * len(section_of(indices, size))

    def largest_fitting(below: int, section_bytes: int) -> int | None:
        return min(below, section_bytes // 2) if section_bytes >= 2 else None

    budget = 400
    choice = ratecontrol.RateChoice(200, np.array([200, 0], np.int32), b"x" * 400)
    size, indices, section, limited = search.refine_under_budget(  # effort 3's ladder of sizes
        choice, path, budget, (2, 200), section_of, estimate_bits, largest_fitting, search.EFFORTS[3]
    )
    assert len(section) <= budget and size == int(indices[0]) and not limited  # the budget was the limit
    best = min(error(s, t) for s in range(2, 201) for t in range(17) if nbytes(s, t) <= budget)
    assert error(size, int(indices[1])) <= best * 1.03  # within 3% of the best pair over every size
    assert size < 200 and int(indices[1]) > 0

    # nothing refined fits: the plain choice stands
    tight = ratecontrol.RateChoice(200, np.array([200, 0], np.int32), b"x" * 400)
    assert search.refine_under_budget(
        tight, path, 400, (200, 200), section_of, lambda i, s: 10**9, lambda below, n: None
    )[::3] == (200, False)


def test_a_roomy_budget_at_the_largest_codebook_refines_further(tiny_model_path: Path) -> None:
    """End to end: a budget well above what the largest codebook needs gives a file refined further than
    2 steps, which decodes closer to the image and still fits (the tiny model's context model is
    uniform, so here extra steps cost no bytes)."""
    image = smooth_image(64, 80, seed=12)
    model = CodecModel.load(tiny_model_path)
    largest = model.size_range[1]
    two_steps = raqcodec.encode(image, codebook_size=largest, model=tiny_model_path, refine=2)
    bpp = 1.3 * len(two_steps) * 8 / image[..., 0].size
    roomy = raqcodec.encode(image, bpp=bpp, model=tiny_model_path, effort=3)  # 8-step paths
    assert bitstream.read_header(roomy).codebook_size == largest
    assert roomy != two_steps and len(roomy) <= bpp * image[..., 0].size / 8

    def error(data: bytes) -> float:
        decoded = np.asarray(raqcodec.decode(data, model=tiny_model_path)).astype(float)
        return float(np.mean((decoded - image) ** 2))

    assert error(roomy) < error(two_steps)
    # images larger than the search's max_pixels take at most DEFAULT_REFINE_STEPS (time); so does an
    # explicit refine=2 under a budget (the expert override is the path length itself)
    small_search = search.SearchSettings(max_pixels=image[..., 0].size - 1)
    assert codec.encode_detailed(image, bpp=bpp, model=tiny_model_path, search=small_search).data == two_steps
    assert raqcodec.encode(image, bpp=bpp, model=tiny_model_path, refine=2) == two_steps


def test_latent_adam_takes_torch_adam_s_steps_exactly() -> None:
    """Refinement's own Adam (torch.optim.Adam costs a fresh process a 2 s import) must step as it does."""
    torch.manual_seed(0)
    weights = torch.randn(16, 8, 8)
    ours = torch.randn(16, 8, 8, requires_grad=True)
    theirs = ours.detach().clone().requires_grad_(True)
    reference, optimizer = torch.optim.Adam([theirs], lr=0.01), LatentAdam(ours, 0.01)
    for _ in range(6):
        reference.zero_grad()
        (theirs * weights).sin().sum().backward()
        reference.step()
        (ours * weights).sin().sum().backward()
        optimizer.step()
        assert torch.equal(ours, theirs)
