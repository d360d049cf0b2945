"""Large images: peak memory and time of an 8000x6000 encode and decode, and what tiling costs in PSNR.

(a) An 8000x6000 photo mosaic (the 12 largest photos of --data, each centre-cropped to a square and
    resized with Lanczos to 2000x2000, laid out 4 x 3) is encoded at --bpp and at a fixed --codebook-size
    and decoded, each in a fresh process through the real CLI (`python -m raqcodec encode/decode`, run
    by a wrapper that reports the process's VmHWM on exit); seconds are wall time. The machine's load
    average is recorded: timings on a shared machine are slower than on an idle one.
(b) A 2048x2048 photo (the largest photo of --data, its central square resized with Lanczos to
    2048x2048) is encoded at each of --photo-sizes untiled (budget above the image) and tiled (budget
    --tile-pixels), with the default refinement; the PSNR loss of tiling must be at most 0.1 dB.

    python benchmarks/large_image.py --data ../shared/data/train
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from cliprocess import run_cli
from PIL import Image

import raqcodec
from raqcodec import codec
from raqcodec.eval.metrics import mse, psnr
from raqcodec.model import tiling

ROOT = Path(__file__).resolve().parents[1]
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png"}
MAX_TILING_LOSS_DB = 0.1


def photos_by_size(data: Path) -> list[Path]:
    """Photos under ``data``, largest first (ties by path, so the choice is reproducible)."""
    found = []
    for path in sorted(data.rglob("*")):
        if path.suffix.lower() in PHOTO_SUFFIXES:
            with Image.open(path) as im:
                found.append((-im.width * im.height, str(path), path))
    if not found:
        raise SystemExit(f"no photos under {data}")
    return [p for _, _, p in sorted(found)]


def square(path: Path, side: int) -> Image.Image:
    """The central square of a photo, resized to side x side (Lanczos)."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        s = min(im.size)
        left, top = (im.width - s) // 2, (im.height - s) // 2
        return im.crop((left, top, left + s, top + s)).resize((side, side), Image.LANCZOS)


