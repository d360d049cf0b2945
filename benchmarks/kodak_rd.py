"""Kodak rate-distortion curves of raqcodec against JPEG, WebP and AVIF, through `raqcodec rd`.

The measurement is the CLI's own (`raqcodec rd`, run here as a subprocess): every point is a real file
(bpp from its size, headers included), RGB PSNR and MS-SSIM of the decoded pixels, BD-rates against JPEG.
This script adds what a release needs on top: the BD-rate against JPEG over the low-rate targets alone
(``--low-rate-max``), and against an earlier run (``--previous``, a results file of `raqcodec rd` or of
this script's first version, such as benchmarks/results/kodak_rd_format1.json, the last release with the
order-0 coder). It writes the results JSON, the figure and a Markdown BD-rate table for the README.

    python benchmarks/kodak_rd.py --data ../shared/data/kodak
    python benchmarks/kodak_rd.py --data ../shared/data/kodak --images 3 --out /tmp/rd3.json --plot /tmp/rd3.png
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from raqcodec.eval import bdrate
from raqcodec.io.atomic import atomic_path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BPP = [0.1, 0.15, 0.2, 0.3, 0.45, 0.6]
Curve = list[tuple[float, float]]


def rd_command(images: list[Path], args: argparse.Namespace) -> list[str]:
    """The `raqcodec rd` call that does the measuring."""
    command = [
        sys.executable,
        "-m",
        "raqcodec",
        "rd",
        *map(str, images),
        "--bpp",
        ",".join(map(str, args.bpp)),
        "--baselines",
        args.baselines,
        "-o",
        str(args.out),
        "--plot",
        str(args.plot),
        "-j",
        str(args.jobs),
        "--force",
        "-q",
    ]
    command += ["--effort", str(args.effort)] if args.effort is not None else []
    return command + (["--model", args.model] if args.model else [])


def psnr_curve(results: dict[str, Any], codec: str = "raqcodec", max_target: float | None = None) -> Curve:
    """(mean bpp, mean PSNR) of a codec's complete points, from a `raqcodec rd` results file or from this
    script's first format (lists of points with mean_bpp / mean_psnr / ok / target_bpp)."""
    if results.get("format", "").startswith("raqcodec-rd/"):
        points = results["codecs"][codec]["points"]
        return [
            (p["bpp"], p["psnr"])
            for p in points
            if p["complete"] and p["psnr"] is not None and (max_target is None or p.get("bpp_target", 0) <= max_target)
        ]
    return [
        (p["mean_bpp"], p["mean_psnr"])
        for p in results[codec]
        if p.get("ok", True) and (max_target is None or p.get("target_bpp", 0) <= max_target)
    ]


def bd_summary(anchor: Curve, test: Curve, anchor_name: str) -> dict[str, Any]:
    """BD-rate and BD-PSNR of ``test`` against ``anchor``, with the ranges they average over."""
    out: dict[str, Any] = {"anchor": anchor_name, "test_points_used": len(test)}
    try:
        out["bd_rate_percent"] = bdrate.bd_rate(anchor, test)
        out["psnr_overlap_db"] = list(bdrate.overlap(anchor, test, "quality"))
        out["bd_psnr_db"] = bdrate.bd_psnr(anchor, test)
        out["bpp_overlap"] = list(bdrate.overlap(anchor, test, "rate"))
    except ValueError as exc:
        out["error"] = str(exc)
    return out


def release_figures(results: dict[str, Any], low_rate_max: float, previous: Path | None) -> dict[str, Any]:
    """The figures beyond `raqcodec rd`'s own: low-rate BD-rate against JPEG, BD-rate against a previous run."""
    figures: dict[str, Any] = {}
    if "raqcodec" in results["codecs"] and "jpeg" in results["codecs"]:
        low = psnr_curve(results, max_target=low_rate_max)
        figures["bd_low_rate_vs_jpeg"] = {
            "max_target_bpp": low_rate_max,
            **bd_summary(psnr_curve(results, "jpeg"), low, "jpeg"),
        }
    if previous is not None:
        earlier = json.loads(previous.read_text(encoding="utf-8"))
        figures["bd_vs_previous"] = {
            "results": str(previous),
            **bd_summary(psnr_curve(earlier), psnr_curve(results), "previous"),
        }
    return figures


def markdown_table(results: dict[str, Any]) -> str:
    """BD-rates against the anchor as a Markdown table (the README's)."""
    bd = results["bd_rate"]
    lines = [f"| codec | BD-rate vs {bd['anchor']}, PSNR | BD-rate vs {bd['anchor']}, MS-SSIM |", "|---|---:|---:|"]
    for codec, record in bd["codecs"].items():
        cells = [f"{record[k]:+.1f}%" if record.get(k) is not None else "n/a" for k in ("psnr", "ms_ssim_db")]
        lines.append(f"| {codec} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data",
        type=Path,
        default=ROOT.parent / "shared" / "data" / "kodak",
        help="Folder of Kodak PNGs (kodim01..24). [default: ../shared/data/kodak]",
    )
    parser.add_argument("--model", default=None, help="Model name or .safetensors path (default: the default model).")
    parser.add_argument("--bpp", type=float, nargs="+", default=DEFAULT_BPP, help="raqcodec --bpp targets.")
    parser.add_argument("--effort", type=int, default=None, help="raqcodec --effort (default: the encoder's default).")
    parser.add_argument("--baselines", default="jpeg,webp,avif")
    parser.add_argument("--images", type=int, default=None, help="Use only the first N images (quick checks).")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="Worker processes for `raqcodec rd`.")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "kodak_rd.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "rd_kodak.png")
    parser.add_argument(
        "--table",
        type=Path,
        default=ROOT / "benchmarks" / "results" / "kodak_rd_bd.md",
        help="Where to write the Markdown BD-rate table.",
    )
    parser.add_argument(
        "--previous", type=Path, default=None, help="Results JSON of an earlier run to compute the BD-rate against."
    )
    parser.add_argument(
        "--low-rate-max",
        type=float,
        default=0.3,
        help="Also report the BD-rate vs JPEG over the --bpp targets up to this value.",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    images = sorted(args.data.glob("*.png"))[: args.images]
    if not images:
        raise SystemExit(f"no PNG images in {args.data}")
    command = rd_command(images, args)
    status = subprocess.run(command).returncode  # 1: some point failed; the results are still written
    if status not in (0, 1) or not args.out.exists():
        raise SystemExit(f"raqcodec rd failed (exit {status})")
    results = json.loads(args.out.read_text(encoding="utf-8"))
    results["benchmark"] = {
        "script": "benchmarks/kodak_rd.py",
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        **release_figures(results, args.low_rate_max, args.previous),
    }
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    table = markdown_table(results)
    with atomic_path(args.table) as tmp:
        tmp.write_text(table, encoding="utf-8")
    print(table)
    for key, figure in results["benchmark"].items():
        if isinstance(figure, dict):
            value = figure.get("bd_rate_percent")
            print(f"{key}: " + (f"{value:+.2f}%" if value is not None else f"not computed ({figure.get('error')})"))
    print(f"wrote {args.out}, {args.plot}, {args.table}")
    return status


if __name__ == "__main__":
    sys.exit(main())
