"""What trimming costs: a file encoded at a high budget, cut to a low one, against encoding at the low
budget directly (issue 20: from 1.0 to 0.3 bpp on Kodak, at most 0.5 dB).

For every image, a file encoded at ``--high`` with ``--layers LOW`` (the budget it can be cut to), whole
and trimmed to ``--low``; and direct encodes at ``--low`` and ``--high``, plus the direct ``--high`` file
trimmed to ``--low`` (a file without layers). With ``--reference RD.json`` (a ``raqcodec rd`` result of the
same model and code at both budgets, e.g. ``benchmarks/kodak_rd.py``'s) the direct figures are read from
it instead of encoded again. The API calls are the ones `raqcodec encode --bpp HIGH --layers LOW` and
`raqcodec trim --bpp LOW` make.

    python benchmarks/trim_layers.py ../shared/data/kodak --model raq-photo2 --low 0.3 --high 1.0 \\
        --reference benchmarks/results/kodak_rd_v2.json -j 2 --out benchmarks/results/trim_layers.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

import raqcodec
from raqcodec.codec import encode_detailed
from raqcodec.errors import TrimError
from raqcodec.trim import trim


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * math.log10(255.0**2 / mse) if mse > 0 else 99.0


def measure(path: Path, model: str, low: float, high: float, effort: int | None, direct: bool) -> dict:
    import torch

    torch.set_num_threads(1)
    with Image.open(path) as img:
        rgb = np.asarray(img.convert("RGB"))
    pixels = rgb.shape[0] * rgb.shape[1]

    def point(data: bytes | None) -> dict[str, float] | None:
        if data is None:
            return None
        decoded = np.asarray(raqcodec.decode(data, model=model))
        return {"bpp": len(data) * 8 / pixels, "psnr": psnr(decoded, rgb)}

    out: dict[str, object] = {"image": path.name}
    started = time.perf_counter()
    layered = encode_detailed(rgb, bpp=high, model=model, effort=effort, layers=(low,)).data
    out["layered_seconds"] = round(time.perf_counter() - started, 1)
    out["layers"] = [list(layer) for layer in raqcodec.io.bitstream.read_header(layered).layers]
    out["layered_high"] = point(layered)
    out["layered_trimmed"] = point(trim(layered, bpp=low))
    if direct:
        direct_high = encode_detailed(rgb, bpp=high, model=model, effort=effort).data
        out["direct_low"] = point(encode_detailed(rgb, bpp=low, model=model, effort=effort).data)
        out["direct_high"] = point(direct_high)
        try:
            out["trimmed_high"] = point(trim(direct_high, bpp=low))
        except TrimError:  # its base stage alone is over the smaller budget
            out["trimmed_high"] = None
    print(path.name, round(time.perf_counter() - started, 1), "s", flush=True)
    return out


def reference_points(path: Path, budget: float) -> dict[str, dict[str, float]]:
    """image name -> {bpp, psnr} of raqcodec at ``budget`` in a ``raqcodec rd`` result."""
    result = json.loads(path.read_text())
    for p in result["codecs"]["raqcodec"]["points"]:
        if math.isclose(p["bpp_target"], budget):
            return {r["image"]: {"bpp": r["bpp"], "psnr": r["psnr"]} for r in p["per_image"]}
    raise SystemExit(f"{path} has no raqcodec point at {budget} bpp")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--model", default="raq-photo2")
    p.add_argument("--low", type=float, default=0.3)
    p.add_argument("--high", type=float, default=1.0)
    p.add_argument("--effort", type=int, default=None)
    p.add_argument("--images", type=int, default=None, help="the first N images only")
    p.add_argument("--reference", type=Path, default=None, help="direct figures from this rd result")
    p.add_argument("-j", "--jobs", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    paths = sorted(args.folder.glob("*.png"))[: args.images]
    direct = args.reference is None
    settings = (args.model, args.low, args.high, args.effort, direct)
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(measure, paths, *[[x] * len(paths) for x in settings]))
    if not direct:
        low, high = reference_points(args.reference, args.low), reference_points(args.reference, args.high)
        for row in rows:
            row["direct_low"], row["direct_high"] = low[row["image"]], high[row["image"]]
    names = ["direct_low", "direct_high", "layered_high", "layered_trimmed"]
    mean = {n: {k: float(np.mean([r[n][k] for r in rows])) for k in ("bpp", "psnr")} for n in names}
    summary: dict[str, object] = {
        "model": args.model,
        "low": args.low,
        "high": args.high,
        "effort": args.effort,
        "images": len(rows),
        "direct_figures_from": str(args.reference) if args.reference else "encoded in this run",
        "mean": mean,
        "layered_trim_loss_db": mean["direct_low"]["psnr"] - mean["layered_trimmed"]["psnr"],
        "worst_layered_trim_loss_db": max(r["direct_low"]["psnr"] - r["layered_trimmed"]["psnr"] for r in rows),
        "layering_cost_at_high_db": mean["direct_high"]["psnr"] - mean["layered_high"]["psnr"],
        "every_trimmed_file_within_budget": all(r["layered_trimmed"]["bpp"] <= args.low for r in rows),
        "every_layered_file_within_0.9_to_1.0_of_high": all(
            0.9 * args.high <= r["layered_high"]["bpp"] <= args.high for r in rows
        ),
    }
    if direct:
        trimmable = [r for r in rows if r["trimmed_high"] is not None]
        summary["unlayered_files_that_cannot_be_cut_to_low"] = len(rows) - len(trimmable)
        summary["unlayered_trim_loss_db_where_possible"] = (
            float(np.mean([r["direct_low"]["psnr"] - r["trimmed_high"]["psnr"] for r in trimmable]))
            if trimmable
            else None
        )
    summary["per_image"] = rows
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "per_image"}, indent=1))


if __name__ == "__main__":
    main()
