"""Training RAQ models: recipes, data sources, the resumable training loop."""

from __future__ import annotations

from pathlib import Path

import torch

from .data import FolderSource, TensorSource, center_crops, list_images, load_rgb, read_cifar_tar
from .recipe import Recipe, TrainConfig, builtin_recipes, load_recipe
from .trainer import TrainResult, train

__all__ = ["Recipe", "TrainConfig", "TrainResult", "builtin_recipes", "load_recipe", "train", "build_sources"]


def build_sources(recipe: Recipe, data: list[Path]) -> tuple[FolderSource | TensorSource, torch.Tensor | None]:
    """Training source and validation batch for data paths: image folders/files, or CIFAR-10 tarballs.

    Photos: every ``holdout_every``-th file (sorted order) is held out and its centre crop validates.
    CIFAR-10: a ``*-train.tar.gz`` trains and the first 512 images of a ``*-test.tar.gz`` beside it validate.
    """
    t = recipe.train
    tarballs = [p for p in data if p.name.endswith(".tar.gz")]
    if tarballs:
        train_tar = [p for p in tarballs if "test" not in p.name] or tarballs
        images = torch.cat([read_cifar_tar(p) for p in train_tar])
        test = [p.with_name(p.name.replace("train", "test")) for p in train_tar]
        val = (
            read_cifar_tar(test[0], limit=512).float() / 255.0 if test[0].exists() and test[0] != train_tar[0] else None
        )
        return TensorSource(images), val
    files = list_images(data)
    if not files:
        raise ValueError("no training images found in " + ", ".join(map(str, data)))
    held = set(files[:: t.holdout_every]) if t.holdout_every > 0 and len(files) >= 2 * t.holdout_every else set()
    source = FolderSource.from_paths([p for p in files if p not in held], t.crop, t.scale_min, t.max_short_side)
    val = center_crops([load_rgb(p, t.max_short_side) for p in sorted(held)], t.validation_crop) if held else None
    return source, val
