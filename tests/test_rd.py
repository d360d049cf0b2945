"""`raqcodec rd` and `raqcodec plot` end to end on small generated images with the tiny model: the
numbers are checked against independent encodes, and the outputs, failures and exit codes against the
CLI's conventions."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import smooth_image
from PIL import Image

import raqcodec
from raqcodec.cli import main
from raqcodec.eval import rd, report
from raqcodec.eval.metrics import mse, psnr

SIZES = [(48, 64), (40, 56), (168, 176)]  # the last one is large enough for MS-SSIM (>= 161)
KS = "4,16,64"


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def make_images(directory: Path, sizes: list[tuple[int, int]] = SIZES) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (h, w) in enumerate(sizes):
        path = directory / f"img{i}.png"
        Image.fromarray(smooth_image(h, w, seed=i)).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> dict[str, Any]:
    """One `rd` run over three images with every output, shared by the checks below."""
    root = tmp_path_factory.mktemp("rd")
    images = make_images(root / "data")
    out = root / "out"
    res = run(
        "rd",
        str(root / "data"),
        "--model",
        str(tiny_model_path),
        "--codebook-sizes",
        KS,
        "--baselines",
        "jpeg,webp",
        "-o",
        str(out / "r.json"),
        "--per-image",
        str(out / "r.csv"),
        "--plot",
        str(out / "r.png"),
        "-q",
    )
    return {
        "res": res,
        "images": images,
        "out": out,
        "model": tiny_model_path,
        "results": json.loads((out / "r.json").read_text()) if (out / "r.json").exists() else None,
    }


def independent_jpeg(path: Path, quality: int) -> tuple[float, float]:
    """bpp and RGB PSNR of one image through Pillow's JPEG, written out again here."""
    rgb = np.asarray(Image.open(path).convert("RGB"))
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality, optimize=True)
    decoded = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")).astype(np.float64)
    mse = np.mean((rgb.astype(np.float64) - decoded) ** 2)
    return len(buf.getvalue()) * 8 / (rgb.shape[0] * rgb.shape[1]), 10 * math.log10(255**2 / mse)


def test_results_have_every_field(measured: dict[str, Any]) -> None:
    assert measured["res"].exit_code == 0, measured["res"].output
    r = measured["results"]
    assert r["format"] == rd.RESULTS_FORMAT and r["options"]["size_list"] == KS
    assert r["dataset"]["name"] == "data" and r["dataset"]["images"] == 3
    assert [im["name"] for im in r["images"]] == ["img0.png", "img1.png", "img2.png"]
    assert [(im["height"], im["width"]) for im in r["images"]] == SIZES
    assert {"python", "torch", "pillow", "raqcodec", "libwebp"} <= set(r["software"])
    assert r["model"]["name"] == "tiny" and r["failures"] == []
    assert set(r["codecs"]) == {"raqcodec", "jpeg", "webp"}
    assert [p["codebook_size"] for p in r["codecs"]["raqcodec"]["points"]] == [4, 16, 64]
    for name, entry in r["codecs"].items():
        for p in entry["points"]:
            assert {"bpp", "psnr", "ms_ssim", "ms_ssim_db", "encode_s", "decode_s", "complete"} <= set(p)
            assert ("quality" in p) == (name != "raqcodec")
            assert p["complete"] and p["bpp"] > 0 and p["encode_s"] > 0 and p["decode_s"] > 0
            if name == "raqcodec":  # where the encodes' time went, per stage: the means of the images'
                stages = p["encode_stages"]
                assert {"analysis", "entropy coding"} <= set(stages)
                assert sum(stages.values()) <= p["encode_s"]
                assert stages["analysis"] == pytest.approx(
                    sum(im["encode_stages"]["analysis"] for im in p["per_image"]) / len(p["per_image"])
                )
            assert p["ms_ssim"] is None  # two images are under MS-SSIM's minimum side: no point value
            big = p["per_image"][2]
            assert 0 < big["ms_ssim"] <= 1
            assert big["ms_ssim_db"] == pytest.approx(-10 * math.log10(1 - big["ms_ssim"]))
            # a point is the mean of its per-image values
            assert p["bpp"] == pytest.approx(np.mean([row["bpp"] for row in p["per_image"]]), rel=1e-12)
            assert p["psnr"] == pytest.approx(np.mean([row["psnr"] for row in p["per_image"]]), rel=1e-12)
    assert any("MS-SSIM" in note for note in r["notes"])
    assert r["bd_rate"]["anchor"] == "jpeg" and set(r["bd_rate"]["codecs"]) == {"raqcodec", "webp"}


