"""Training data: image folders (random crops, random down-scaling, flips) and CIFAR-10 tarballs read in place.

All randomness comes from the ``torch.Generator`` passed in, so a resumed run draws the same batches.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import Tensor

from ..io.finder import find_files

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm"}


class BatchSource(Protocol):
    def batch(self, size: int, generator: torch.Generator) -> Tensor:
        """(size, 3, crop, crop) float in [0, 1]."""
        ...


def list_images(roots: list[Path]) -> list[Path]:
    """Training images: files named, and those found under folders by ``raqcodec.io.finder``'s rule (hidden
    files and folders skipped, links to folders not followed), with the extensions ``load_rgb`` reads."""
    return find_files(roots, IMAGE_SUFFIXES)


def load_rgb(path: Path, max_short_side: int) -> Tensor:
    """Decode to (3, H, W) uint8, upright, short side at most ``max_short_side`` (JPEG draft mode first)."""
    with Image.open(path) as img:
        if img.format == "JPEG":
            img.draft("RGB", (max_short_side * 2, max_short_side * 2))  # cheap 1/2^n decode, still >= target
        rgb = ImageOps.exif_transpose(img).convert("RGB")
        short = min(rgb.size)
        if short > max_short_side:
            scale = max_short_side / short
            rgb = rgb.resize((round(rgb.width * scale), round(rgb.height * scale)), Image.Resampling.LANCZOS)
        return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).contiguous()


class FolderSource:
    """Random square crops from photos held in memory.

    Each crop covers ``crop / s`` source pixels with s drawn from [scale_min, 1] and is resized to
    ``crop`` with antialiasing: down-scaling hides the JPEG artefacts of the sources from the model.
    """

    def __init__(self, images: list[Tensor], crop: int, scale_min: float) -> None:
        usable = [im for im in images if min(im.shape[1:]) >= crop]
        if not usable:
            raise ValueError(f"no training image is at least {crop}x{crop}")
        self.images, self.crop, self.scale_min = usable, crop, scale_min

    @classmethod
    def from_paths(cls, paths: list[Path], crop: int, scale_min: float, max_short_side: int = 512) -> FolderSource:
        return cls([load_rgb(p, max_short_side) for p in paths], crop, scale_min)

    def batch(self, size: int, generator: torch.Generator) -> Tensor:
        out = torch.empty(size, 3, self.crop, self.crop)
        for i in range(size):
            img = self.images[int(torch.randint(len(self.images), (1,), generator=generator))]
            _, h, w = img.shape
            scale = self.scale_min + (1 - self.scale_min) * float(torch.rand((), generator=generator))
            side = min(h, w, max(self.crop, round(self.crop / scale)))
            top = int(torch.randint(h - side + 1, (1,), generator=generator))
            left = int(torch.randint(w - side + 1, (1,), generator=generator))
            patch = img[:, top : top + side, left : left + side].float()[None] / 255.0
            if side != self.crop:
                patch = F.interpolate(
                    patch, size=(self.crop, self.crop), mode="bilinear", antialias=True, align_corners=False
                ).clamp(0, 1)
            if bool(torch.rand((), generator=generator) < 0.5):
                patch = patch.flip(-1)
            out[i] = patch[0]
        return out


def read_cifar_tar(path: Path, limit: int | None = None) -> Tensor:
    """All images of a CIFAR-10 JPEG tarball as (N, 3, 32, 32) uint8, in member-name order.

    The archive is read once, front to back: a .tar.gz cannot seek, so extracting members in another
    order than they are stored would decompress the stream again for every step backwards.
    """
    files: dict[str, bytes] = {}
    with tarfile.open(path, "r|gz") as tar:
        for member in tar:
            if member.isfile() and member.name.lower().endswith(".jpg"):
                data = tar.extractfile(member)
                if data is not None:
                    files[member.name] = data.read()
    arrays: list[np.ndarray] = []
    for name in sorted(files)[:limit]:
        with Image.open(io.BytesIO(files[name])) as img:
            arrays.append(np.asarray(img.convert("RGB")))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


class TensorSource:
    """Whole images (e.g. CIFAR-10 32x32) drawn at random with horizontal flips."""

    def __init__(self, images: Tensor) -> None:
        self.images = images

    def batch(self, size: int, generator: torch.Generator) -> Tensor:
        idx = torch.randint(self.images.shape[0], (size,), generator=generator)
        out = self.images[idx].float() / 255.0
        flip = torch.rand(size, generator=generator) < 0.5
        out[flip] = out[flip].flip(-1)
        return out


def center_crops(images: list[Tensor], size: int) -> Tensor:
    """Deterministic validation batch: the central size x size window of each image (smaller ones skipped)."""
    crops = []
    for img in images:
        _, h, w = img.shape
        if min(h, w) < size:
            continue
        top, left = (h - size) // 2, (w - size) // 2
        crops.append(img[:, top : top + size, left : left + size].float() / 255.0)
    return torch.stack(crops)
