"""Training data for the context model: index grids of real photos, quantized by a frozen codec model.

The context model learns p(index | decoded neighbours, K~) over the codebook of the size in use, so its
data are index grids at many sizes. Each photo is encoded once (the encoder dominates the cost) and
quantized at several sizes drawn log-uniformly over the model's whole range, because rate control can
pick any of them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..model.loaded import CodecModel
from .data import load_rgb


def draw_sizes(size_range: tuple[int, int], count: int, generator: torch.Generator) -> list[int]:
    """``count`` distinct-ish sizes, log-uniform over ``size_range`` (inclusive)."""
    lo, hi = size_range
    u = torch.rand(count, generator=generator, dtype=torch.float64)
    sizes = torch.exp(math.log(lo) + u * (math.log(hi + 1) - math.log(lo))).floor().clamp(lo, hi)
    return sorted({int(s) for s in sizes})


@torch.no_grad()
def collect_grids(
    model: CodecModel, paths: list[Path], sizes_per_image: int, seed: int, max_short_side: int = 384
) -> list[tuple[int, np.ndarray]]:
    """(K~, h x w int64 index grid) pairs: every photo at ``sizes_per_image`` random sizes."""
    generator = torch.Generator().manual_seed(seed)
    f = model.config.downsampling
    grids: list[tuple[int, np.ndarray]] = []
    for path in paths:
        rgb = load_rgb(path, max_short_side).permute(1, 2, 0).numpy()
        h, w = rgb.shape[0] // f, rgb.shape[1] // f
        rows = model.analyse(rgb[: h * f, : w * f])
        for size in draw_sizes(model.size_range, sizes_per_image, generator):
            grids.append((size, model.indices(rows, "seq2seq", size).reshape(h, w).astype(np.int64)))
    return grids


def save_grids(path: Path, grids: list[tuple[int, np.ndarray]]) -> None:
    arrays = {f"g{i}": g.astype(np.uint16) for i, (_, g) in enumerate(grids)}  # K~ <= 65535
    np.savez_compressed(path, sizes=np.array([k for k, _ in grids], np.int64), **arrays)  # type: ignore[arg-type]


def load_grids(path: Path) -> list[tuple[int, np.ndarray]]:
    with np.load(path, allow_pickle=False) as z:
        sizes = z["sizes"]
        return [(int(k), z[f"g{i}"].astype(np.int64)) for i, k in enumerate(sizes)]
