"""Effort levels (--effort, effort=) and quality targets (--psnr, psnr=) with the bundled model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from cliutil import error_lines, raqcodec

import raqcodec as api
from raqcodec.errors import BudgetError, CodecError
from raqcodec.eval.metrics import mse, psnr
from raqcodec.model import registry
from raqcodec.options import MAX_EFFORT
from raqcodec.ratecontrol.search import EFFORTS


@pytest.fixture(scope="module")
def portrait(photo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("effort") / "portrait.png"
    PIL.Image.open(photo).convert("RGB").resize((256, 320)).save(out)
    return out


@pytest.fixture(scope="module")
def photo() -> Path:  # module scope for the fixture above (conftest's is per test)
    import matplotlib.cbook

    return Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def _psnr(data: bytes, source: np.ndarray) -> float:
    return psnr(mse(np.asarray(api.decode(data).convert("RGB")), source))


def test_every_effort_level_fits_the_budget_and_level_0_is_nearest_neighbour(portrait: Path) -> None:
    source = np.asarray(PIL.Image.open(portrait))
    assert len(EFFORTS) == MAX_EFFORT + 1
    results = [api.encode_detailed(portrait, bpp=0.15, model="raq-photo", effort=e) for e in range(MAX_EFFORT + 1)]
    for effort, result in enumerate(results):
        assert result.effort == effort and result.bpp <= 0.15
    info = api.inspect(results[0].data)
    model = registry.load("raq-photo")
    padded = np.pad(source, ((0, 0), (0, 0), (0, 0)))
    rows = model.analyse(padded, fast=True)  # as the encoder analyses
    nearest = model.indices(rows, "seq2seq", info["codebook_size"]).reshape(info["indices"].shape)
    assert np.array_equal(info["indices"], nearest)
    quality = [_psnr(r.data, source) for r in results]
    assert max(quality[1:]) > quality[0]  # searching more finds a closer image (measured: +0.5 dB here)


def test_bad_effort_values_are_refused(portrait: Path) -> None:
    for bad in (-1, MAX_EFFORT + 1, True, 1.5):
        with pytest.raises(CodecError, match="effort"):
            api.encode(portrait, bpp=0.2, effort=bad)  # type: ignore[arg-type]
    with pytest.raises(BudgetError, match="exactly one"):
        api.encode(portrait, bpp=0.2, psnr=30.0)


@pytest.mark.parametrize("target", [24.0, pytest.param(26.0, marks=pytest.mark.slow)])
def test_a_psnr_target_gives_a_file_just_above_it(portrait: Path, target: float, tmp_path: Path) -> None:
    """Through the CLI, as a user would: the decoded file's PSNR is within 0-0.5 dB above the target."""
    out = tmp_path / "x.raq"
    run = raqcodec("encode", str(portrait), "--psnr", str(target), "--effort", "0", "-o", str(out), "--json")
    assert run.returncode == 0, run.stderr
    record = json.loads(run.stdout)
    measured = _psnr(out.read_bytes(), np.asarray(PIL.Image.open(portrait)))
    assert target <= measured <= target + 0.5
    assert record["psnr"] == pytest.approx(measured, abs=1e-3)


def test_an_unreachable_psnr_target_is_one_line_naming_the_range(portrait: Path, tmp_path: Path) -> None:
    run = raqcodec(
        "encode", str(portrait), "--psnr", "60", "--effort", "0", "--model", "raq-photo", "-o", str(tmp_path / "x.raq")
    )
    assert run.returncode != 0 and not (tmp_path / "x.raq").exists()
    lines = error_lines(run.stderr)
    assert len(lines) == 1 and "60 dB" in lines[0] and " to " in lines[0], lines
