"""Model-based RAQ: resize a pretrained codebook with no training (Seo & Kang, arXiv 2405.14222, section 3.2).

- K~ < K: differentiable k-means, DKM (Cho et al., arXiv 2108.12659): soft assignments
  A = softmax_j(-||e_i - c_j|| / tau), centroids c_j = sum_i A_ij e_i / sum_i A_ij, from the first K~ base
  vectors (as the reference code does), until the mean absolute change is below eps.
- K~ > K: inverse DKM, IKM: optimise K~ new vectors so that DKM of them back to K clusters matches the base
  codebook under a multiscale-kernel MMD; keep the best iterate; retry once with a wider init.

Everything runs in float64 on the CPU from a fixed seed, so the decoder recomputes the same codebook; the
stream also carries a CRC of the integer codebook, turning any cross-machine difference into a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor


@dataclass(frozen=True)
class ClusterSettings:
    tau: float = 0.01  # DKM temperature (paper)
    dkm_iterations: int = 200  # paper: up to 200
    eps: float = 1e-8  # paper: stop when the mean absolute centroid change is below this
    ikm_steps: int = 300  # paper: 5000; fewer here because the decoder recomputes it (cached per model)
    ikm_dkm_iterations: int = 10  # DKM iterations unrolled inside each IKM step
    ikm_lr: float = 5e-3
    ikm_weight_decay: float = 0.01  # 0.05 when K~ > 1000 (paper)
    ikm_init_std: float = 0.125  # retry with 0.2 when the MMD stays above ikm_retry_mmd
    ikm_retry_mmd: float = 0.01
    mmd_scales: tuple[float, ...] = (0.2, 0.5, 0.9, 1.3)


def pairwise_distance(a: Tensor, b: Tensor) -> Tensor:
    """Euclidean distances (|a|, |b|). Written out because torch.cdist's backward is very slow on CPU;
    the clamp keeps the square root's gradient finite when two points coincide."""
    sq = (a * a).sum(1, keepdim=True) - 2.0 * a @ b.t() + (b * b).sum(1)[None, :]
    return sq.clamp(min=1e-12).sqrt()


def dkm(
    points: Tensor,
    size: int,
    settings: ClusterSettings = ClusterSettings(),
    iterations: int | None = None,
    init: Tensor | None = None,
) -> Tensor:
    """Cluster ``points`` (K, d) into ``size`` centroids; differentiable w.r.t. ``points``."""
    if not 1 <= size <= points.shape[0]:
        raise ValueError(f"DKM needs 1 <= size <= {points.shape[0]}, got {size}")
    centroids = points[:size] if init is None else init
    for _ in range(settings.dkm_iterations if iterations is None else iterations):
        attention = torch.softmax(-pairwise_distance(points, centroids) / settings.tau, dim=1)  # (K, size)
        weight = attention.sum(0)[:, None].clamp(min=1e-12)
        updated = attention.t() @ points / weight
        change = (updated - centroids).abs().mean()
        centroids = updated
        if change < settings.eps:
            break
    return centroids


def multiscale_mmd(x: Tensor, y: Tensor, scales: tuple[float, ...]) -> Tensor:
    """MMD with the kernel sum_a a^2 / (a^2 + ||x - y||^2)."""

    def kernel(a: Tensor, b: Tensor) -> Tensor:
        sq = pairwise_distance(a, b).pow(2)
        return cast(Tensor, sum(s * s / (s * s + sq) for s in scales))

    return kernel(x, x).mean() + kernel(y, y).mean() - 2 * kernel(x, y).mean()


def ikm(base: Tensor, size: int, settings: ClusterSettings = ClusterSettings()) -> Tensor:
    """``size`` > K vectors whose DKM back to K clusters matches ``base`` (K, d)."""
    k = base.shape[0]
    if size <= k:
        raise ValueError(f"IKM grows a codebook: need size > {k}, got {size}")
    target = base.detach().to(torch.float64)
    best, best_mmd = None, float("inf")
    for attempt, std in enumerate((settings.ikm_init_std, 0.2)):
        generator = torch.Generator().manual_seed(size * 2 + attempt)
        grown = (torch.randn(size, base.shape[1], generator=generator, dtype=torch.float64) * std).requires_grad_()
        decay = 0.05 if size > 1000 else settings.ikm_weight_decay
        optimizer = torch.optim.AdamW([grown], lr=settings.ikm_lr, weight_decay=decay)
        for _ in range(settings.ikm_steps):
            clustered = dkm(grown, k, settings, iterations=settings.ikm_dkm_iterations)
            loss = multiscale_mmd(clustered, target, settings.mmd_scales)
            if loss.item() < best_mmd:
                best, best_mmd = grown.detach().clone(), loss.item()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if best_mmd <= settings.ikm_retry_mmd:
            break
    assert best is not None
    return best


def cluster_codebook(base: Tensor, size: int, settings: ClusterSettings = ClusterSettings()) -> Tensor:
    """The model-based codebook of ``size`` vectors from the base codebook (float64, CPU)."""
    base64 = base.detach().to("cpu", torch.float64)
    if size == base64.shape[0]:
        return base64.clone()
    with torch.set_grad_enabled(size > base64.shape[0]):
        return dkm(base64, size, settings) if size < base64.shape[0] else ikm(base64, size, settings)
