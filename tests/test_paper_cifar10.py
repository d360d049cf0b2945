"""The CIFAR-10 reader and benchmarks/paper_cifar10.py end to end on a tiny generated CIFAR-like archive."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
from conftest import smooth_image
from PIL import Image

from raqcodec.train.data import read_cifar_tar

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "paper_cifar10.py"


def _jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(smooth_image(32, 32, seed=seed)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def make_cifar_tar(path: Path, count: int) -> list[str]:
    """A CIFAR-10-like .tar.gz: JPEG members stored in reverse name order, plus a non-image member."""
    names = [f"cifar10/test/{i:05d}_cat.jpg" for i in range(count)]
    with tarfile.open(path, "w:gz") as tar:
        for i, name in reversed(list(enumerate(names))):
            data = _jpeg(i)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        readme = tarfile.TarInfo("cifar10/README.txt")
        readme.size = 2
        tar.addfile(readme, io.BytesIO(b"hi"))
    return names


def test_cifar_tar_is_read_in_member_name_order(tmp_path: Path) -> None:
    path = tmp_path / "cifar10-test.tar.gz"
    make_cifar_tar(path, 5)
    images = read_cifar_tar(path)
    assert images.shape == (5, 3, 32, 32)
    for i in range(5):  # stored last to first, returned first to last
        expected = np.asarray(Image.open(io.BytesIO(_jpeg(i))).convert("RGB"))
        assert np.array_equal(images[i].permute(1, 2, 0).numpy(), expected)
    assert read_cifar_tar(path, limit=2).shape[0] == 2


def test_paper_benchmark_trains_evaluates_and_reproduces(tmp_path: Path) -> None:
    data = tmp_path / "cifar10"
    data.mkdir()
    make_cifar_tar(data / "cifar10-train.tar.gz", 24)
    make_cifar_tar(data / "cifar10-test.tar.gz", 12)
    out = tmp_path / "result.json"
    common = [
        sys.executable,
        str(BENCHMARK),
        "--data",
        str(data),
        "--checkpoints",
        str(tmp_path / "weights"),
        "--out",
        str(out),
        "--ikm-steps",
        "2",
        "--eval-batch",
        "5",
    ]
    subprocess.run(
        [*common, "--steps", "2", "--runs", str(tmp_path / "runs"), "--fixed-sizes", "16"],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    first = json.loads(out.read_text())
    rows = first["rows"]
    assert {r["method"] for r in rows} == {
        "fixed",
        "raq",
        "raq_mixed",
        "raq_no_crossforcing",
        "model_based",
        "random_subset",
        "raq_kmeans",
    }
    assert [r["K"] for r in rows if r["method"] == "raq_kmeans"] == [4]
    assert all({"method", "K", "psnr", "ssim", "perplexity"} <= set(r) for r in rows)
    raq = {r["K"]: r for r in rows if r["method"] == "raq"}
    assert raq[2048]["psnr"] is None and raq[1024]["psnr"] > 0  # past k_max: recorded as unsupported
    assert {r["K"] for r in rows if r["method"] == "model_based"} >= {16, 32, 64, 128, 256, 512, 1024}
    assert first["test_images"] == 12 and out.with_suffix(".md").exists()
    assert {m: v["steps"] for m, v in first["models"].items()} == dict.fromkeys(first["models"], 2)

    # --eval-only on the saved weights reproduces every number and says so.
    subprocess.run([*common, "--eval-only"], check=True, capture_output=True, text=True, timeout=600)
    second = json.loads(out.read_text())
    assert second["rows"] == rows
    reproduced = [c for c in second["checks"] if c["check"].startswith("re-running")][0]
    assert reproduced["passed"] is True
