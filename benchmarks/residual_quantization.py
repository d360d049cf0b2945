"""How the residual stage's symbols are chosen: dead-zone rounding against rate-distortion-optimised
quantization at several Lagrangians, by BD-rate on held-out training photos and on Kodak.

For every image and base size (nearest-neighbour grid, exact base image) the residual is quantized at each
step level with every group kept; a point is (base bits under the context model + residual sections'
ideal bits) against the exact decoded PSNR. Curves are means over the images per (size, level).

    python benchmarks/residual_quantization.py --model raq-photo2 --train ../shared/data/train \\
        --kodak ../shared/data/kodak --out benchmarks/results/residual_quantization.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from raqcodec.entropy.context_coding import estimated_bits
from raqcodec.eval.bdrate import bd_rate
from raqcodec.model.registry import load as load_model
from raqcodec.model.residual import GROUPS, pad_to_blocks
from raqcodec.train.data import list_images, load_rgb
from raqcodec.train.stages import split_photos

BASE_SIZES = [128, 512]
LEVELS = [0, 2, 4, 6, 8, 10, 12]
LAGRANGIANS = [0.04, 0.06, 0.08, 0.116, 0.15, 0.2]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * math.log10(255.0**2 / mse) if mse > 0 else 99.0


def load(path: Path) -> np.ndarray:
    rgb = load_rgb(path, 512).permute(1, 2, 0).numpy()
    h, w = rgb.shape[0] // 16 * 16, rgb.shape[1] // 16 * 16
    return np.ascontiguousarray(rgb[:h, :w])


def image_points(model, image: np.ndarray, settings: dict[str, float | None]) -> dict[str, dict[str, tuple]]:
    """setting -> '(size, level)' -> (bpp, PSNR)."""
    stage = model.residual
    h, w = image.shape[0] // 4, image.shape[1] // 4
    pixels = image.shape[0] * image.shape[1]
    rows = model.analyse(image)
    target = pad_to_blocks(image)
    out: dict[str, dict[str, tuple]] = {name: {} for name in settings}
    for size in BASE_SIZES:
        codebook = model.codebook("seq2seq", size)
        indices = model.indices(rows, "seq2seq", size)
        base_bits = estimated_bits(model.context, codebook, indices.reshape(h, w))
        base = pad_to_blocks(model.synthesize(indices, codebook, (h, w)))
        coefficients, classes = stage.coefficients(target, base), stage.classes(base)
        for level in LEVELS:
            for name, lagrangian in settings.items():
                if lagrangian is None:
                    symbols = stage.quantize(coefficients, level)
                else:
                    symbols = stage.quantize(coefficients, level, classes, lagrangian)
                bits = base_bits + float(stage.group_bits(symbols, classes, level).sum()) + 32 * GROUPS
                decoded = stage.reconstruct(base, symbols, level)[: image.shape[0], : image.shape[1]]
                out[name][f"{size}/{level}"] = (bits / pixels, psnr(decoded, image))
    return out


def mean_curve(per_image: list[dict[str, tuple]]) -> list[tuple[float, float]]:
    keys = per_image[0].keys()
    return [(float(np.mean([p[k][0] for p in per_image])), float(np.mean([p[k][1] for p in per_image]))) for k in keys]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="raq-photo2")
    p.add_argument("--train", type=Path, required=True, help="training folder; its held-out photos are used")
    p.add_argument("--kodak", type=Path, required=True)
    p.add_argument("--images", type=int, default=6, help="images per set")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    settings: dict[str, float | None] = {"dead zone 0.2": None}
    settings.update({f"rdoq {lam}": lam for lam in LAGRANGIANS})
    _, held = split_photos([args.train])
    sets = {"held_out": held[: args.images], "kodak": list_images([args.kodak])[: args.images]}
    result: dict[str, object] = {"model": args.model, "base_sizes": BASE_SIZES, "levels": LEVELS, "sets": {}}
    start = time.perf_counter()
    for set_name, paths in sets.items():
        per_setting: dict[str, list] = {name: [] for name in settings}
        for path in paths:
            points = image_points(model, load(path), settings)
            for name in settings:
                per_setting[name].append(points[name])
        for size in BASE_SIZES:
            curves = {
                name: mean_curve(
                    [{k: v for k, v in pts.items() if k.startswith(f"{size}/")} for pts in per_setting[name]]
                )
                for name in settings
            }
            anchor = curves["dead zone 0.2"]
            rows = {name: {"curve": c, "bd_rate_vs_dead_zone": bd_rate(anchor, c)} for name, c in curves.items()}
            result["sets"].setdefault(set_name, {})[f"K~={size}"] = rows  # type: ignore[union-attr]
            for name, row in rows.items():
                print(f"{set_name:9s} K~={size:4d} {name:14s} BD-rate {row['bd_rate_vs_dead_zone']:+6.2f}%")
    result["seconds"] = round(time.perf_counter() - start, 1)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
