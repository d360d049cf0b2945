"""benchmarks/kodak_rd.py on tiny generated images: it drives `raqcodec rd` and adds the release figures."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
from conftest import smooth_image
from PIL import Image

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def kodak_rd() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kodak_rd", BENCHMARKS / "kodak_rd.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_end_to_end_on_small_images(kodak_rd: ModuleType, tiny_model_path: Path, tmp_path: Path) -> None:
    data = tmp_path / "kodak"
    data.mkdir()
    for i, (h, w) in enumerate([(40, 56), (48, 64)]):
        Image.fromarray(smooth_image(h, w, seed=i)).save(data / f"kodim{i + 1:02d}.png")
    out, plot, table = tmp_path / "r.json", tmp_path / "r.png", tmp_path / "bd.md"
    status = kodak_rd.main(
        [
            "--data",
            str(data),
            "--model",
            str(tiny_model_path),
            "--bpp",
            "0.3",
            "0.45",
            "--baselines",
            "jpeg",
            "--effort",  # the tiny model's quality rises with the rate only under effort 3's refinement paths
            "3",
            "-j",
            "1",
            "--out",
            str(out),
            "--plot",
            str(plot),
            "--table",
            str(table),
            "--low-rate-max",
            "0.3",
            "--previous",
            str(out),
        ]
    )
    assert status == 0
    results = json.loads(out.read_text())
    assert results["format"] == "raqcodec-rd/1" and results["dataset"]["images"] == 2
    assert [p["bpp_target"] for p in results["codecs"]["raqcodec"]["points"]] == [0.3, 0.45]
    bench = results["benchmark"]
    assert bench["bd_low_rate_vs_jpeg"]["max_target_bpp"] == 0.3
    assert bench["bd_low_rate_vs_jpeg"]["test_points_used"] == 1 and "error" in bench["bd_low_rate_vs_jpeg"]
    # --previous names this very run: its curve against itself is a BD-rate of exactly 0 over its whole range
    previous = bench["bd_vs_previous"]
    assert previous["results"] == str(out) and previous["test_points_used"] == 2 and "error" not in previous
    assert previous["bd_rate_percent"] == 0.0 and previous["bd_psnr_db"] == 0.0
    raq = [p["bpp"] for p in results["codecs"]["raqcodec"]["points"]]
    assert previous["bpp_overlap"] == pytest.approx([min(raq), max(raq)])
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert table.read_text().startswith("| codec | BD-rate vs jpeg, PSNR |")


def test_previous_results_of_either_format(kodak_rd: ModuleType) -> None:
    first_format = {
        "raqcodec": [
            {"target_bpp": 0.1, "ok": False},
            {"target_bpp": 0.2, "ok": True, "mean_bpp": 0.19, "mean_psnr": 26.0},
            {"target_bpp": 0.4, "ok": True, "mean_bpp": 0.38, "mean_psnr": 28.0},
        ]
    }
    assert kodak_rd.psnr_curve(first_format) == [(0.19, 26.0), (0.38, 28.0)]
    assert kodak_rd.psnr_curve(first_format, max_target=0.3) == [(0.19, 26.0)]
    rd_format = {
        "format": "raqcodec-rd/1",
        "codecs": {
            "raqcodec": {
                "points": [
                    {"bpp_target": 0.2, "bpp": 0.18, "psnr": 26.5, "complete": True},
                    {"bpp_target": 0.1, "bpp": None, "psnr": None, "complete": False},
                ]
            }
        },
    }
    assert kodak_rd.psnr_curve(rd_format) == [(0.18, 26.5)]


def test_bd_summary_is_exact_on_a_scaled_curve(kodak_rd: ModuleType) -> None:
    jpeg = [(0.13, 23.6), (0.23, 27.1), (0.41, 29.5), (0.69, 31.7)]
    ours = [(0.8 * r, q) for r, q in jpeg]
    bd = kodak_rd.bd_summary(jpeg, ours, "jpeg")
    assert bd["bd_rate_percent"] == pytest.approx(-20.0, abs=1e-9)
    assert bd["psnr_overlap_db"] == pytest.approx([23.6, 31.7])
    assert "error" in kodak_rd.bd_summary(jpeg, ours[:1], "jpeg")  # one point: no BD figure, no crash
