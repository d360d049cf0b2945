"""benchmarks/kodak_rd.py on tiny generated images: the JPEG sweep, failed raqcodec points, the BD summary."""

from __future__ import annotations

import importlib.util
import io
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

from conftest import smooth_image

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def kodak_rd() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kodak_rd", BENCHMARKS / "kodak_rd.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def two_images(tmp_path: Path) -> list[Path]:
    paths = []
    for i, (h, w) in enumerate([(40, 56), (33, 47)]):  # one size not a multiple of the 8x8 JPEG block
        path = tmp_path / f"img{i}.png"
        Image.fromarray(smooth_image(h, w, seed=i)).save(path)
        paths.append(path)
    return paths


def _independent_jpeg(path: Path, quality: int) -> tuple[float, float]:
    """bpp and RGB PSNR written out again here, so the sweep is checked against a second encode."""
    rgb = np.asarray(Image.open(path).convert("RGB"))
    buf = io.BytesIO()
    Image.open(path).convert("RGB").save(buf, "JPEG", quality=quality, optimize=True)
    decoded = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")).astype(np.float64)
    mse = np.mean((rgb.astype(np.float64) - decoded) ** 2)
    return len(buf.getvalue()) * 8 / (rgb.shape[0] * rgb.shape[1]), 10 * math.log10(255**2 / mse)


def test_jpeg_sweep_matches_an_independent_encode(kodak_rd: ModuleType, two_images: list[Path]) -> None:
    points = kodak_rd.jpeg_sweep(two_images, [20, 80])
    assert [p["quality"] for p in points] == [20, 80]
    for point in points:
        expected = [_independent_jpeg(path, point["quality"]) for path in two_images]
        assert [r["image"] for r in point["images"]] == ["img0.png", "img1.png"]
        for row, (bpp, psnr) in zip(point["images"], expected):
            assert row["bpp"] == pytest.approx(bpp, rel=1e-12)
            assert row["psnr"] == pytest.approx(psnr, rel=1e-9)
        assert point["mean_bpp"] == pytest.approx(np.mean([b for b, _ in expected]), rel=1e-12)
        assert point["mean_psnr"] == pytest.approx(np.mean([q for _, q in expected]), rel=1e-9)
    assert points[1]["mean_bpp"] > points[0]["mean_bpp"] and points[1]["mean_psnr"] > points[0]["mean_psnr"]


def test_unreachable_target_is_recorded_not_raised(kodak_rd: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object) -> dict:
        raise SystemExit("raqcodec encode a.png -o... failed:\n"
                         "raqcodec: error: a.png: 0.1 bpp is below what model m can reach for this image: "
                         "0.157 to 0.557 bpp\n")

    monkeypatch.setattr(kodak_rd, "evaluate", refuse)
    point = kodak_rd.raqcodec_point([Path("a.png")], 0.1, None, "seq2seq")
    assert point == {"target_bpp": 0.1, "ok": False,
                     "error": "a.png: 0.1 bpp is below what model m can reach for this image: 0.157 to 0.557 bpp"}


def test_bd_summary_skips_failed_points(kodak_rd: ModuleType) -> None:
    jpeg = [{"quality": q, "mean_bpp": r, "mean_psnr": d} for q, r, d in [(5, 0.13, 23.6), (10, 0.23, 27.1),
                                                                        (20, 0.41, 29.5), (40, 0.69, 31.7)]]
    ours = [{"ok": False, "target_bpp": 0.1, "error": "unreachable"}] + [
        {"ok": True, "mean_bpp": 0.8 * p["mean_bpp"], "mean_psnr": p["mean_psnr"]} for p in jpeg]
    bd = kodak_rd.bd_against(jpeg, ours)
    assert bd["test_points_used"] == 4
    assert bd["bd_rate_percent"] == pytest.approx(-20.0, abs=1e-9)
    assert bd["anchor_spans_test"] == {"psnr": True, "bpp": False}
    assert "error" in kodak_rd.bd_against(jpeg, ours[:2])  # one usable point: no BD figure, no crash
