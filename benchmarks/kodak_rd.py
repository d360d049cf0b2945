"""Rate-distortion curve of raqcodec against JPEG on Kodak, with the BD-rate between them.

raqcodec goes through the real CLI (one `raqcodec encode --json` and one `raqcodec decode` call per --bpp
target, via benchmarks/kodak_eval.py): bpp from the real file sizes, RGB PSNR from the decoded PNGs.
JPEG is Pillow's (optimize=True, default 4:2:0 subsampling), encoded in memory. A point is the mean bpp
and mean per-image PSNR over the images; BD-rate and BD-PSNR (raqcodec vs the JPEG anchor, PCHIP, see
raqcodec/bdrate.py) are computed on these mean points, over the range where the two curves overlap.
A --bpp target that some image cannot reach is recorded as failed (with the CLI's message) and skipped.

    python benchmarks/kodak_rd.py --data ../shared/data/kodak
    python benchmarks/kodak_rd.py --data ../shared/data/kodak --images 3 --out /tmp/rd3.json   # quick check

``--previous RESULTS.json`` adds the BD-rate against an earlier run of this script (for example
benchmarks/results/kodak_rd_format1.json, the last release with the order-0 coder), and the
BD-rate against JPEG is also given over the low-rate targets alone (``--low-rate-max``, default 0.3 bpp).
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import platform
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import PIL
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))  # kodak_eval is a script beside this one

import raqcodec  # noqa: E402
from kodak_eval import evaluate  # noqa: E402
from raqcodec import bdrate, registry  # noqa: E402
from raqcodec.fileio import atomic_path  # noqa: E402
from raqcodec.imageio import psnr  # noqa: E402

DEFAULT_BPP = [0.1, 0.15, 0.2, 0.3, 0.45, 0.6]
# Pillow's JPEG on Kodak: q=3 is about 0.1 bpp / 21.6 dB, q=75 about 1.4 bpp / 34 dB (q=1 and 2 give the
# same file as 3 or less, the tables saturating), so these points span every bpp and PSNR of ours.
DEFAULT_JPEG_QUALITIES = [3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 75, 90]


# -- JPEG ------------------------------------------------------------------------------------------------

def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def jpeg_image(rgb: np.ndarray, quality: int) -> dict[str, Any]:
    """One image through JPEG and back: size and RGB PSNR of the 8-bit decode."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality, optimize=True)
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as img:
        decoded = np.asarray(img.convert("RGB"))
    height, width = rgb.shape[:2]
    return {"bytes": len(data), "bpp": len(data) * 8 / (width * height), "psnr": psnr(rgb, decoded)}


def jpeg_sweep(images: list[Path], qualities: list[int]) -> list[dict[str, Any]]:
    """One mean point per JPEG quality, with the per-image rows; each image is read once."""
    pixels = {p: load_rgb(p) for p in images}
    points = []
    for quality in qualities:
        rows = [{"image": p.name, **jpeg_image(rgb, quality)} for p, rgb in pixels.items()]
        points.append({"quality": quality, **_means(rows), "images": rows})
    return points


# -- raqcodec --------------------------------------------------------------------------------------------

def raqcodec_point(images: list[Path], target_bpp: float, model: str | None, adapter: str) -> dict[str, Any]:
    """One --bpp target through the CLI; a target some image cannot reach becomes a failed point."""
    try:
        row = evaluate(images, ["--bpp", str(target_bpp)], model, adapter)
    except SystemExit as exc:  # run_cli's way of saying the CLI exited non-zero; its stderr is in the message
        return {"target_bpp": target_bpp, "ok": False, "error": _cli_error(str(exc.code))}
    return {"target_bpp": target_bpp, "ok": True, **row}


def _cli_error(message: str) -> str:
    """The CLI's own one-line errors (one per failed image), without run_cli's wrapper line."""
    lines = [ln.removeprefix("raqcodec: error: ") for ln in message.splitlines() if ln.startswith("raqcodec: error:")]
    return "; ".join(lines) if lines else message.strip()


def _means(rows: list[dict[str, Any]]) -> dict[str, float]:
    return {"mean_bpp": statistics.fmean(r["bpp"] for r in rows),
            "mean_psnr": statistics.fmean(r["psnr"] for r in rows)}


# -- BD figures ------------------------------------------------------------------------------------------

def bd_against(anchor: list[dict[str, Any]], test: list[dict[str, Any]], anchor_name: str = "jpeg") -> dict[str, Any]:
    """BD-rate and BD-PSNR of ``test`` against ``anchor`` on their mean points, or why there are none."""
    a = [(p["mean_bpp"], p["mean_psnr"]) for p in anchor if p.get("ok", True)]
    t = [(p["mean_bpp"], p["mean_psnr"]) for p in test if p.get("ok", True)]
    out: dict[str, Any] = {"anchor": anchor_name, "test": "raqcodec", "test_points_used": len(t),
                           "method": "Bjontegaard, log-rate vs PSNR, PCHIP, exact integral (raqcodec.bdrate)",
                           "note": "computed on the mean points; BD-rate is averaged over the overlapping PSNR "
                                   "range only, BD-PSNR over the overlapping log-bpp range only"}
    if a and t:  # the anchor should reach every test point, or the BD figures cover only part of our curve
        out["anchor_spans_test"] = {
            "psnr": min(q for _, q in a) <= min(q for _, q in t) and max(q for _, q in a) >= max(q for _, q in t),
            "bpp": min(r for r, _ in a) <= min(r for r, _ in t) and max(r for r, _ in a) >= max(r for r, _ in t)}
    try:
        out["psnr_overlap_db"] = list(bdrate.overlap(a, t, "quality"))
        out["bd_rate_percent"] = bdrate.bd_rate(a, t)
        out["bpp_overlap"] = list(bdrate.overlap(a, t, "rate"))
        out["bd_psnr_db"] = bdrate.bd_psnr(a, t)
    except ValueError as exc:
        out["error"] = str(exc)
    return out


