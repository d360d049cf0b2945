"""Image quality and codebook metrics on batches of 8-bit RGB images: PSNR, SSIM, codebook perplexity.

Images are (N, C, H, W) tensors (or arrays) of uint8 or of floats in [0, 255]; every metric is returned
per image so that callers choose how to average. Computations run in float64.

SSIM follows Wang, Bovik, Sheikh & Simoncelli, "Image quality assessment: from error visibility to
structural similarity" (IEEE TIP 2004): an 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03,
L = 255, population (not sample) variances, and only the window positions that lie wholly inside the
image ('valid' filtering). That is what scikit-image's ``structural_similarity`` computes with
``gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def _as_batch(images: Tensor | np.ndarray, name: str) -> Tensor:
    t = torch.as_tensor(images)
    if t.dim() != 4:
        raise ValueError(f"{name} must be (N, C, H, W), got shape {tuple(t.shape)}")
    return t.to(torch.float64)


def _pair(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    x, y = _as_batch(a, "a"), _as_batch(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    return x, y.to(x.device)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    """Normalised 1-D Gaussian weights (float64), centred on the middle tap."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def psnr(a: Tensor | np.ndarray, b: Tensor | np.ndarray, data_range: float = 255.0) -> Tensor:
    """PSNR in dB of each image pair over all its channels; inf where the images are equal."""
    x, y = _pair(a, b)
    mse = ((x - y) ** 2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(data_range**2 / mse)


def ssim(
    a: Tensor | np.ndarray,
    b: Tensor | np.ndarray,
    data_range: float = 255.0,
    window: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Tensor:
    """SSIM of each image pair (N,), the mean over channels of each channel's mean SSIM map."""
    x, y = _pair(a, b)
    n, c, h, w = x.shape
    if h < window or w < window:
        raise ValueError(f"images must be at least {window}x{window} for SSIM, got {h}x{w}")
    g = gaussian_window(window, sigma).to(x.device)
    rows, cols = g.view(1, 1, -1, 1).expand(c, 1, -1, 1), g.view(1, 1, 1, -1).expand(c, 1, 1, -1)

    def blur(t: Tensor) -> Tensor:
        # Separable Gaussian, no padding: only windows wholly inside the image count.
        return F.conv2d(F.conv2d(t, rows, groups=c), cols, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    # Every channel's map has the same size, so the mean over all of it is the mean of the channel means.
    return ssim_map.mean(dim=(1, 2, 3))


def perplexity(indices: Tensor, size: int) -> float:
    """exp(entropy) of the code histogram: the effective number of codes used (1..size)."""
    counts = torch.bincount(indices.flatten().cpu(), minlength=size).to(torch.float64)
    probs = counts[counts > 0] / counts.sum()
    return math.exp(float(-(probs * probs.log()).sum()))
