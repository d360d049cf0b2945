"""Encode and decode time of every effort level against a hyperprior-shaped reference transform (issue 21).

In one process, with the model loaded: each ``--effort`` level encodes the image at ``--bpp`` and its file
is decoded; the reference is the analysis and the synthesis transform of a CompressAI-shaped hyperprior
(N=128, M=192: four 5x5 stride-2 convolutions down, four transposed up, random weights), forward on the
same image. ``--repeats`` rounds each time the reference and every level once, and medians over the
rounds are reported. Ratios to it
are what the issue's bars are stated in. JPEG, WebP and AVIF (Pillow) encode the same image in the same
run, at the quality whose file is closest to the budget from below. A fresh CLI process encoding at the
default level, once per round, gives the start-up cost, and a fresh process that only imports torch
(and ends without teardown, as the CLI does) gives the part of it no torch-based encoder can avoid.
Results go to a JSON file.

    python benchmarks/effort_speed.py --image ../shared/data/kodak/kodim23.png --bpp 0.3 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from cliprocess import run_cli
from torch import nn

import raqcodec
from raqcodec.eval import baselines
from raqcodec.eval.metrics import mse, psnr
from raqcodec.io.images import load_image
from raqcodec.ratecontrol.search import DEFAULT_EFFORT, EFFORTS

T = TypeVar("T")


def hyperprior_transforms(n: int = 128, m: int = 192) -> tuple[nn.Module, nn.Module]:
    """Analysis and synthesis of Balle et al. 2018's mean-scale hyperprior, CompressAI's shapes (ReLU in
    place of GDN, which costs about as much as a 1x1 convolution), random weights."""
    down = [
        nn.Conv2d(3, n, 5, 2, 2),
        nn.ReLU(),
        nn.Conv2d(n, n, 5, 2, 2),
        nn.ReLU(),
        nn.Conv2d(n, n, 5, 2, 2),
        nn.ReLU(),
        nn.Conv2d(n, m, 5, 2, 2),
    ]
    up = [
        nn.ConvTranspose2d(m, n, 5, 2, 2, 1),
        nn.ReLU(),
        nn.ConvTranspose2d(n, n, 5, 2, 2, 1),
        nn.ReLU(),
        nn.ConvTranspose2d(n, n, 5, 2, 2, 1),
        nn.ReLU(),
        nn.ConvTranspose2d(n, 3, 5, 2, 2, 1),
    ]
    return nn.Sequential(*down).eval(), nn.Sequential(*up).eval()


def timed(work: Callable[[], T]) -> tuple[T, float]:
    """``work()``'s result and its seconds."""
    started = time.perf_counter()
    out = work()
    return out, time.perf_counter() - started


