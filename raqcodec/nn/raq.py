"""The RAQ model: VQ-VAE with an EMA base codebook and a seq2seq adapter, trained jointly.

Training loss (paper): MSE(x_base, x) + MSE(x_adapted, x) + VQ loss of the base path + VQ loss of the
adapted path, all with weight 1. ``training_step(x, None)`` trains the base path alone (the fixed-rate
baseline, recipe mode "fixed").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .autoencoder import Decoder, Encoder
from .config import ModelConfig
from .quantizer import EMACodebook, quantize_with, to_rows
from .seq2seq import Seq2SeqAdapter


@dataclass
class StepOutput:
    loss: Tensor
    metrics: dict[str, float]
    rows: Tensor  # base-path latents (detached), for the EMA update
    base_indices: Tensor


class RAQModel(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.codebook = EMACodebook(cfg.codebook_size, cfg.latent_dim, cfg.ema_decay, cfg.ema_eps)
        self.adapter = Seq2SeqAdapter(cfg)

    def adapted_codebook(self, size: int) -> Tensor:
        return self.adapter(self.codebook.embedding, size)

    def forward(self, x: Tensor, adapted_size: int | None) -> StepOutput:
        """``training_step``, as ``forward`` so that DistributedDataParallel can wrap the model."""
        return self.training_step(x, adapted_size)

    def training_step(self, x: Tensor, adapted_size: int | None) -> StepOutput:
        """Losses for a batch x (N, 3, H, W) in [0, 1]; ``adapted_size`` None trains the base path only."""
        z = self.encoder(x)
        base = quantize_with(z, self.codebook.embedding, self.cfg.commitment, train_codebook=False)
        x_base = self.decoder(base.quantized)
        mse_base = F.mse_loss(x_base, x)
        loss = mse_base + base.loss
        metrics = {"mse_base": mse_base.item(), "perplexity_base": base.perplexity.item()}
        if adapted_size is not None:
            book = self.adapted_codebook(adapted_size)
            adapted = quantize_with(z, book, self.cfg.commitment, train_codebook=True)
            x_adapted = self.decoder(adapted.quantized)
            mse_adapted = F.mse_loss(x_adapted, x)
            loss = loss + mse_adapted + adapted.loss
            metrics.update(mse_adapted=mse_adapted.item(), perplexity_adapted=adapted.perplexity.item())
        metrics["loss"] = loss.item()
        return StepOutput(loss=loss, metrics=metrics, rows=to_rows(z).detach(), base_indices=base.indices)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, codebook: Tensor) -> Tensor:
        """Float reconstruction with a given codebook (evaluation during training)."""
        z = self.encoder(x)
        q = quantize_with(z, codebook, 0.0, train_codebook=False)
        return self.decoder(q.quantized)
