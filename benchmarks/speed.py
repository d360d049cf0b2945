"""Encode/decode speed and peak memory for one image (default: a 768x512 photo).

Times are medians of repeated runs in one process, model already loaded (what a batch job sees), plus
the wall time of whole CLI invocations (process start and model load included). Peak memory is the
maximum RSS of a CLI process that encodes and of one that decodes. Results go to a JSON file.

    python benchmarks/speed.py --image ../shared/data/kodak/kodim23.png --repeats 7
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from cliprocess import run_cli

import raqcodec


def default_image() -> Path:
    kodak = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak" / "kodim23.png"
    if kodak.exists():
        return kodak
    import matplotlib.cbook
    from PIL import Image

    src = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    out = Path(tempfile.mkdtemp()) / "sample-768x512.png"
    src.resize((768, 512)).save(out)
    return out


def cli_peak_rss(args: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one CLI process."""
    run = run_cli(args)
    return run.seconds, run.peak_rss_mib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, default=None)
    parser.add_argument("--bpp", type=float, default=0.3)
    parser.add_argument("--model", default=None)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--refine", type=int, default=None, help="Index refinement steps (default: the codec's).")
    parser.add_argument("-o", "--output", type=Path, default=Path(__file__).parent / "results" / "speed.json")
    args = parser.parse_args()
    image = args.image or default_image()
    from raqcodec.options import DEFAULT_REFINE_STEPS

    refine = DEFAULT_REFINE_STEPS if args.refine is None else args.refine

    started = time.perf_counter()
    model = raqcodec.load_model(args.model)
    load_seconds = time.perf_counter() - started
    raqcodec.encode(image, bpp=args.bpp, model=model, device=args.device, refine=refine)  # warm-up (allocator, kernels)
    encode_times, decode_times = [], []
    # the order-0 coder (the previous release's) at the same budget, timed in the same process: the baseline
    # the context model's decode cost is quoted against
    order0_encode_times, order0_decode_times = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        data = raqcodec.encode(image, bpp=args.bpp, model=model, device=args.device, refine=refine)
        encode_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        decoded = raqcodec.decode(data, model=model, device=args.device)
        decode_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        order0 = raqcodec.encode(image, bpp=args.bpp, model=model, device=args.device, refine=refine, entropy="order0")
        order0_encode_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        raqcodec.decode(order0, model=model, device=args.device)
        order0_decode_times.append(time.perf_counter() - t)
    header = raqcodec.io.bitstream.read_header(data)

    with tempfile.TemporaryDirectory() as tmp:
        raq, png = Path(tmp) / "x.raq", Path(tmp) / "x.png"
        model_args = ["--model", args.model] if args.model else []
        cli_encode = [
            cli_peak_rss(
                [
                    "encode",
                    str(image),
                    "--bpp",
                    str(args.bpp),
                    "-o",
                    str(raq),
                    "--force",
                    "--device",
                    args.device,
                    "--refine",
                    str(refine),
                    *model_args,
                ]
            )
            for _ in range(3)
        ]
        cli_decode = [
            cli_peak_rss(["decode", str(raq), "-o", str(png), "--force", "--device", args.device]) for _ in range(3)
        ]

    result = {
        "image": str(image),
        "width": decoded.width,
        "height": decoded.height,
        "bpp_budget": args.bpp,
        "bytes": len(data),
        "bpp": len(data) * 8 / (decoded.width * decoded.height),
        "model": model.name,
        "device": args.device,
        "repeats": args.repeats,
        "refine_steps": refine,
        "encode_seconds_median": statistics.median(encode_times),
        "decode_seconds_median": statistics.median(decode_times),
        "encode_seconds_all": encode_times,
        "decode_seconds_all": decode_times,
        "coder": header.coder,
        "codebook_size": header.codebook_size,
        "order0": {
            "codebook_size": raqcodec.io.bitstream.read_header(order0).codebook_size,
            "bytes": len(order0),
            "encode_seconds_median": statistics.median(order0_encode_times),
            "decode_seconds_median": statistics.median(order0_decode_times),
        },
        "decode_seconds_over_order0": statistics.median(decode_times) - statistics.median(order0_decode_times),
        "model_load_seconds": load_seconds,
        "cli_encode_wall_seconds_median": statistics.median(w for w, _ in cli_encode),
        "cli_decode_wall_seconds_median": statistics.median(w for w, _ in cli_decode),
        "cli_encode_peak_rss_mib": max(m for _, m in cli_encode),
        "cli_decode_peak_rss_mib": max(m for _, m in cli_decode),
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "raqcodec": raqcodec.__version__,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{result['width']}x{result['height']} at {result['bpp']:.3f} bpp: "
        f"encode {result['encode_seconds_median']:.3f} s, "
        f"decode {result['decode_seconds_median']:.3f} s (median of {args.repeats}); CLI wall encode "
        f"{result['cli_encode_wall_seconds_median']:.2f} s, decode {result['cli_decode_wall_seconds_median']:.2f} s; "
        f"peak RSS encode {result['cli_encode_peak_rss_mib']:.0f} MiB, "
        f"decode {result['cli_decode_peak_rss_mib']:.0f} MiB"
        f"; coder {result['coder']} K~={result['codebook_size']}, decode "
        f"{result['decode_seconds_over_order0']:+.3f} s against the order-0 coder at the same budget -> {args.output}"
    )


if __name__ == "__main__":
    main()