def import_torch_seconds() -> float:
    """Wall time of a fresh interpreter that imports torch and exits as raqcodec's CLI does (no teardown)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import os, torch; os._exit(0)"], check=True)
    return time.perf_counter() - started


def median_seconds(work: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    times = [timed(work)[1] for _ in range(repeats)]
    return statistics.median(times), times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--bpp", type=float, default=0.3)
    parser.add_argument("--model", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("-o", "--output", type=Path, default=Path(__file__).parent / "results" / "effort_speed.json")
    args = parser.parse_args()
    source = load_image(args.image).rgb
    pixels = source.shape[0] * source.shape[1]
    model = raqcodec.load_model(args.model)

    analysis, synthesis = hyperprior_transforms()
    padded = np.pad(source, ((0, -source.shape[0] % 16), (0, -source.shape[1] % 16), (0, 0)), mode="edge")
    x = torch.from_numpy(padded).permute(2, 0, 1)[None].float() / 255

    @torch.no_grad()
    def reference() -> None:
        synthesis(analysis(x))

    def encode(image: np.ndarray, effort: int) -> bytes:
        return raqcodec.encode(image, bpp=args.bpp, model=model, effort=effort)

    def decode(stream: bytes) -> np.ndarray:
        return np.asarray(raqcodec.decode(stream, model=model).convert("RGB"))

    # Rounds: each round times the reference, then every level's encode and decode once, so that a
    # machine whose speed drifts during the run (a shared VM: 0.40-0.65 s for the reference across runs
    # here) slows the reference and the levels alike; ratios are of the medians over the rounds.
    reference()  # warm-up
    efforts = range(len(EFFORTS))
    streams = {e: encode(source, e) for e in efforts}  # warm-up
    reference_all: list[float] = []
    encode_all: dict[int, list[float]] = {e: [] for e in efforts}
    decode_all: dict[int, list[float]] = {e: [] for e in efforts}
    cli_all: list[float] = []  # a fresh `raqcodec encode` process at the default level, once per round
    import_all: list[float] = []  # a fresh process that only imports torch, once per round
    decoded: dict[int, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_args = ["--model", args.model] if args.model else []
        command = ["encode", str(args.image), "--bpp", str(args.bpp), "-o", str(Path(tmp) / "x.raq"), "--force"]
        run_cli([*command, *model_args])  # warm-up (the page cache)
        for _ in range(args.repeats):
            reference_all.append(timed(reference)[1])
            for effort in efforts:
                streams[effort], seconds = timed(lambda e=effort: encode(source, e))
                encode_all[effort].append(seconds)
                decoded[effort], seconds = timed(lambda e=effort: decode(streams[e]))
                decode_all[effort].append(seconds)
            cli_all.append(run_cli([*command, *model_args]).seconds)
            import_all.append(import_torch_seconds())
    reference_s = statistics.median(reference_all)

    levels = []
    for effort in efforts:
        data = streams[effort]
        encode_s, decode_s = statistics.median(encode_all[effort]), statistics.median(decode_all[effort])
        levels.append(
            {
                "effort": effort,
                "bytes": len(data),
                "bpp": len(data) * 8 / pixels,
                "psnr": psnr(mse(decoded[effort], source)),
                "codebook_size": raqcodec.io.bitstream.read_header(data).codebook_size,
                "encode_seconds_median": encode_s,
                "decode_seconds_median": decode_s,
                "encode_over_reference": encode_s / reference_s,
                "decode_over_reference": decode_s / reference_s,
                # the same ratio round by round (each round's encode over its reference)
                "encode_over_reference_per_round": [
                    e / r for e, r in zip(encode_all[effort], reference_all, strict=True)
                ],
                "encode_seconds_all": encode_all[effort],
                "decode_seconds_all": decode_all[effort],
            }
        )
        print(json.dumps({k: v for k, v in levels[-1].items() if not k.endswith(("_all", "_round"))}), flush=True)

    others = {}
    for name in ("jpeg", "webp", "avif"):
        spec = baselines.get(name)
        lo, hi = spec.qualities
        fitting = [q for q in range(lo, hi + 1) if len(baselines.encode(name, source, q)[0]) * 8 / pixels <= args.bpp]
        quality = max(fitting) if fitting else lo
        encoded, _ = baselines.encode(name, source, quality)
        seconds, _ = median_seconds(lambda n=name, q=quality: baselines.encode(n, source, q), args.repeats)
        others[name] = {
            "quality": quality,
            "bpp": len(encoded) * 8 / pixels,
            "psnr": psnr(mse(baselines.decode(encoded)[0], source)),
            "encode_seconds_median": seconds,
        }

    default = levels[DEFAULT_EFFORT]
    result = {
        "image": str(args.image),
        "width": source.shape[1],
        "height": source.shape[0],
        "bpp_budget": args.bpp,
        "model": model.name,
        "repeats": args.repeats,
        "reference": {
            "what": "hyperprior-shaped analysis + synthesis (N=128, M=192, 5x5 stride 2, random weights), forward",
            "seconds_median": reference_s,
            "seconds_all": reference_all,
        },
        "default_effort": DEFAULT_EFFORT,
        "levels": levels,
        "baselines": others,
        "cli_encode_wall_seconds_median": statistics.median(cli_all),
        "cli_over_in_process_default": statistics.median(cli_all) / default["encode_seconds_median"],
        "cli_over_in_process_default_per_round": [
            c / e for c, e in zip(cli_all, encode_all[DEFAULT_EFFORT], strict=True)
        ],
        "cli_encode_wall_seconds_all": cli_all,
        # A fresh CLI encode takes at least import + one encode, so "CLI <= 2x the in-process encode" needs
        # the encode to take longer than the import, and "encode <= 2x the reference" then needs the
        # import under 2x the reference: where it is not, no torch-based encoder meets both.
        "import_torch_wall_seconds_median": statistics.median(import_all),
        "import_torch_over_reference_per_round": [i / r for i, r in zip(import_all, reference_all, strict=True)],
        "import_torch_wall_seconds_all": import_all,
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "raqcodec": raqcodec.__version__,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"reference {reference_s:.3f} s; default effort {DEFAULT_EFFORT}: encode "
        f"{default['encode_over_reference']:.1f}x, decode {default['decode_over_reference']:.2f}x; CLI "
        f"{result['cli_over_in_process_default']:.2f}x the in-process encode; import torch alone "
        f"{result['import_torch_wall_seconds_median'] / reference_s:.2f}x the reference -> {args.output}"
    )


if __name__ == "__main__":
    main()
