"""Convolutional encoder and decoder of the VQ-VAE (paper Table 1), x4 down- and upsampling.

The decoder upsamples with a sub-pixel convolution (3x3 conv to 3*16 channels, then pixel shuffle):
it contains the paper's ConvTranspose2d(C, 3, 8, stride 4, padding 2) as a special case (every output
pixel of that layer sees a 2x2 window of latents, inside the 3x3 window here) and maps one to one onto
the integer decoder in ``raqcodec.exact``.
"""

from __future__ import annotations

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

    def forward(self, x: Tensor, hidden_bias: Tensor | None = None) -> Tensor:
        hidden = self.conv3(torch.relu(x))
        if hidden_bias is not None:
            hidden = hidden + hidden_bias[:, :, None, None]
        return x + self.conv1(torch.relu(hidden))


class Encoder(nn.Module):
    """Image (N, 3, H, W) in [0, 1], H and W multiples of 4 -> latents (N, d, H/4, W/4)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, cfg.channels, 8, stride=4, padding=2)
        self.blocks = nn.Sequential(*[ResidualBlock(cfg.channels, cfg.res_channels) for _ in range(cfg.res_blocks)])
        self.head = nn.Conv2d(cfg.channels, cfg.latent_dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.relu(self.blocks(self.stem(x - PIXEL_OFFSET))))


# Channels per refinement group (raqcodec.refinement.GROUP_CHANNELS): the conditioned decoder's group count.
CONDITION_GROUP_CHANNELS = 8


class Decoder(nn.Module):
    """Latents (N, d, h, w) -> image (N, 3, 4h, 4w), nominally in [0, 1] (no output activation).

    A conditioned decoder (``cfg.decoder_conditions``) adds learned biases to the stem's output and to
    every residual block's hidden layer, chosen by the input's refinement level and refined group count
    (index 0 of each: no refinement). A quantized input is ambiguous otherwise: a codeword can be a coarse
    base-stage latent or a fine refined one, and the best image for each differs (a conditional mean
    against a sharp inverse); unconditioned, fine-tuning for refinement cost the base stage 1-1.5 dB.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.stem = nn.Conv2d(cfg.latent_dim, cfg.channels, 3, padding=1)
        self.blocks = nn.Sequential(*[ResidualBlock(cfg.channels, cfg.res_channels) for _ in range(cfg.decoder_blocks)])
        self.head = nn.Conv2d(cfg.channels, 3 * cfg.downsampling**2, 3, padding=1)
        self.shuffle = nn.PixelShuffle(cfg.downsampling)
        self.bias_widths = [cfg.channels] + [cfg.res_channels] * cfg.decoder_blocks
        self.level_bias: nn.Embedding | None = None
        self.group_bias: nn.Embedding | None = None
        if cfg.decoder_conditions is not None:
            self.level_bias = nn.Embedding(cfg.decoder_conditions + 1, sum(self.bias_widths))
            self.group_bias = nn.Embedding(cfg.latent_dim // CONDITION_GROUP_CHANNELS + 1, sum(self.bias_widths))
            nn.init.zeros_(self.level_bias.weight)  # starts as the unconditioned decoder
            nn.init.zeros_(self.group_bias.weight)

    def condition_biases(self, level: Tensor, groups: Tensor) -> list[Tensor]:
        """Per-layer biases (N, width) for condition ids (N,): level + 1 and group count, 0 = none."""
        assert self.level_bias is not None and self.group_bias is not None
        return list((self.level_bias(level) + self.group_bias(groups)).split(self.bias_widths, dim=1))

    def forward(self, z: Tensor, level: Tensor | None = None, groups: Tensor | None = None) -> Tensor:
        x = self.stem(z)
        biases: list[Tensor | None] = [None] * (1 + len(self.blocks))
        if self.level_bias is not None:
            if level is None or groups is None:
                zero = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
                level, groups = (zero if level is None else level), (zero if groups is None else groups)
            biases = list(self.condition_biases(level, groups))
            x = x + biases[0][:, :, None, None]  # type: ignore[index]
        for block, bias in zip(self.blocks, biases[1:]):
            x = block(x, bias)
        return self.shuffle(self.head(torch.relu(x))) + PIXEL_OFFSET