def mosaic(photos: list[Path], cols: int, rows: int, side: int) -> Image.Image:
    out = Image.new("RGB", (cols * side, rows * side))
    for i, path in enumerate(photos[: cols * rows]):
        out.paste(square(path, side), ((i % cols) * side, (i // cols) * side))
    return out


def run_measured(args: list[str]) -> dict:
    """Run the CLI in a fresh process: wall seconds and that process's peak RSS (``cliprocess``)."""
    load_before = os.getloadavg()[0]
    run = run_cli(args)
    return {
        "seconds": run.seconds,
        "peak_rss_mib": run.peak_rss_mib,
        "output": run.stdout.strip(),
        "load_average_1min": [load_before, os.getloadavg()[0]],
    }


def psnr_in_bands(a: np.ndarray, b: np.ndarray, rows: int = 256) -> float:
    """``psnr(mse(a, b))``, a band of rows at a time (float64 copies of two 48 MP images take 2.3 GB)."""
    squared = 0
    for top in range(0, a.shape[0], rows):
        diff = a[top : top + rows].astype(np.int32) - b[top : top + rows]
        squared += int(np.sum(diff * diff, dtype=np.int64))
    return psnr(squared / a.size)


def large(data: Path, work: Path, bpp: float, size: int, width: int, height: int) -> dict:
    side = 2000
    cols, rows = width // side, height // side
    photos = photos_by_size(data)[: cols * rows]
    source = work / "large.png"
    mosaic(photos, cols, rows, side).save(source, compress_level=1)
    reference = np.asarray(Image.open(source).convert("RGB"))
    results: dict = {
        "width": width,
        "height": height,
        "photos": [str(p) for p in photos],
        "how": f"{cols}x{rows} mosaic of the largest photos, central squares resized to {side}x{side}",
    }
    for name, setting in (("bpp", ["--bpp", str(bpp)]), ("codebook_size", ["-k", str(size)])):
        raq, png = work / f"large-{name}.raq", work / f"large-{name}.png"
        enc = run_measured(["encode", str(source), *setting, "-o", str(raq), "--force", "--json"])
        dec = run_measured(["decode", str(raq), "-o", str(png), "--force"])
        info = json.loads(enc.pop("output").splitlines()[-1])
        dec.pop("output")
        decoded = np.asarray(Image.open(png).convert("RGB"))
        results[name] = {
            "setting": setting,
            "bytes": raq.stat().st_size,
            "bpp": raq.stat().st_size * 8 / (width * height),
            "codebook_size": info.get("codebook_size"),
            "psnr_db": psnr_in_bands(decoded, reference),
            "encode": enc,
            "decode": dec,
        }
        print(
            f"{width}x{height} {' '.join(setting)}: K~={info.get('codebook_size')} "
            f"{results[name]['bpp']:.3f} bpp {results[name]['psnr_db']:.2f} dB; encode {enc['seconds']:.0f} s "
            f"{enc['peak_rss_mib']:.0f} MiB, decode {dec['seconds']:.0f} s {dec['peak_rss_mib']:.0f} MiB",
            flush=True,
        )
        del decoded
    return results


def tiled_vs_untiled(data: Path, sizes: list[int], tile_pixels: int) -> dict:
    path = photos_by_size(data)[0]
    side = 2048
    image = np.asarray(square(path, side))
    whole = 1 << 23  # above 2048 x 2048: one piece
    model = raqcodec.load_model(None)
    f = model.config.downsampling
    tiles = tiling.plan_tiles((side // f, side // f), tile_pixels // f**2, model.decoder_halo)
    results: dict = {
        "photo": str(path),
        "how": f"central square resized to {side}x{side} (Lanczos)",
        "tile_pixels": tile_pixels,
        "decoder_tiles": len(tiles),
        "sizes": {},
    }
    for size in sizes:
        row: dict = {}
        grids = {}
        for name, budget in (("untiled", whole), ("tiled", tile_pixels)):
            started = time.perf_counter()
            data_ = codec.encode(image, codebook_size=size, model=model, device="cpu", max_tile_pixels=budget)
            encode_s = time.perf_counter() - started
            started = time.perf_counter()
            decoded = np.asarray(codec.decode(data_, model=model, device="cpu", max_tile_pixels=budget))
            decode_s = time.perf_counter() - started
            grids[name] = codec.inspect(data_, model=model)["indices"]
            row[name] = {
                "bytes": len(data_),
                "bpp": len(data_) * 8 / side**2,
                "psnr_db": psnr(mse(decoded, image)),
                "encode_seconds": encode_s,
                "decode_seconds": decode_s,
            }
        row["loss_db"] = row["untiled"]["psnr_db"] - row["tiled"]["psnr_db"]
        row["indices_differing"] = float(np.mean(grids["untiled"] != grids["tiled"]))
        row["ok"] = row["loss_db"] <= MAX_TILING_LOSS_DB
        results["sizes"][str(size)] = row
        print(
            f"2048x2048 K~={size}: untiled {row['untiled']['psnr_db']:.3f} dB, tiled ({tile_pixels} px) "
            f"{row['tiled']['psnr_db']:.3f} dB, loss {row['loss_db']:+.4f} dB, "
            f"{row['indices_differing']:.2%} indices differ",
            flush=True,
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "train")
    parser.add_argument("--bpp", type=float, default=0.2)
    parser.add_argument("--codebook-size", type=int, default=256, help="Fixed K~ for the large image.")
    parser.add_argument("--size", default="8000x6000", help="WxH of the large image (multiples of 2000).")
    parser.add_argument("--photo-sizes", default="256,1024", help="K~ values for the tiled/untiled comparison.")
    parser.add_argument("--tile-pixels", type=int, default=1 << 19, help="Forced budget for the tiled run.")
    parser.add_argument(
        "--parts",
        default="a,b",
        help="a: large image, b: tiled vs untiled; the other part of an existing --output is kept.",
    )
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "benchmarks" / "results" / "large_image.json")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    parts = set(args.parts.split(","))
    previous = json.loads(args.output.read_text()) if args.output.exists() else {}
    result: dict = {key: previous[key] for key in ("tiled_vs_untiled", "large") if key in previous}
    result |= {
        "default_tile_pixels": tiling.DEFAULT_TILE_PIXELS,
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "raqcodec": raqcodec.__version__,
    }
    if "b" in parts:
        result["tiled_vs_untiled"] = tiled_vs_untiled(
            args.data, [int(s) for s in args.photo_sizes.split(",")], args.tile_pixels
        )
    if "a" in parts:
        with tempfile.TemporaryDirectory() as tmp:
            result["large"] = large(args.data, Path(tmp), args.bpp, args.codebook_size, width, height)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {args.output}")


if __name__ == "__main__":
    main()
