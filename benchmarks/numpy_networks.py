"""What the encoder's networks would cost without torch (issue 21's start-up bar).

A fresh `raqcodec encode` pays `import torch` (1.1-1.6 s on the 2-core development VM) before any work.
The one way to skip it is an encoder that runs its networks elsewhere; numpy is the runtime every
install already has. This times the model's analysis and float decoder (the networks the default effort
runs: one analysis, a preview per candidate) as numpy float32 convolutions (im2col + matmul, numpy's
BLAS) against torch float32 and the encoder's own fast networks (bfloat16 where the CPU has it), on one
image, medians of ``--repeats``. The numpy forwards are checked against torch's float32 output first.

    python benchmarks/numpy_networks.py --image ../shared/data/kodak/kodim23.png
"""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from effort_speed import median_seconds
from numpy.lib.stride_tricks import sliding_window_view
from torch import nn

import raqcodec
from raqcodec.io.images import load_image
from raqcodec.nn.autoencoder import PIXEL_OFFSET


def conv2d(x: np.ndarray, conv: nn.Conv2d) -> np.ndarray:
    """(H, W, C) channels-last float32 through ``conv`` (square kernel, zero padding) as im2col + matmul."""
    weight = conv.weight.detach().numpy()  # (out, in, k, k)
    out_channels, in_channels, k, _ = weight.shape
    stride, pad = conv.stride[0], conv.padding[0]
    if k == 1:
        return x @ weight.reshape(out_channels, in_channels).T + conv.bias.detach().numpy()
    padded = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    windows = sliding_window_view(padded, (k, k), axis=(0, 1))[::stride, ::stride]  # (h, w, C, k, k)
    h, w = windows.shape[:2]
    columns = windows.reshape(h * w, in_channels * k * k)
    product = columns @ weight.reshape(out_channels, -1).T
    return (product + conv.bias.detach().numpy()).reshape(h, w, out_channels)


def residual_blocks(x: np.ndarray, blocks: nn.Sequential) -> np.ndarray:
    for block in blocks:
        x = x + conv2d(np.maximum(conv2d(np.maximum(x, 0), block.conv3), 0), block.conv1)
    return x


def numpy_analysis(encoder: nn.Module, image: np.ndarray) -> np.ndarray:
    x = conv2d(image.astype(np.float32) / 255 - PIXEL_OFFSET, encoder.stem)
    return conv2d(np.maximum(residual_blocks(x, encoder.blocks), 0), encoder.head)


def numpy_synthesis(decoder: nn.Module, latents: np.ndarray) -> np.ndarray:
    x = conv2d(np.maximum(residual_blocks(conv2d(latents, decoder.stem), decoder.blocks), 0), decoder.head)
    h, w, _ = x.shape
    f = decoder.shuffle.upscale_factor
    # pixel shuffle: channel c * f^2 + i * f + j goes to pixel (f y + i, f x + j) of colour c
    return x.reshape(h, w, 3, f, f).transpose(0, 3, 1, 4, 2).reshape(h * f, w * f, 3) + PIXEL_OFFSET


def warm_median_seconds(work: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``work`` after one untimed call (``effort_speed.median_seconds``)."""
    work()
    return median_seconds(work, repeats)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--model", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("-o", "--output", type=Path, default=Path(__file__).parent / "results" / "numpy_networks.json")
    args = parser.parse_args()
    model = raqcodec.load_model(args.model)
    rgb = load_image(args.image).rgb
    rgb = rgb[: rgb.shape[0] // 4 * 4, : rgb.shape[1] // 4 * 4]
    encoder, decoder = model.encoder.eval(), model.float_decoder.eval()
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255

    with torch.no_grad():
        latents = encoder(x)
        pixels = decoder(latents)
    latents_hwc = latents[0].permute(1, 2, 0).numpy().copy()
    # the numpy forwards must be the same networks before their times mean anything
    analysis_error = float(np.abs(numpy_analysis(encoder, rgb) - latents_hwc).max())
    synthesis_error = float(np.abs(numpy_synthesis(decoder, latents_hwc) - pixels[0].permute(1, 2, 0).numpy()).max())
    if max(analysis_error, synthesis_error) > 1e-3:
        raise SystemExit(f"numpy forwards disagree with torch: {analysis_error}, {synthesis_error}")

    fast_encoder, fast_decoder = model._fast("encoder"), model._fast("decoder")
    with torch.no_grad():
        seconds = {
            "analysis": {
                "numpy_float32": warm_median_seconds(lambda: numpy_analysis(encoder, rgb), args.repeats),
                "torch_float32": warm_median_seconds(lambda: encoder(x), args.repeats),
                "torch_fast": warm_median_seconds(lambda: fast_encoder(x), args.repeats),
            },
            "synthesis": {
                "numpy_float32": warm_median_seconds(lambda: numpy_synthesis(decoder, latents_hwc), args.repeats),
                "torch_float32": warm_median_seconds(lambda: decoder(latents), args.repeats),
                "torch_fast": warm_median_seconds(lambda: fast_decoder(latents), args.repeats),
            },
        }
    result = {
        "image": str(args.image),
        "width": rgb.shape[1],
        "height": rgb.shape[0],
        "model": model.name,
        "repeats": args.repeats,
        "fast_dtype": str(fast_decoder.dtype),
        "max_abs_error_vs_torch_float32": {"analysis": analysis_error, "synthesis": synthesis_error},
        "seconds_median": seconds,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(seconds, indent=1))


if __name__ == "__main__":
    main()
