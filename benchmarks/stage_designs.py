"""Compare refinement-stage designs for model v2 (issue 20) by BD-rate on held-out photos and on Kodak.

Each design is a run of ``python -m raqcodec.train.stages`` (its ``state.safetensors``). For every image
and every operating point (base codebook size K~, plus the design's refinement setting) it measures:
- base-stage bits: the shipped context model's estimate for the index grid (what format 2 spends),
- refinement bits: design B (scalar) the ideal bits of its Gaussian model, design A (rvq) each stage's
  order-0 entropy (optimistic for A: no table cost),
- RGB PSNR of the float decoder's output, clamped to [0, 1] and rounded to 8 bits.
The operating points are averaged over images per setting and the Pareto front of those means is each
design's curve. Anchors measured in the same run: the unchanged base model (K~ ladder, stage 1 only) and
Pillow WebP (method 6) at a quality ladder.

    python benchmarks/stage_designs.py --run scalar=runs/scalar --run rvq=runs/rvq \
        --train ../shared/data/train --kodak ../shared/data/kodak --out benchmarks/results/stage_designs.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from raqcodec.entropy.context_coding import estimated_bits
from raqcodec.eval import baselines
from raqcodec.eval.bdrate import bd_rate, rd_curve
from raqcodec.model.registry import load as load_model
from raqcodec.nn.quantizer import nearest_indices, to_rows
from raqcodec.nn.stages import ScalarRefinement
from raqcodec.train.data import load_rgb
from raqcodec.train.stages import StageRecipe, StageTrainer, split_photos
from raqcodec.train.state import read_info

BASE_SIZES = [8, 16, 32, 64, 128, 256, 512, 1024]
REFINED_SIZES = [64, 256, 1024]
SCALAR_LEVELS = [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20]
RVQ_CONFIGS = [[16], [64], [256], [1024], [1024, 64], [1024, 256], [1024, 1024]]
WEBP_QUALITIES = [2, 5, 10, 20, 30, 45, 60, 75, 85, 92]
RESIDUAL_LEVELS = [4, 6, 8, 10, 12, 14, 16, 18]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * math.log10(255.0**2 / mse) if mse > 0 else 99.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


@torch.no_grad()
def design_points(
    trainer: StageTrainer, image: np.ndarray, base_bits: dict[int, float]
) -> dict[str, tuple[float, float]]:
    """setting -> (bpp, PSNR) for one image; ``base_bits`` caches base-stage bits by (encoder-specific) K~."""
    x = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255
    pixels = image.shape[0] * image.shape[1]
    codec = load_model("raq-photo")
    z = trainer.model.encoder(x)
    out: dict[str, tuple[float, float]] = {}
    settings: list[tuple[str, int, object]] = [(f"k{k}", k, None) for k in BASE_SIZES]
    if isinstance(trainer.stage, ScalarRefinement):
        settings += [(f"k{k}_l{level}", k, level) for k in REFINED_SIZES for level in SCALAR_LEVELS]
    else:
        settings += [(f"k{k}_r{'x'.join(map(str, c))}", k, c) for k in REFINED_SIZES for c in RVQ_CONFIGS]
    for name, size, extra in settings:
        if size not in base_bits:
            book = trainer.sequence[:size]
            grid = nearest_indices(to_rows(z), book).reshape(z.shape[2], z.shape[3]).numpy()
            base_bits[size] = estimated_bits(codec.context, codec.sequence[:size], grid)
        level = None if not isinstance(extra, int) else torch.tensor([extra])
        sizes = list(extra) if isinstance(extra, list) else None
        x_hat, bits, _, _ = trainer.reconstruct(x, size, level, sizes)
        decoded = to_uint8(x_hat)
        out[name] = ((base_bits[size] + float(bits[0])) / pixels, psnr(decoded, image))
    return out


def residual_points(model_path: Path, image: np.ndarray) -> dict[str, tuple[float, float]]:
    """Design C (the residual stage of a model file): setting -> (bpp, PSNR), exact decodes."""
    from raqcodec.model.loaded import CodecModel
    from raqcodec.model.residual import GROUPS, pad_to_blocks

    model = _models.setdefault(str(model_path), CodecModel.load(model_path))
    stage = model.residual
    assert stage is not None, f"{model_path} has no residual stage"
    h, w = image.shape[0] // 4, image.shape[1] // 4
    pixels = image.shape[0] * image.shape[1]
    rows = model.analyse(image)
    target = pad_to_blocks(image)
    out: dict[str, tuple[float, float]] = {}
    for size in BASE_SIZES:
        indices = model.indices(rows, "seq2seq", size)
        base_bits = estimated_bits(model.context, model.codebook("seq2seq", size), indices.reshape(h, w))
        base = pad_to_blocks(model.synthesize(indices, model.codebook("seq2seq", size), (h, w)))
        out[f"k{size}"] = (base_bits / pixels, psnr(base[: image.shape[0], : image.shape[1]], image))
        if size not in REFINED_SIZES:
            continue
        coefficients, classes = stage.coefficients(target, base), stage.classes(base)
        for level in RESIDUAL_LEVELS:
            symbols = stage.quantize(coefficients, level)
            bits = base_bits + float(stage.group_bits(symbols, classes, level).sum()) + 32 * GROUPS
            decoded = stage.reconstruct(base, symbols, level)[: image.shape[0], : image.shape[1]]
            out[f"k{size}_l{level}"] = (bits / pixels, psnr(decoded, image))
    return out


_models: dict[str, object] = {}


def webp_points(image: np.ndarray) -> dict[str, tuple[float, float]]:
    out = {}
    pixels = image.shape[0] * image.shape[1]
    for q in WEBP_QUALITIES:
        data, _ = baselines.encode("webp", image, q)
        decoded, _ = baselines.decode(data)
        out[f"q{q}"] = (len(data) * 8 / pixels, psnr(decoded[..., :3], image))
    return out


def mean_curve(per_image: list[dict[str, tuple[float, float]]]) -> list[tuple[float, float]]:
    names = per_image[0].keys()
    return [(float(np.mean([p[n][0] for p in per_image])), float(np.mean([p[n][1] for p in per_image]))) for n in names]


def load_images(paths: list[Path]) -> list[np.ndarray]:
    images = []
    for p in paths:
        rgb = load_rgb(p, 512).permute(1, 2, 0).numpy()
        h, w = rgb.shape[0] // 16 * 16, rgb.shape[1] // 16 * 16
        images.append(np.ascontiguousarray(rgb[:h, :w]))
    return images


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", action="append", default=[], help="NAME=RUN_DIR (design read from the run)")
    p.add_argument(
        "--residual-model",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="design C: a model file with a residual stage",
    )
    p.add_argument("--train", type=Path, required=True, help="training folder; its held-out photos are used")
    p.add_argument("--kodak", type=Path, required=True)
    p.add_argument("--held-out", type=int, default=12, help="how many held-out photos")
    p.add_argument("--kodak-images", type=int, default=12)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--previous",
        type=Path,
        help="a results file of this script whose curves are kept (for runs measured earlier on the same images)",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    _, held = split_photos([args.train])
    sets = {
        "held_out": load_images(held[: args.held_out]),
        "kodak": load_images(sorted(args.kodak.glob("*.png"))[: args.kodak_images]),
    }
    trainers: dict[str, StageTrainer] = {"base": StageTrainer(StageRecipe(design="scalar"))}
    info: dict[str, dict] = {"base": {"steps": 0}}
    for spec in args.run:
        name, run = spec.split("=", 1)
        meta = read_info(Path(run) / "state.safetensors")
        trainer = StageTrainer(StageRecipe.from_dict(meta["recipe"]))
        trainer.load(Path(run) / "state.safetensors")
        trainer.modules().eval()
        trainers[name] = trainer
        info[name] = {"steps": meta["step"], "elapsed_s": meta["elapsed_s"], "design": meta["recipe"]["design"]}
    previous = json.loads(args.previous.read_text()) if args.previous else {"runs": {}, "sets": {}}
    results: dict[str, dict] = {"runs": {**previous["runs"], **info}, "sets": {}}
    for set_name, images in sets.items():
        curves: dict[str, list[tuple[float, float]]] = {
            n: [tuple(p) for p in c] for n, c in previous["sets"].get(set_name, {}).get("curves", {}).items()
        }
        started = time.time()
        if "webp" not in curves:  # anchors kept from --previous (same images) are not measured again
            curves["webp"] = mean_curve([webp_points(im) for im in images])
        for spec in args.residual_model:
            name, path = spec.split("=", 1)
            curves[name] = mean_curve([residual_points(Path(path), im) for im in images])
            print(f"{set_name} {name}: {time.time() - started:.0f} s", file=sys.stderr)
        for name, trainer in trainers.items():
            if name == "base" and name in curves:
                continue
            per_image = []
            for im in images:
                points = design_points(trainer, im, {})
                if name == "base":
                    points = {k: v for k, v in points.items() if "_" not in k}
                per_image.append(points)
            curves[name] = mean_curve(per_image)
            print(f"{set_name} {name}: {time.time() - started:.0f} s", file=sys.stderr)
        fronts = {n: [list(map(float, pt)) for pt in zip(*rd_curve(c))] for n, c in curves.items()}
        bd = {}
        for n in curves:
            if n == "webp":
                continue
            for anchor in ("webp", "base"):
                if anchor != n:
                    try:
                        bd[f"{n}_vs_{anchor}"] = bd_rate(curves[anchor], curves[n])
                    except ValueError as exc:
                        bd[f"{n}_vs_{anchor}"] = str(exc)
        results["sets"][set_name] = {"images": len(images), "curves": curves, "fronts": fronts, "bd_rate_percent": bd}
        print(json.dumps({set_name: bd}, indent=1), file=sys.stderr)
    args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