def test_raqcodec_bpp_is_the_real_file_size(measured: dict[str, Any]) -> None:
    r = measured["results"]
    for point in r["codecs"]["raqcodec"]["points"]:
        path = measured["images"][1]
        data = raqcodec.encode(path, codebook_size=point["codebook_size"], model=measured["model"])
        row = point["per_image"][1]
        assert row["bytes"] == len(data)
        assert row["bpp"] == len(data) * 8 / (56 * 40)
        decoded = np.asarray(raqcodec.decode(data, model=measured["model"]).convert("RGB"))
        source = np.asarray(Image.open(path).convert("RGB"))
        assert row["psnr"] == pytest.approx(psnr(mse(source, decoded)), abs=1e-9)


def test_jpeg_point_matches_an_independent_encode(measured: dict[str, Any]) -> None:
    for point in measured["results"]["codecs"]["jpeg"]["points"]:
        expected = [independent_jpeg(p, point["quality"]) for p in measured["images"]]
        assert point["bpp"] == pytest.approx(np.mean([b for b, _ in expected]), abs=0.01)
        assert point["psnr"] == pytest.approx(np.mean([q for _, q in expected]), abs=0.01)


def test_baseline_qualities_span_our_range(measured: dict[str, Any]) -> None:
    r = measured["results"]
    ours = [p["bpp"] for p in r["codecs"]["raqcodec"]["points"]]
    webp = r["codecs"]["webp"]
    assert webp["search"]["targets_bpp"] == pytest.approx(ours)
    bpps = [p["bpp"] for p in webp["points"]]
    lowest = min(p["quality"] for p in webp["points"])
    assert min(bpps) <= min(ours) or lowest == 0  # spans down to ours, unless WebP cannot go lower
    assert max(bpps) >= max(ours)
    assert bpps == sorted(bpps)


def test_the_anchor_covers_every_curve_it_is_compared_with(measured: dict[str, Any]) -> None:
    r = measured["results"]
    # (the tiny model's random weights give ~11 dB, below any JPEG: only WebP is compared here)
    jpeg = r["codecs"]["jpeg"]["points"]
    webp = [p["psnr"] for p in r["codecs"]["webp"]["points"]]
    ours_bpp = [p["bpp"] for p in r["codecs"]["raqcodec"]["points"]]
    assert max(p["psnr"] for p in jpeg) >= max(webp)  # reached by extending JPEG beyond our bpp range
    assert max(p["bpp"] for p in jpeg) > max(ours_bpp)
    assert len(jpeg) <= len(set(r["codecs"]["jpeg"]["search"]["mean_bpp_by_quality"]))
    assert [p["psnr"] for p in jpeg] == sorted(p["psnr"] for p in jpeg)
    record = r["bd_rate"]["codecs"]["webp"]
    assert record["psnr_overlap_share"] == pytest.approx(1.0)  # the BD-rate covers the whole WebP curve
    assert record["psnr_overlap"] == pytest.approx([min(webp), max(webp)])


