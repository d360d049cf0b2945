"""Encoder-side index refinement: pick indices that the decoder turns into a closer image.

Nearest-neighbour quantization minimises the distance in latent space, not the error of the decoded
image. Refinement runs a few steps of gradient descent on the latents through the (float) decoder with
straight-through quantization, as training does for the encoder, and keeps the index grid whose
reconstruction had the lowest MSE; the first candidate is the nearest-neighbour grid itself, so the
result is never worse by that measure. It is an encoder-only search: the stream format and the decoder
are unchanged, and the decoder never needs to repeat it (any machine may refine differently).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.quantizer import nearest_indices

DEFAULT_LR = 0.01  # Adam step on the latents; larger steps overshoot (measured on Kodak crops)


def refine_indices(
    decoder: nn.Module, latents: Tensor, target: Tensor, codebook: Tensor, steps: int, lr: float = DEFAULT_LR
) -> Tensor:
    """Index grid (h*w,) int64 for ``latents`` (d, h, w) that best reconstructs ``target``.

    ``target``: (3, H, W) in [0, 1] with H <= 4h, W <= 4w (the real image inside the padded grid; padding
    pixels do not count). ``codebook``: (K~, d) float on the latents' device. ``steps`` gradient steps
    are taken; steps = 0 returns the nearest-neighbour indices.
    """
    best, best_error = None, float("inf")
    for idx, error, _ in descent(decoder, latents, target, codebook, steps, F.mse_loss, lr):
        if best is None:
            best = idx  # the nearest-neighbour grid stands unless a step decodes closer
        if float(error) < best_error:
            best, best_error = idx, float(error)
    assert best is not None
    return best


Loss = Callable[[Tensor, Tensor], Tensor]  # (decoded, target) -> scalar to minimise


class LatentAdam:
    """Adam (Kingma and Ba 2015, PyTorch's defaults and its single-tensor arithmetic) on one tensor.
    ``torch.optim.Adam`` imports ``torch._dynamo`` when it is first built: about 2 s of every fresh
    ``raqcodec encode`` process that refines."""

    def __init__(self, param: Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.param, self.lr, self.betas, self.eps = param, lr, betas, eps
        self.mean = torch.zeros_like(param)
        self.square = torch.zeros_like(param)
        self.steps = 0

    def step(self) -> None:
        grad = self.param.grad
        assert grad is not None
        beta1, beta2 = self.betas
        self.steps += 1
        with torch.no_grad():
            self.mean.lerp_(grad, 1 - beta1)
            self.square.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            step_size = self.lr / (1 - beta1**self.steps)
            denominator = (self.square.sqrt() / (1 - beta2**self.steps) ** 0.5).add_(self.eps)
            self.param.addcdiv_(self.mean, denominator, value=-step_size)
        self.param.grad = None


def descent(
    decoder: nn.Module,
    latents: Tensor,
    target: Tensor,
    codebook: Tensor,
    steps: int,
    loss: Loss,
    lr: float = DEFAULT_LR,
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """The candidates of the search, one per step 0..steps: (indices (h*w,), loss, decoded image cropped
    to ``target``, detached). Step 0 is the nearest-neighbour grid. The tiled search
    (``raqcodec.model.loaded``) runs this on each tile with a loss over the tile's pixels."""
    d, h, w = latents.shape
    height, width = target.shape[1:]
    book = codebook.to(latents.dtype)

    def indices_of(z: Tensor) -> Tensor:
        return nearest_indices(z.detach().permute(1, 2, 0).reshape(-1, d), book)

    z = latents.detach().clone().requires_grad_(steps > 0)
    optimizer = LatentAdam(z, lr) if steps > 0 else None
    with torch.enable_grad():
        for step in range(steps + 1):
            idx = indices_of(z)
            quantized = book[idx].reshape(h, w, d).permute(2, 0, 1)
            straight = z + (quantized - z).detach()
            decoded = decoder(straight[None])[0, :, :height, :width]
            error = loss(decoded, target)
            yield idx, error.detach(), decoded.detach()
            if optimizer is None or step == steps:
                break
            error.backward()
            optimizer.step()
