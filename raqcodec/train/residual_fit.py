"""Fit the residual stage of model v2 (``raqcodec.model.residual``) to training photos and write the model file.

For a spread of training photos (the held-out ones excluded, as in every training run), each is coded by
the base model at a codebook size drawn log-uniformly from 16..1024 (nearest-neighbour indices, the
exact decoder), and the 8x8 RGB blocks of original minus base image are collected. The basis is the
eigenvectors of their covariance (a KLT: no other orthonormal transform packs more of their energy into
fewer coefficients), strongest first; the rate model is the mean absolute coefficient per (activity
class, coefficient). Two minutes on a 2-core CPU, deterministic for a given file list and seed.

    python -m raqcodec.train.residual_fit --data ../shared/data/train --name raq-photo2 --out models
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from ..model.files import read_model_file, write_card, write_model_file
from ..model.loaded import CodecModel
from ..model.registry import resolve
from ..model.residual import ACTIVITY_CLASSES, COEFFICIENTS, ResidualStage, freeze, pad_to_blocks, to_blocks
from .data import list_images, load_rgb
from .stages import split_photos

SIZE_RANGE = (16, 1024)


def base_image(model: CodecModel, rgb: np.ndarray, size: int) -> np.ndarray:
    """The exact base reconstruction (padded to 8) of an image whose sides are multiples of 8."""
    grid = (rgb.shape[0] // 4, rgb.shape[1] // 4)
    indices = model.indices(model.analyse(rgb), "seq2seq", size)
    return pad_to_blocks(model.synthesize(indices, model.codebook("seq2seq", size), grid))


def fit(model: CodecModel, photos: list[Path], seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    rng = np.random.default_rng(seed)
    blocks, classes = [], []
    probe = ResidualStage(freeze(np.eye(COEFFICIENTS), np.ones((ACTIVITY_CLASSES, COEFFICIENTS))))
    for path in photos:
        rgb = load_rgb(path, 512).permute(1, 2, 0).numpy()
        rgb = np.ascontiguousarray(rgb[: rgb.shape[0] // 8 * 8, : rgb.shape[1] // 8 * 8])
        size = int(round(math.exp(rng.uniform(math.log(SIZE_RANGE[0]), math.log(SIZE_RANGE[1])))))
        base = base_image(model, rgb, size)
        blocks.append(to_blocks(rgb.astype(np.float64) - base.astype(np.float64)))
        classes.append(probe.classes(base))
    x, c = np.concatenate(blocks), np.concatenate(classes)
    eigenvalues, vectors = np.linalg.eigh(x.T @ x / len(x))
    order = np.argsort(eigenvalues)[::-1]
    klt = vectors[:, order].T
    coefficients = np.abs(x @ klt.T)
    overall = coefficients.mean(0)
    mean_abs = np.stack(
        [coefficients[c == k].mean(0) if np.sum(c == k) >= 64 else overall for k in range(ACTIVITY_CLASSES)]
    )
    stats = {
        "blocks": len(x),
        "photos": len(photos),
        "blocks_per_class": np.bincount(c, minlength=ACTIVITY_CLASSES).tolist(),
        "energy_in_first_24": float(eigenvalues[order][:24].sum() / eigenvalues.sum()),
    }
    return klt, np.maximum(mean_abs, 1e-3), stats


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, nargs="+", required=True)
    p.add_argument("--base", default="raq-photo", help="the base model")
    p.add_argument("--name", required=True)
    p.add_argument("--out", type=Path, default=Path("models"))
    p.add_argument("--photos", type=int, default=96, help="training photos used (spread over the list)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    started = time.time()
    source = read_model_file(resolve(args.base))
    model = CodecModel(source)
    train, _ = split_photos(args.data)
    photos = train[:: max(1, len(train) // args.photos)][: args.photos]
    klt, mean_abs, stats = fit(model, photos, args.seed)
    tensors = {**source.tensors, **freeze(klt, mean_abs)}
    fingerprint = write_model_file(args.out / f"{args.name}.safetensors", args.name, source.config, tensors)
    stats.update(
        seconds=round(time.time() - started, 1),
        base=args.base,
        fingerprint=fingerprint,
        images_listed=len(list_images(args.data)),
        seed=args.seed,
    )
    write_card(args.out / f"{args.name}.json", card(args.name, source.config.to_dict(), stats))
    print(json.dumps(stats))


def card(name: str, architecture: dict, fit_stats: dict) -> dict:
    """The machine-readable model card (figures on Kodak are added by benchmarks/kodak_eval.py)."""
    return {
        "name": name,
        "description": f"Model v2: {fit_stats['base']} plus a residual stage (8x8 RGB KLT, 32 step levels), "
        "format 3, 0.03 to beyond 1 bpp",
        "fingerprint": fit_stats["fingerprint"],
        "architecture": architecture,
        "codebook_size": architecture["codebook_size"],
        "k_range": [architecture["k_min"], architecture["k_max"]],
        "residual_fit": fit_stats,
        "kodak": None,
        "bpp_range_kodak": None,
    }


if __name__ == "__main__":
    main()