def test_per_image_csv_has_a_row_per_codec_point_image(measured: dict[str, Any]) -> None:
    r = measured["results"]
    with open(measured["out"] / "r.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    expected = sum(len(e["points"]) for e in r["codecs"].values()) * 3
    assert len(rows) == expected
    assert set(rows[0]) == set(report.CSV_COLUMNS)
    jpeg = [row for row in rows if row["codec"] == "jpeg"]
    point = r["codecs"]["jpeg"]["points"][0]
    assert {row["image"] for row in jpeg if int(row["quality"]) == point["quality"]} == {
        "img0.png",
        "img1.png",
        "img2.png",
    }
    first = next(row for row in jpeg if int(row["quality"]) == point["quality"] and row["image"] == "img0.png")
    assert float(first["bpp"]) == point["per_image"][0]["bpp"]
    assert int(first["bytes"]) == point["per_image"][0]["bytes"]


def test_rd_plot_is_a_real_png(measured: dict[str, Any]) -> None:
    data = (measured["out"] / "r.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert Image.open(measured["out"] / "r.png").size[0] >= 600


def test_plot_command_png_and_svg(measured: dict[str, Any], tmp_path: Path) -> None:
    results = measured["out"] / "r.json"
    second = tmp_path / "again.json"
    second.write_text(results.read_text())
    res = run("plot", str(results), str(second), "-o", str(tmp_path / "rd.svg"))
    assert res.exit_code == 0, res.output
    assert "6 curves" in res.output  # 3 codecs x 2 files
    svg = (tmp_path / "rd.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    res = run("plot", str(results), "-o", str(tmp_path / "rd.png"), "--metric", "ms-ssim")
    assert res.exit_code == 1 and "nothing to plot" in res.output  # no point has MS-SSIM for every image
    res = run("plot", str(results), "-o", str(tmp_path / "rd.png"))
    assert res.exit_code == 0 and (tmp_path / "rd.png").read_bytes()[:4] == b"\x89PNG"


def test_unreadable_image_is_a_failure_and_the_rest_is_measured(tiny_model_path: Path, tmp_path: Path) -> None:
    make_images(tmp_path / "data", SIZES[:2])
    (tmp_path / "data" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "r.json"
    res = run(
        "rd",
        str(tmp_path / "data"),
        "--model",
        str(tiny_model_path),
        "--codebook-sizes",
        "4,16",
        "--baselines",
        "jpeg",
        "--metrics",
        "psnr",
        "-o",
        str(out),
        "-q",
    )
    assert res.exit_code == 1
    assert "raqcodec: error: broken.png" in res.stderr and "Traceback" not in res.output
    r = json.loads(out.read_text())
    assert [f["image"] for f in r["failures"]] == ["broken.png"]
    assert r["failures"][0]["codec"] is None and r["failures"][0]["message"]
    assert [im["name"] for im in r["images"]] == ["img0.png", "img1.png"]
    for entry in r["codecs"].values():
        assert all(p["complete"] and p["images"] == 2 for p in entry["points"])


def test_unreachable_bpp_target_fails_that_point_only(tiny_model_path: Path, tmp_path: Path) -> None:
    make_images(tmp_path / "data", SIZES[:2])
    out = tmp_path / "r.json"
    res = run(
        "rd",
        str(tmp_path / "data"),
        "--model",
        str(tiny_model_path),
        "--bpp",
        "0.01,0.4,0.6",
        "--baselines",
        "none",
        "--metrics",
        "psnr",
        "-o",
        str(out),
        "-q",
    )
    assert res.exit_code == 1
    r = json.loads(out.read_text())
    points = r["codecs"]["raqcodec"]["points"]
    assert [p["bpp_target"] for p in points] == [0.01, 0.4, 0.6]
    assert not points[0]["complete"] and points[0]["images_ok"] == 0 and points[0]["bpp"] is None
    assert {(f["image"], f["setting"]["bpp_target"]) for f in r["failures"]} == {("img0.png", 0.01), ("img1.png", 0.01)}
    assert all("below what model" in f["message"] for f in r["failures"])
    for p in points[1:]:
        assert p["complete"]
        assert all(row["bpp"] <= p["bpp_target"] for row in p["per_image"])
    assert "0.01" in res.stderr and "Traceback" not in res.output


def test_two_jobs_give_the_same_numbers(tiny_model_path: Path, tmp_path: Path) -> None:
    make_images(tmp_path / "data", SIZES[:2])
    outputs = []
    for jobs in ("1", "2"):
        out = tmp_path / f"r{jobs}.json"
        res = run(
            "rd",
            str(tmp_path / "data"),
            "--model",
            str(tiny_model_path),
            "--codebook-sizes",
            "4,16",
            "--baselines",
            "jpeg,webp",
            "--metrics",
            "psnr",
            "-o",
            str(out),
            "-q",
            "-j",
            jobs,
        )
        assert res.exit_code == 0, res.output
        outputs.append(json.loads(out.read_text()))

    def numbers(o: Any) -> Any:
        if isinstance(o, dict):
            return {
                k: numbers(v)
                for k, v in o.items()
                if k not in ("encode_s", "decode_s", "encode_stages", "created", "options", "jobs")
            }
        return [numbers(v) for v in o] if isinstance(o, list) else o

    assert outputs[1]["jobs"] == 2
    assert numbers(outputs[0]) == numbers(outputs[1])


def test_existing_outputs_need_force(tiny_model_path: Path, tmp_path: Path) -> None:
    make_images(tmp_path / "data", SIZES[:1])
    args = ["rd", str(tmp_path / "data"), "--no-raq", "--bpp", "1,2", "--metrics", "psnr", "-q"]
    for option, name in (("-o", "r.json"), ("--per-image", "r.csv"), ("--plot", "r.png")):
        existing = tmp_path / name
        existing.write_text("keep me")
        res = run(*args, option, str(existing))
        assert res.exit_code == 2 and "--force" in res.stderr, res.output
        assert existing.read_text() == "keep me"
    res = run(*args, "-o", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png"), "--force")
    assert res.exit_code == 0, res.output
    codecs = json.loads((tmp_path / "r.json").read_text())["codecs"]
    assert list(codecs) == ["jpeg", "webp"] and all(c["points"] for c in codecs.values())  # the default baselines
    res = run("plot", str(tmp_path / "r.json"), "-o", str(tmp_path / "r.png"))
    assert res.exit_code == 2 and "--force" in res.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--bpp", "0.1,abc"], "comma-separated"),
        (["--bpp", "0.1", "--codebook-sizes", "4"], "at most one"),
        (["--codebook-sizes", "65"], "outside model"),
        (["--baselines", "jpeg,gif"], "unknown gif"),
        (["--metrics", "vmaf"], "unknown vmaf"),
        (["--plot", "rd.gif"], "extension"),
        (["--no-raq", "--baselines", "none"], "nothing to measure"),
        (["--no-raq", "--anchor", "raqcodec"], "anchor"),
        (["--model", "no-such-model"], "unknown model"),
    ],
)
def test_bad_requests_are_one_line(tiny_model_path: Path, tmp_path: Path, args: list[str], message: str) -> None:
    make_images(tmp_path / "data", SIZES[:1])
    model = [] if "--model" in args else ["--model", str(tiny_model_path)]
    res = run("rd", str(tmp_path / "data"), *model, "-q", *args)
    assert res.exit_code in (1, 2), res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("raqcodec: error:") and message in lines[0], res.stderr
    assert not any(tmp_path.glob("*.json"))


def test_plot_rejects_a_file_that_is_not_results(tmp_path: Path) -> None:
    bogus = tmp_path / "x.json"
    bogus.write_text("{not json")
    res = run("plot", str(bogus), "-o", str(tmp_path / "p.png"))
    assert res.exit_code == 1 and res.stderr.count("\n") == 1 and "not a raqcodec rd results file" in res.stderr
    bogus.write_text('{"a": 1}')
    assert run("plot", str(bogus), "-o", str(tmp_path / "p.png")).exit_code == 1
    assert not (tmp_path / "p.png").exists()


def test_collect_images_recurses_sorted_by_extension(tmp_path: Path) -> None:
    for name in ("b/z.PNG", "b/a.jpg", "a.webp", "notes.txt", "c/d/e.tiff", ".hidden.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = rd.collect_images([tmp_path, tmp_path / "a.webp"])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a.webp", "b/a.jpg", "b/z.PNG", "c/d/e.tiff"]
    assert rd.image_names(found) == ["a.webp", "b/a.jpg", "b/z.PNG", "c/d/e.tiff"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(rd.RDError, match="no image files"):
        rd.collect_images([tmp_path / "empty"])


def test_quality_search_on_a_known_curve() -> None:
    calls: list[int] = []

    def mean_bpp(q: int) -> float:
        calls.append(q)
        return 0.05 + 0.01 * q  # monotone: 0.05 at q=0, 1.05 at q=100

    assert rd.closest_quality(mean_bpp, 0, 100, 0.254) == 20
    assert rd.closest_quality(mean_bpp, 0, 100, 0.256) == 21
    assert rd.closest_quality(mean_bpp, 0, 100, 0.01) == 0 and rd.closest_quality(mean_bpp, 0, 100, 5.0) == 100
    assert len(calls) < 30  # bisection, not a scan
    # the nearest qualities already reach past both ends (0.10 < 0.104, 0.50 > 0.496): nothing added
    assert rd.choose_qualities(mean_bpp, 0, 100, [0.104, 0.3, 0.496]) == [5, 25, 45]
    # the nearest ones stop short (0.11 > 0.106, 0.49 < 0.494): one more quality at each end
    assert rd.choose_qualities(mean_bpp, 0, 100, [0.106, 0.494]) == [5, 6, 44, 45]
    steps = lambda q: 0.3 if q < 50 else 0.9  # noqa: E731 - a curve with a jump: the span still holds
    chosen = rd.choose_qualities(steps, 1, 100, [0.2, 0.5, 1.0])
    assert chosen[0] == 1 and chosen[-1] == 100


def test_avif_baseline_round_trip() -> None:
    from PIL import features

    from raqcodec.eval import baselines

    if not features.check("avif"):
        with pytest.raises(baselines.BaselineUnavailable, match="AVIF"):
            baselines.get("avif")
        return
    rgb = smooth_image(64, 80, seed=3)
    low, high = baselines.code("avif", rgb, 20), baselines.code("avif", rgb, 90)
    assert low.data[4:12] == b"ftypavif" and low.decoded.shape == rgb.shape
    assert len(low.data) < len(high.data)
    with pytest.raises(ValueError, match="quality"):
        baselines.encode("jpeg", rgb, 0)


def test_plot_frames_the_compared_curves_not_the_anchors_far_points(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    from raqcodec.eval.plot import _frame

    ax = Figure().add_subplot()
    ours, jpeg = [(0.1, 23.0), (0.4, 28.2)], [(0.09, 21.5), (0.4, 28.6), (0.77, 31.6)]
    _frame(ax, ours, jpeg)
    left, right = ax.get_xlim()
    assert right == pytest.approx(0.4 * 1.08) and left < 0.09
    low, high = ax.get_ylim()
    assert low < 21.5 and 28.6 < high < 31.6  # the far anchor point is off the chart
    ax = Figure().add_subplot()
    ax.plot([0.1, 0.5], [20, 30])
    _frame(ax, ours, [(0.1, 22.0), (0.42, 28.0)])  # the anchor stops near the others: autoscaled
    assert ax.get_xlim()[1] >= 0.5


def test_psnr_targets_give_points_at_or_just_above_each_target(tmp_path: Path, tiny_model_path: Path) -> None:
    """`rd --psnr LIST --effort 0`: every image's file decodes at or just above each target (targets taken
    from what this model reaches at two budgets, so that both are reachable)."""
    images = make_images(tmp_path / "data", SIZES[:2])
    reached = []
    for bpp in (0.5, 1.5):
        data = raqcodec.encode(images[0], bpp=bpp, model=str(tiny_model_path), effort=0)
        decoded = np.asarray(raqcodec.decode(data, model=str(tiny_model_path)).convert("RGB"))
        reached.append(psnr(mse(decoded, np.asarray(Image.open(images[0])))))
    targets = [round(min(reached) - 0.2, 1), round(max(reached) - 0.2, 1)]
    out = tmp_path / "r.json"
    res = run(
        "rd",
        str(images[0]),
        "--model",
        str(tiny_model_path),
        "--psnr",
        ",".join(map(str, targets)),
        "--effort",
        "0",
        "--baselines",
        "none",
        "--metrics",
        "psnr",
        "-o",
        str(out),
        "-q",
    )
    assert res.exit_code == 0, res.output
    ours = json.loads(out.read_text())["codecs"]["raqcodec"]
    assert ours["setting"] == "psnr_target" and ours["effort"] == 0
    for point, target in zip(ours["points"], targets):
        assert point["psnr_target"] == target
        assert target <= point["psnr"] <= target + 0.5
