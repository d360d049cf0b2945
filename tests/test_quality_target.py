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


def test_a_step_in_the_fast_curve_is_searched_again_at_a_closer_effort() -> None:
    """A fast search's PSNR can step over the target between neighbouring budgets (26.9 dB up to 0.225
    bpp, 27.7 from there): its smallest file reaching 27 dB is 0.7 dB above. A closer search, tried from
    the largest budget that fell short downwards, finds one within TOLERANCE in a few tries."""

    def stepped(bpp: float) -> tuple[bytes, float]:
        psnr = 26.9 - 4 * max(0.0, math.log2(0.19 / bpp)) if bpp < 0.225 else 27.7 + 3 * math.log2(bpp / 0.225)
        return b"x" * int(bpp * 10000), psnr

    closer_budgets: list[float] = []

    def closer(bpp: float) -> tuple[bytes, float]:  # continuous, and better than the fast one everywhere
        closer_budgets.append(bpp)
        return b"x" * int(bpp * 10000), 27.0 + 6 * math.log2(bpp / 0.195)

    fast_only = quality.fit_psnr(stepped, 27.0, lambda lo, hi: "")
    assert fast_only.psnr - 27.0 > 0.5
    got = quality.fit_psnr(stepped, 27.0, lambda lo, hi: "", closer)
    assert 27.0 <= got.psnr <= 27.0 + quality.TOLERANCE and len(got.data) < len(fast_only.data)
    assert 1 <= len(closer_budgets) <= quality.CLOSER_TRIES
    closer_budgets.clear()  # where the fast search lands within the tolerance, no closer search runs
    assert 30.0 <= quality.fit_psnr(stepped, 30.0, lambda lo, hi: "", closer).psnr <= 30.0 + quality.TOLERANCE
    assert closer_budgets == []
