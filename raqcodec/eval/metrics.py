"""Image quality and codebook metrics on batches of 8-bit RGB images: PSNR, SSIM, MS-SSIM, codebook perplexity.

Images are (N, C, H, W) tensors (or arrays) of uint8 or of floats in [0, 255]; every metric is returned
per image so that callers choose how to average. Computations run in float64.

SSIM follows Wang, Bovik, Sheikh & Simoncelli, "Image quality assessment: from error visibility to
structural similarity" (IEEE TIP 2004): an 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03,
L = 255, population (not sample) variances, and only the window positions that lie wholly inside the
image ('valid' filtering). That is what scikit-image's ``structural_similarity`` computes with
``gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255``.

MS-SSIM is the ``pytorch-msssim`` package's (Wang, Simoncelli & Bovik, "Multiscale structural similarity
for image quality assessment", Asilomar 2003), the implementation the learned-compression literature
reports: 5 scales weighted (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), the same window and constants as SSIM
at every scale, contrast-structure (clipped at 0) at the first 4 scales and SSIM (clipped at 0) at the
last, 2x2 average pooling between scales (odd sides zero-padded), per channel, then averaged over the
channels. Both sides must exceed 160 pixels ((11 - 1) x 2^4), or the last scale would be smaller than the
window; this module checks that and says so in a ValueError.
"""

from __future__ import annotations

import math
from typing import overload

import numpy as np
import pytorch_msssim
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


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared difference of two images of the same shape (all channels together), in float64."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    diff = a.astype(np.float64) - b.astype(np.float64)
    return float(np.mean(diff * diff))


def batch_mse(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> Tensor:
    """Mean squared difference of each image pair of two (N, C, H, W) batches over all its channels."""
    x, y = _pair(a, b)
    return ((x - y) ** 2).mean(dim=(1, 2, 3))


@overload
def psnr(mse: float, peak: float = 255.0) -> float: ...
@overload
def psnr(mse: Tensor, peak: float = 255.0) -> Tensor: ...
def psnr(mse: float | Tensor, peak: float = 255.0) -> float | Tensor:
    """PSNR in dB of a mean squared error (``mse``, ``batch_mse`` or a training loss) at ``peak``, the
    largest value a sample can take (255 for 8-bit pixels); inf where the error is 0. raqcodec's only PSNR:
    every figure it reports goes through here."""
    if isinstance(mse, Tensor):
        return 10.0 * torch.log10(peak**2 / mse)
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(peak**2 / mse)


def _ssim_maps(
    x: Tensor, y: Tensor, data_range: float, window: int, sigma: float, k1: float, k2: float
) -> tuple[Tensor, Tensor]:
    """The SSIM map and its contrast-structure part (N, C, H', W') over the 'valid' window positions."""
    c = x.shape[1]
    g = gaussian_window(window, sigma).to(x.device, x.dtype)
    rows, cols = g.view(1, 1, -1, 1).expand(c, 1, -1, 1), g.view(1, 1, 1, -1).expand(c, 1, 1, -1)

    def blur(t: Tensor) -> Tensor:
        # Separable Gaussian, no padding: only windows wholly inside the image count.
        return F.conv2d(F.conv2d(t, rows, groups=c), cols, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    cs_map = (2 * cov + c2) / (var_x + var_y + c2)
    return ((2 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)) * cs_map, cs_map


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
    h, w = x.shape[2:]
    if h < window or w < window:
        raise ValueError(f"images must be at least {window}x{window} for SSIM, got {h}x{w}")
    ssim_map, _ = _ssim_maps(x, y, data_range, window, sigma, k1, k2)
    # Every channel's map has the same size, so the mean over all of it is the mean of the channel means.
    return ssim_map.mean(dim=(1, 2, 3))


MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def ms_ssim_min_side(window: int = 11, scales: int = len(MS_SSIM_WEIGHTS)) -> int:
    """The smallest side MS-SSIM accepts: the coarsest scale must still hold one whole window."""
    return (window - 1) * 2 ** (scales - 1) + 1


def ms_ssim(
    a: Tensor | np.ndarray,
    b: Tensor | np.ndarray,
    data_range: float = 255.0,
    window: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    weights: tuple[float, ...] = MS_SSIM_WEIGHTS,
) -> Tensor:
    """MS-SSIM of each image pair (N,) in [0, 1]; raises ValueError for images with a side under
    ``ms_ssim_min_side()`` (161 pixels with the defaults)."""
    x, y = _pair(a, b)
    h, w = x.shape[2:]
    smallest = ms_ssim_min_side(window, len(weights))
    if min(h, w) < smallest:
        raise ValueError(
            f"images must be at least {smallest}x{smallest} for MS-SSIM "
            f"({len(weights)} scales of an {window}x{window} window), got {h}x{w}"
        )
    # pytorch-msssim's implementation, in float32 (measured on kodim23 against noise: 2.1 s, against 4.7 s
    # in float64 and 3.4 s for raqcodec's own former float32/float64 mix; all three agree within 1.3e-6)
    value = pytorch_msssim.ms_ssim(
        x.float(),
        y.float(),
        data_range=data_range,
        size_average=False,
        win_size=window,
        win_sigma=sigma,
        weights=list(weights),
        K=(k1, k2),
    )
    return value.double()


def ms_ssim_db(value: float) -> float:
    """MS-SSIM on the dB scale used in compression papers, -10 log10(1 - MS-SSIM): inf when identical."""
    return math.inf if value >= 1.0 else -10.0 * math.log10(1.0 - value)


def perplexity(indices: Tensor, size: int) -> float:
    """exp(entropy) of the code histogram: the effective number of codes used (1..size)."""
    counts = torch.bincount(indices.flatten().cpu(), minlength=size).to(torch.float64)
    probs = counts[counts > 0] / counts.sum()
    return math.exp(float(-(probs * probs.log()).sum()))
