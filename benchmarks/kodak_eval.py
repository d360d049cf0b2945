"""Kodak figures of a model through the real CLI: --bpp targets and --codebook-size points.

For each setting, all images are encoded with one `raqcodec encode --json` call and decoded with one
`raqcodec decode` call; bpp comes from the real file sizes, PSNR (RGB, 8-bit) from the decoded PNGs.
Writes benchmarks/results/kodak_eval.json and, with --update-card, the "kodak" figures of the model card.

    python benchmarks/kodak_eval.py --data ../shared/data/kodak --update-card
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import raqcodec
from raqcodec.eval.metrics import mse, psnr
from raqcodec.model.files import write_card


def run_cli(args: list[str]) -> list[dict]:
    proc = subprocess.run([sys.executable, "-m", "raqcodec", *args, "--json"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"raqcodec {' '.join(args[:3])}... failed:\n{proc.stderr}")
    return [json.loads(line) for line in proc.stdout.splitlines()]


def evaluate(images: list[Path], setting: list[str], model: str | None, adapter: str, jobs: int = 1) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        model_args = ["--model", model] if model else []
        started = time.perf_counter()
        encoded = run_cli(
            [
                "encode",
                *map(str, images),
                "-o",
                str(out / "raq"),
                *setting,
                *model_args,
                "--adapter",
                adapter,
                "--device",
                "cpu",
                "-j",
                str(jobs),
            ]
        )
        decoded = run_cli(["decode", *(r["output"] for r in encoded), "-o", str(out / "png"), "--device", "cpu"])
        wall = time.perf_counter() - started
        per_image = []
        for enc, dec in zip(encoded, decoded):
            ref = np.asarray(Image.open(enc["input"]).convert("RGB"))
            rec = np.asarray(Image.open(dec["output"]).convert("RGB"))
            per_image.append(
                {
                    "image": Path(enc["input"]).name,
                    "bpp": enc["bpp"],
                    "psnr": psnr(mse(ref, rec)),
                    "codebook_size": enc["codebook_size"],
                    "encode_s": enc["seconds"],
                    "decode_s": dec["seconds"],
                }
            )
    return {
        "setting": " ".join(setting),
        "adapter": adapter,
        "mean_bpp": statistics.fmean(r["bpp"] for r in per_image),
        "min_bpp": min(r["bpp"] for r in per_image),
        "max_bpp": max(r["bpp"] for r in per_image),
        "mean_psnr": statistics.fmean(r["psnr"] for r in per_image),
        "wall_seconds": wall,
        "images": per_image,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="Folder of Kodak PNGs (kodim01..24).")
    parser.add_argument("--model", default=None)
    parser.add_argument("--bpp", type=float, nargs="*", default=[0.1, 0.2, 0.3, 0.6])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="*",
        default=None,
        help="Codebook sizes (default: the model's k_min and k_max, and 16, 64, 256, 1024).",
    )
    parser.add_argument("--adapters", nargs="*", default=["seq2seq"])
    parser.add_argument("--update-card", action="store_true", help="Write the figures into the model card.")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="Encoder processes (raqcodec encode -j).")
    parser.add_argument("-o", "--output", type=Path, default=Path(__file__).parent / "results" / "kodak_eval.json")
    args = parser.parse_args()
    images = sorted(args.data.glob("*.png"))
    if not images:
        raise SystemExit(f"no PNG images in {args.data}")
    model = raqcodec.load_model(args.model)
    lo, hi = model.size_range
    if args.sizes is None:
        args.sizes = sorted({lo, hi, *(k for k in (16, 64, 256, 1024) if lo <= k <= hi)})

    rows = []
    for adapter in args.adapters:
        for bpp in args.bpp:
            rows.append(evaluate(images, ["--bpp", str(bpp)], args.model, adapter, args.jobs))
        for size in args.sizes:
            rows.append(evaluate(images, ["--codebook-size", str(size)], args.model, adapter, args.jobs))
    for r in rows:
        print(
            f"{r['adapter']:8s} {r['setting']:22s} bpp mean {r['mean_bpp']:.4f} (min {r['min_bpp']:.4f}, "
            f"max {r['max_bpp']:.4f})  PSNR {r['mean_psnr']:.2f} dB"
        )
    result = {
        "model": model.name,
        "fingerprint": model.fingerprint,
        "data": str(args.data),
        "images": len(images),
        "rows": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")

    if args.update_card and model.path is not None:
        card_path = model.path.with_suffix(".json")
        card = json.loads(card_path.read_text()) if card_path.exists() else {}
        card["kodak"] = {
            "images": len(images),
            "points": [
                {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k != "images"} for r in rows
            ],
            "script": "benchmarks/kodak_eval.py",
        }
        sized = [r for r in rows if r["setting"].startswith("--codebook-size") and r["adapter"] == "seq2seq"]
        lo, hi = model.size_range
        ends = {r["setting"]: r["mean_bpp"] for r in sized}
        if model.residual is not None and f"--codebook-size {lo}" in ends:
            # the residual stage spends any budget above the smallest codebook's file, up to lossless
            card["bpp_range_kodak"] = [round(ends[f"--codebook-size {lo}"], 4), None]
        elif f"--codebook-size {lo}" in ends and f"--codebook-size {hi}" in ends:
            card["bpp_range_kodak"] = [round(ends[f"--codebook-size {lo}"], 4), round(ends[f"--codebook-size {hi}"], 4)]
        write_card(card_path, card)
        print(f"updated {card_path}")


if __name__ == "__main__":
    main()
