"""How the residual stage's coefficients are cut into sections: the best PSNR each layout of group ends
reaches under a budget, on held-out training photos and on Kodak.

A layer codes its leading groups (``raqcodec.model.residual.GROUP_ENDS``): the finer the groups, the
closer a budget can be spent on just the strongest coefficients, at 8 bytes of section overhead (length
and rANS flush) per group. For every image, base size (nearest-neighbour grid, exact base image) and step
level, the residual is quantized once (RDOQ, the encoder's weight) and every prefix of coefficients gets
its ideal bits and squared error; for each layout and budget the closest (size, level, group count) that
fits is kept, the base stage alone included. A point is that choice's PSNR; curves are means per budget.

    python benchmarks/residual_groups.py --model raq-photo2 --train ../shared/data/train \\
        --kodak ../shared/data/kodak --out benchmarks/results/residual_groups.json
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
from raqcodec.model.registry import load as load_model
from raqcodec.model.residual import COEFFICIENTS, GROUP_ENDS, LEVELS, STEP_BITS, pad_to_blocks
from raqcodec.train.data import list_images, load_rgb
from raqcodec.train.stages import split_photos

BASE_SIZES = [8, 32, 128, 512, 1024]
BUDGETS = [0.2, 0.3, 0.5, 0.75, 1.0]
SECTION_BYTES = 8  # a section's length field and rANS flush
LAYER_BYTES = 2
LAYOUTS: dict[str, tuple[int, ...]] = {
    "8 x 24": tuple(range(24, COEFFICIENTS + 1, 24)),
    "powers of 2": (2, 4, 8, 16, 32, 64, 128, 192),
    "12 groups": (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 192),
    "shipped": GROUP_ENDS,
    "every coefficient (bound, no overhead)": tuple(range(1, COEFFICIENTS + 1)),
}


def load(path: Path) -> np.ndarray:
    rgb = load_rgb(path, 512).permute(1, 2, 0).numpy()
    h, w = rgb.shape[0] // 16 * 16, rgb.shape[1] // 16 * 16
    return np.ascontiguousarray(rgb[:h, :w])


def prefix_curves(model, image: np.ndarray) -> list[tuple[float, float | None, np.ndarray | None, np.ndarray | None]]:
    """Per (base size, level): (base bytes, level or None for the base alone, cumulative residual bytes
    per coefficient prefix, squared error per prefix); the base alone has its total energy as error."""
    stage = model.residual
    h, w = image.shape[0] // 4, image.shape[1] // 4
    rows = model.analyse(image)
    target = pad_to_blocks(image)
    out: list = []
    for size in BASE_SIZES:
        codebook = model.codebook("seq2seq", size)
        indices = model.indices(rows, "seq2seq", size)
        base_bytes = estimated_bits(model.context, codebook, indices.reshape(h, w)) / 8
        base = pad_to_blocks(model.synthesize(indices, codebook, (h, w)))
        coefficients, classes = stage.coefficients(target, base), stage.classes(base)
        energy = float(np.sum(coefficients**2))
        out.append((base_bytes, None, None, np.array([energy])))
        for level in range(0, LEVELS - 4, 2):
            symbols = stage.quantize(coefficients, level, classes)
            bits = stage.tables.symbol_bits(symbols, stage.tables_for(classes, level)).sum(0)
            step = stage.steps[level] * 2.0**-STEP_BITS
            change = ((coefficients - symbols * step) ** 2).sum(0) - (coefficients**2).sum(0)
            out.append((base_bytes, level, np.cumsum(bits) / 8, energy + np.cumsum(change)))
    return out


def best_psnr(curves: list, ends: tuple[int, ...], budget_bytes: float, pixels: int, overhead: bool) -> float:
    best = math.inf
    for base_bytes, level, prefix_bytes, error in curves:
        if level is None:
            if base_bytes <= budget_bytes:
                best = min(best, float(error[0]))
            continue
        for g, end in enumerate(ends):
            extra = (SECTION_BYTES * (g + 1) + LAYER_BYTES) if overhead else 0
            if base_bytes + prefix_bytes[end - 1] + extra <= budget_bytes:
                best = min(best, float(error[end - 1]))
    return 10 * math.log10(255.0**2 * 3 * pixels / best) if math.isfinite(best) else math.nan


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="raq-photo2")
    p.add_argument("--train", type=Path, required=True, help="training folder; its held-out photos are used")
    p.add_argument("--kodak", type=Path, required=True)
    p.add_argument("--images", type=int, default=6, help="images of each set")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    _, held = split_photos([args.train])
    sets = {"held_out": held[: args.images], "kodak": sorted(list_images([args.kodak]))[: args.images]}
    started = time.monotonic()
    results: dict = {}
    for name, paths in sets.items():
        table = {layout: [] for layout in LAYOUTS}
        for path in paths:
            image = load(path)
            pixels = image.shape[0] * image.shape[1]
            curves = prefix_curves(model, image)
            for layout, ends in LAYOUTS.items():
                overhead = not layout.startswith("every")
                table[layout].append([best_psnr(curves, ends, b * pixels / 8, pixels, overhead) for b in BUDGETS])
            print(name, path.name, {k: round(v[-1][1], 2) for k, v in table.items()}, flush=True)
        results[name] = {
            "images": [p.name for p in paths],
            "mean_psnr": {k: [round(float(x), 3) for x in np.nanmean(v, 0)] for k, v in table.items()},
            "per_image": {k: [[round(float(x), 3) for x in row] for row in v] for k, v in table.items()},
        }
    report = {
        "benchmark": "residual_groups",
        "model": args.model,
        "budgets_bpp": BUDGETS,
        "layouts": {k: list(v) for k, v in LAYOUTS.items()},
        "method": "nearest-neighbour base grids at " + ", ".join(map(str, BASE_SIZES)) + ", base bits estimated"
        " by the context model, residual ideal bits, RDOQ at the encoder's weight, every other level 0..26",
        "sets": results,
        "seconds": round(time.monotonic() - started, 1),
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    for name, r in results.items():
        for layout, means in r["mean_psnr"].items():
            print(f"{name:9s} {layout:40s} " + " ".join(f"{x:6.2f}" for x in means))


if __name__ == "__main__":
    main()
