"""Encoding to a PSNR target (raqcodec.ratecontrol.quality): the search over budgets, on a model of the
rate-distortion curve (the real codec's --psnr is tested through the CLI in test_cli_psnr)."""

from __future__ import annotations

import math

import pytest

from raqcodec.errors import BudgetError
from raqcodec.ratecontrol import quality


class Curve:
    """PSNR = 30 + 5 log2(bpp / 0.3), files of bpp x 1000 bytes; no file below 0.02 bpp; the model's
    best is 45 dB (the file stops growing there)."""

    def __init__(self) -> None:
        self.budgets: list[float] = []

    def __call__(self, bpp: float) -> tuple[bytes, float]:
        self.budgets.append(bpp)
        if bpp < 0.02:
            raise BudgetError("below reach")
        psnr = min(45.0, 30 + 5 * math.log2(bpp / 0.3))
        used = min(bpp, 0.3 * 2 ** (15 / 5))
        return b"x" * int(used * 1000), psnr


@pytest.mark.parametrize("target", [18.0, 24.5, 27.0, 30.0, 33.3, 41.0])
def test_the_smallest_file_reaching_the_target_is_found_in_a_few_tries(target: float) -> None:
    curve = Curve()
    got = quality.fit_psnr(curve, target, lambda lo, hi: f"{lo}..{hi}")
    assert target <= got.psnr <= target + quality.TOLERANCE
    assert len(curve.budgets) <= 6


def test_a_target_below_the_smallest_file_gives_the_smallest_file() -> None:
    curve = Curve()
    got = quality.fit_psnr(curve, 5.0, lambda lo, hi: f"{lo}..{hi}")
    assert got.psnr >= 5.0
    assert len(got.data) <= 0.02 * quality.NARROWEST**2 * 1000 + 1


def test_an_unreachable_target_names_the_reachable_range() -> None:
    with pytest.raises(BudgetError, match=r"^range .*\.\.45\.0$"):
        quality.fit_psnr(Curve(), 50.0, lambda lo, hi: f"range {lo}..{hi}")
