"""Convolutional encoder and decoder of the VQ-VAE (paper Table 1), x4 down- and upsampling.

The decoder upsamples with a sub-pixel convolution (3x3 conv to 3*16 channels, then pixel shuffle):
it contains the paper's ConvTranspose2d(C, 3, 8, stride 4, padding 2) as a special case (every output
pixel of that layer sees a 2x2 window of latents, inside the 3x3 window here) and maps one to one onto
the integer decoder in ``raqcodec.model.exact``.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from .config import ModelConfig

# Pixels enter the network centred: x - 0.5 for x in [0, 1].
PIXEL_OFFSET = 0.5


class ResidualBlock(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(x)))), as in the paper."""

    def __init__(self, channels: int, res_channels: int) -> None:
        super().__init__()
        self.conv3 = nn.Conv2d(channels, res_channels, 3, padding=1)
        self.conv1 = nn.Conv2d(res_channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv1(torch.relu(self.conv3(torch.relu(x))))


class Encoder(nn.Module):
    """Image (N, 3, H, W) in [0, 1], H and W multiples of 4 -> latents (N, d, H/4, W/4)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, cfg.channels, 8, stride=4, padding=2)
        self.blocks = nn.Sequential(*[ResidualBlock(cfg.channels, cfg.res_channels) for _ in range(cfg.res_blocks)])
        self.head = nn.Conv2d(cfg.channels, cfg.latent_dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.relu(self.blocks(self.stem(x - PIXEL_OFFSET))))


class Decoder(nn.Module):
    """Latents (N, d, h, w) -> image (N, 3, 4h, 4w), nominally in [0, 1] (no output activation)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.stem = nn.Conv2d(cfg.latent_dim, cfg.channels, 3, padding=1)
        self.blocks = nn.Sequential(*[ResidualBlock(cfg.channels, cfg.res_channels) for _ in range(cfg.decoder_blocks)])
        self.head = nn.Conv2d(cfg.channels, 3 * cfg.downsampling**2, 3, padding=1)
        self.shuffle = nn.PixelShuffle(cfg.downsampling)

    def forward(self, z: Tensor) -> Tensor:
        return self.shuffle(self.head(torch.relu(self.blocks(self.stem(z))))) + PIXEL_OFFSET

    def residual_blocks(self) -> list[ResidualBlock]:
        """The residual blocks in order (``blocks`` typed: iterating a Sequential yields plain Modules)."""
        return [cast(ResidualBlock, block) for block in self.blocks]
