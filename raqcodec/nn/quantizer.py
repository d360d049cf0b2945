"""Vector quantization: nearest-neighbour search, the EMA base codebook, and the adapted-codebook quantizer.

VQ-VAE: van den Oord et al., "Neural Discrete Representation Learning" (arXiv 1711.00937); EMA updates
from its appendix. Losses follow the paper's recipe: commitment weight beta, straight-through gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def nearest_indices(latents: Tensor, codebook: Tensor, chunk: int = 16384) -> Tensor:
    """Index of the nearest codebook row for every vector.

    latents: (N, d); codebook: (K, d). Returns (N,) int64. Ties go to the lower index, so a codebook
    that is a prefix of a longer one never picks a later vector on a tie.
    """
    return nearest_in_prefixes(latents, codebook, [codebook.shape[0]], chunk)[codebook.shape[0]]


def nearest_in_prefixes(
    latents: Tensor, codebook: Tensor, prefixes: Sequence[int], chunk: int = 16384
) -> dict[int, Tensor]:
    """``nearest_indices`` in each of the codebooks ``codebook[:p]`` for p in ``prefixes``, from one
    product: nested codebooks (the seq2seq adapter's) are quantized at many sizes by every encode. Each
    prefix's argmin continues the shorter one's over the rows it adds, the lower index winning ties."""
    sizes = sorted(set(prefixes))
    book = codebook[: sizes[-1]]
    sq_codes = (book * book).sum(1)
    out = {p: torch.empty(latents.shape[0], dtype=torch.long, device=latents.device) for p in sizes}
    for start in range(0, latents.shape[0], chunk):
        part = latents[start : start + chunk]
        # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2; ||x||^2 does not change the argmin (one fused product)
        dist = torch.addmm(sq_codes, part, book.t(), alpha=-2.0)
        best: tuple[Tensor, Tensor] | None = None
        lo = 0
        for p in sizes:
            value, index = dist[:, lo:p].min(1)
            index += lo
            if best is not None:
                closer = value < best[0]
                value, index = torch.where(closer, value, best[0]), torch.where(closer, index, best[1])
            best, lo = (value, index), p
            out[p][start : start + chunk] = index
    return out


def to_rows(z: Tensor) -> Tensor:
    """(N, d, h, w) -> (N*h*w, d)."""
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])


def from_rows(rows: Tensor, like: Tensor) -> Tensor:
    """Inverse of ``to_rows`` for a tensor shaped like ``like``."""
    n, d, h, w = like.shape
    return rows.reshape(n, h, w, d).permute(0, 3, 1, 2)


@dataclass
class QuantizerOutput:
    quantized: Tensor  # straight-through: forward value = codebook vectors, gradient flows to latents
    indices: Tensor  # (N, h, w)
    loss: Tensor  # VQ loss of this path (commitment, plus codebook loss for a non-EMA codebook)
    perplexity: Tensor  # exp(entropy of code usage in the batch)


def _perplexity(indices: Tensor, size: int) -> Tensor:
    counts = torch.bincount(indices.flatten(), minlength=size).float()
    probs = counts / counts.sum().clamp(min=1)
    return torch.exp(-(probs * torch.log(probs.clamp(min=1e-10))).sum())


def quantize_with(latents: Tensor, codebook: Tensor, commitment: float, train_codebook: bool) -> QuantizerOutput:
    """Quantize (N, d, h, w) latents with ``codebook`` (K, d).

    With ``train_codebook`` the loss includes ||sg(z) - e||^2 so gradients reach the codebook (this is how
    the adapted path trains the seq2seq adapter); the EMA codebook is updated outside the loss instead.
    """
    rows = to_rows(latents)
    idx = nearest_indices(rows.detach(), codebook.detach())
    chosen = codebook[idx]
    loss = commitment * F.mse_loss(rows, chosen.detach())
    if train_codebook:
        loss = loss + F.mse_loss(chosen, rows.detach())
    straight = rows + (chosen - rows).detach()
    n, _, h, w = latents.shape
    return QuantizerOutput(
        quantized=from_rows(straight, latents),
        indices=idx.reshape(n, h, w),
        loss=loss,
        perplexity=_perplexity(idx, codebook.shape[0]),
    )


class EMACodebook(nn.Module):
    """Base codebook of K vectors updated by exponential moving averages (decay 0.99, eps 1e-5).

    Codebook health: the codebook is initialised from the first batch of latents, and a code whose
    EMA usage (in latents per batch) falls below ``dead_threshold`` is restarted on a random latent of
    the current batch, so no code stays dead (codebook collapse is a known VQ failure).
    """

    embedding: Tensor  # buffers (register_buffer), typed for the checker
    cluster_size: Tensor
    embedding_sum: Tensor
    initialized: Tensor

    def __init__(self, size: int, dim: int, decay: float, eps: float, dead_threshold: float = 1.0) -> None:
        super().__init__()
        self.size, self.dim, self.decay, self.eps = size, dim, decay, eps
        self.dead_threshold = dead_threshold
        self.register_buffer("embedding", torch.randn(size, dim) * 0.1)
        self.register_buffer("cluster_size", torch.ones(size))
        self.register_buffer("embedding_sum", self.embedding.clone())
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def initialize_from(self, rows: Tensor, generator: torch.Generator | None = None) -> None:
        pick = torch.randperm(rows.shape[0], generator=generator, device="cpu")[: self.size].to(rows.device)
        if pick.numel() < self.size:  # fewer latents than codes: reuse them
            pick = pick.repeat(self.size // max(1, pick.numel()) + 1)[: self.size]
        self.embedding.copy_(rows[pick])
        self.embedding_sum.copy_(rows[pick])
        self.cluster_size.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def update(self, rows: Tensor, indices: Tensor, generator: torch.Generator | None = None) -> int:
        """One EMA step from a batch of latents and their codes; returns how many dead codes were restarted.

        Split into ``ema_statistics`` and ``apply_statistics`` so that data-parallel training can
        all-reduce the statistics in between.
        """
        counts, sums = self.ema_statistics(rows, indices)
        return self.apply_statistics(counts, sums, rows, generator)

    @torch.no_grad()
    def ema_statistics(self, rows: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
        onehot = F.one_hot(indices.flatten(), self.size).type(rows.dtype)
        return onehot.sum(0), onehot.t() @ rows

    @torch.no_grad()
    def apply_statistics(
        self, counts: Tensor, sums: Tensor, rows: Tensor, generator: torch.Generator | None = None
    ) -> int:
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embedding_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.size * self.eps) * total
        self.embedding.copy_(self.embedding_sum / smoothed[:, None])
        dead = (self.cluster_size < self.dead_threshold).nonzero().flatten()
        if dead.numel():
            pick = torch.randint(0, rows.shape[0], (dead.numel(),), generator=generator, device="cpu")
            fresh = rows[pick.to(rows.device)]
            self.embedding[dead] = fresh
            self.embedding_sum[dead] = fresh
            self.cluster_size[dead] = 1.0
        return int(dead.numel())
