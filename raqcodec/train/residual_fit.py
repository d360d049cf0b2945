"""Fit the residual stage of model v2 (``raqcodec.model.residual``) to training photos and write the model file.

For a spread of training photos (the held-out ones excluded, as in every training run), each is coded by
the base model at a codebook size drawn log-uniformly from 16..1024 (nearest-neighbour indices, the
exact decoder), and the 8x8 RGB blocks of original minus base image are collected. The basis is the
eigenvectors of their covariance (a KLT: no other orthonormal transform packs more of their energy into
fewer coefficients), strongest first; the rate model is the mean absolute coefficient per (activity
class, coefficient). Two minutes on a 2-core CPU, deterministic for a given file list and seed.

The layer caps (``layer_caps``: the widest table a coefficient gets in a layer finer than one that already
coded it) are fitted on the same blocks: for every level difference and earlier symbol zero or not, the
table cap that codes the later layer's symbols in the fewest bits, over coarse levels 0, 2, ..., 30.
``--layers-only`` fits only them, for a model that already has its residual stage.

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
from ..model.residual import (
    ACTIVITY_CLASSES,
    COEFFICIENTS,
    LEVELS,
    STEP_BITS,
    ResidualStage,
    freeze,
    layer_caps_tensor,
    pad_to_blocks,
    to_blocks,
)
from .data import list_images, load_rgb
from .stages import split_photos

SIZE_RANGE = (16, 1024)


def base_image(model: CodecModel, rgb: np.ndarray, size: int) -> np.ndarray:
    """The exact base reconstruction (padded to 8) of an image whose sides are multiples of 8."""
    grid = (rgb.shape[0] // 4, rgb.shape[1] // 4)
    indices = model.indices(model.analyse(rgb), "seq2seq", size)
    return pad_to_blocks(model.synthesize(indices, model.codebook("seq2seq", size), grid))


CAP_SAMPLE_BLOCKS = 20_000


def residual_blocks(model: CodecModel, photos: list[Path], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(blocks, 192) pixel residuals and each block's activity class."""
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
    return np.concatenate(blocks), np.concatenate(classes)


def fit(model: CodecModel, photos: list[Path], seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    x, c = residual_blocks(model, photos, seed)
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


def fit_layer_caps(stage: ResidualStage, coefficients: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """(2, LEVELS) table caps by [earlier symbol nonzero][level difference] (difference 0 is unused)."""
    caps = np.full((2, LEVELS), stage.tables.levels - 1, dtype=np.int64)
    coarse_levels = range(0, LEVELS - 1, 2)
    first = {coarse: stage.quantize(coefficients, coarse, classes) for coarse in coarse_levels}
    for difference in range(1, LEVELS):
        # (earlier symbol nonzero, table, later symbol) counts over every coarse level it can follow
        counts: dict[tuple[int, int, int], int] = {}
        for coarse in coarse_levels:
            fine = coarse + difference
            if fine >= LEVELS:
                break
            rest = coefficients - first[coarse] * (stage.steps[coarse] * 2.0**-STEP_BITS)
            later = stage.quantize(rest, fine)
            # one int64 key per coefficient (symbols are within +-4095): a 1-D unique is fast
            nonzero = (first[coarse] != 0).astype(np.int64)
            keys = ((nonzero * stage.tables.levels + stage.tables_for(classes, fine)) << 13) + later + 4096
            unique, n = np.unique(keys.ravel(), return_counts=True)
            for key, count in zip(unique.tolist(), n.tolist(), strict=True):
                pair = divmod(key >> 13, stage.tables.levels)
                triple = (pair[0], pair[1], (key & 8191) - 4096)
                counts[triple] = counts.get(triple, 0) + count
        if not counts:
            continue
        keys = np.array(list(counts), dtype=np.int64)
        weights = np.array(list(counts.values()), dtype=np.float64)
        for nonzero in (0, 1):
            mine = keys[:, 0] == nonzero
            if not mine.any():
                continue
            tables, symbols, w = keys[mine, 1], keys[mine, 2], weights[mine]
            bits = [
                float((stage.tables.symbol_bits(symbols, np.minimum(tables, k)) * w).sum())
                for k in range(stage.tables.levels)
            ]
            caps[nonzero, difference] = int(np.argmin(bits))
    return caps


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, nargs="+", required=True)
    p.add_argument("--base", default="raq-photo", help="the base model")
    p.add_argument("--name", required=True)
    p.add_argument("--out", type=Path, default=Path("models"))
    p.add_argument("--photos", type=int, default=96, help="training photos used (spread over the list)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--layers-only", action="store_true", help="keep the base model's residual stage; fit its layer caps"
    )
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    started = time.time()
    source = read_model_file(resolve(args.base))
    model = CodecModel(source)
    train, _ = split_photos(args.data)
    photos = train[:: max(1, len(train) // args.photos)][: args.photos]
    if args.layers_only:
        if model.residual is None:
            p.error(f"{args.base} has no residual stage to fit layer caps for")
        stats: dict[str, object] = {"photos": len(photos)}
        stage_tensors = {k: v for k, v in source.tensors.items() if k.startswith("residual.")}
    else:
        klt, mean_abs, stats = fit(model, photos, args.seed)
        stage_tensors = freeze(klt, mean_abs)
    stage = ResidualStage(stage_tensors)
    x, c = residual_blocks(model, photos, args.seed)
    sample = np.random.default_rng(args.seed).permutation(len(x))[:CAP_SAMPLE_BLOCKS]
    caps = fit_layer_caps(stage, stage.coefficients_of(x[sample]), c[sample])
    stats["layer_caps"] = caps.tolist()
    tensors = {**source.tensors, **stage_tensors, **layer_caps_tensor(caps)}
    fingerprint = write_model_file(args.out / f"{args.name}.safetensors", args.name, source.config, tensors)
    stats.update(
        seconds=round(time.time() - started, 1),
        base=args.base,
        fingerprint=fingerprint,
        images_listed=len(list_images(args.data)),
        seed=args.seed,
    )
    card_path = args.out / f"{args.name}.json"
    if args.layers_only and card_path.exists():
        # the rest of the card (the stage's fit, figures) still holds: the caps change no single-layer stream
        existing = json.loads(card_path.read_text())
        existing["fingerprint"] = fingerprint
        existing.setdefault("residual_fit", {})["layer_caps"] = stats["layer_caps"]
        write_card(card_path, existing)
    else:
        write_card(card_path, card(args.name, source.config.to_dict(), stats))
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