# -- report ----------------------------------------------------------------------------------------------

def versions() -> dict[str, str]:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "pillow": PIL.__version__,
            "numpy": np.__version__, "raqcodec": raqcodec.__version__}


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Kodak rate-distortion ({result['images']} images, model {result['model']['name']})")
    for col, justify in [("codec", "left"), ("setting", "left"), ("mean bpp", "right"), ("mean PSNR dB", "right")]:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for p in result["raqcodec"]:
        if p["ok"]:
            table.add_row("raqcodec", f"--bpp {p['target_bpp']}", f"{p['mean_bpp']:.4f}", f"{p['mean_psnr']:.2f}")
        else:
            table.add_row("raqcodec", f"--bpp {p['target_bpp']}", "[red]failed[/red]", "")
    for p in result["jpeg"]:
        table.add_row("jpeg", f"q={p['quality']}", f"{p['mean_bpp']:.4f}", f"{p['mean_psnr']:.2f}")
    console = Console()
    console.print(table)
    for p in result["raqcodec"]:
        if not p["ok"]:
            console.print(f"[red]raqcodec --bpp {p['target_bpp']} failed:[/red] {p['error']}", markup=True,
                          highlight=False)
    bd = result["bd"]
    spans = bd.get("anchor_spans_test", {})
    if not all(spans.values()):
        console.print(f"[yellow]note:[/yellow] the JPEG points do not span raqcodec's ({spans}); "
                      "the BD figures cover the overlap only")
    for key, label in (("bd_low_rate", "BD-rate vs JPEG, low-rate targets"), ("bd_vs_previous", "BD-rate vs previous")):
        if key in result:
            value = result[key].get("bd_rate_percent")
            console.print(f"{label}: " + (f"[bold]{value:+.2f}%[/bold]" if value is not None
                                          else f"not computed ({result[key].get('error')})"))
    if "error" in bd:
        console.print(f"BD vs JPEG: not computed ({bd['error']})")
    else:
        lo, hi = bd["psnr_overlap_db"]
        console.print(f"BD-rate vs JPEG: [bold]{bd['bd_rate_percent']:+.2f}%[/bold] (over {lo:.2f}-{hi:.2f} dB); "
                      f"BD-PSNR: [bold]{bd['bd_psnr_db']:+.3f} dB[/bold] (over {bd['bpp_overlap'][0]:.3f}-"
                      f"{bd['bpp_overlap'][1]:.3f} bpp); on mean points, overlapping ranges only")


def write_json(path: Path, result: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="Folder of Kodak PNGs (kodim01..24).")
    parser.add_argument("--model", default=None, help="Model name or .safetensors path (default: the default model).")
    parser.add_argument("--bpp", type=float, nargs="+", default=DEFAULT_BPP, help="raqcodec --bpp targets.")
    parser.add_argument("--jpeg-qualities", type=int, nargs="+", default=DEFAULT_JPEG_QUALITIES)
    parser.add_argument("--images", type=int, default=None, help="Use only the first N images (quick checks).")
    parser.add_argument("--adapter", choices=["seq2seq", "cluster"], default="seq2seq")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "kodak_rd.json")
    parser.add_argument("--previous", type=Path, default=None,
                        help="Results JSON of an earlier run to compute the BD-rate against.")
    parser.add_argument("--low-rate-max", type=float, default=0.3,
                        help="Also report the BD-rate vs JPEG over the --bpp targets up to this value.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    images = sorted(args.data.glob("*.png"))[: args.images]
    if not images:
        raise SystemExit(f"no PNG images in {args.data}")
    if any(not 1 <= q <= 100 for q in args.jpeg_qualities):
        raise SystemExit("JPEG qualities must be in 1..100")
    model = registry.load(args.model)

    ours = [raqcodec_point(images, bpp, args.model, args.adapter) for bpp in args.bpp]
    jpeg = jpeg_sweep(images, args.jpeg_qualities)
    bd = bd_against(jpeg, ours)
    low = [p for p in ours if p["target_bpp"] <= args.low_rate_max]
    extra: dict[str, Any] = {"bd_low_rate": {"targets": [p["target_bpp"] for p in low], **bd_against(jpeg, low)}}
    if args.previous is not None:
        previous = json.loads(args.previous.read_text())
        extra["bd_vs_previous"] = {"results": str(args.previous), "model": previous.get("model"),
                                   **bd_against(previous["raqcodec"], ours, "previous")}
    result = {
        "dataset": str(args.data), "images": len(images), "image_names": [p.name for p in images],
        "model": {"name": model.name, "fingerprint": model.fingerprint, "path": str(model.path)},
        "adapter": args.adapter, "versions": versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "bd_rate_vs_jpeg_percent": bd.get("bd_rate_percent"), "bd_psnr_vs_jpeg_db": bd.get("bd_psnr_db"),
        "bd": bd, **extra, "raqcodec": ours, "jpeg": jpeg,
    }
    write_json(args.out, result)
    print_table(result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
