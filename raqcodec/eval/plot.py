"""Rate-distortion plots of ``raqcodec rd`` results files (matplotlib, Agg; PNG, SVG or PDF).

One curve per codec and results file, through the complete points only (a point some image failed is a
mean over other images, so it does not belong on the curve).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..io.atomic import atomic_path
from .rd import RESULTS_FORMAT, curve

FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
METRIC_KEYS = {"psnr": ("psnr", "PSNR (dB)"), "ms-ssim": ("ms_ssim_db", "MS-SSIM (dB), -10 log10(1 - MS-SSIM)")}


def check_output(path: Path) -> str:
    """The figure format for ``path``'s extension; ValueError for one matplotlib should not guess."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: the plot's extension must be one of {', '.join(FORMATS)}")
    return fmt


def load_results(path: Path) -> dict[str, Any]:
    """A results file written by ``raqcodec rd``; ValueError with the reason for anything else."""
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a raqcodec rd results file (not text)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path} is not a raqcodec rd results file (invalid JSON: {exc.msg}, line {exc.lineno})"
        ) from None
    if (
        not isinstance(results, dict)
        or results.get("format") != RESULTS_FORMAT
        or not isinstance(results.get("codecs"), dict)
    ):
        raise ValueError(f'{path} is not a raqcodec rd results file (no "format": "{RESULTS_FORMAT}")')
    return results


def _frame(ax: Any, compared: list[tuple[float, float]], anchor_points: list[tuple[float, float]]) -> None:
    """Frame the axes on the compared curves. The anchor is extended past them only to span their
    quality range for BD-rates; its far points would squeeze every curve into a corner, so the plot stops
    a little beyond the others and the anchor's line runs off its edge."""
    if not compared or not anchor_points:
        return
    right = max(r for r, _ in compared) * 1.08
    if max(r for r, _ in anchor_points) <= right:
        return
    left = min(r for r, _ in compared + anchor_points)
    shown = [q for r, q in compared + anchor_points if r <= right]
    pad_x, pad_y = 0.04 * (right - left), 0.04 * (max(shown) - min(shown))
    ax.set_xlim(left - pad_x, right)
    ax.set_ylim(min(shown) - pad_y, max(shown) + pad_y)


def plot(sources: Sequence[tuple[str, dict[str, Any]]], output: Path, metric: str = "psnr") -> int:
    """Draw (file stem, results) pairs to ``output``; returns the number of curves drawn.

    Raises ValueError when no codec has two complete points with the metric.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fmt = check_output(output)
    key, axis_label = METRIC_KEYS[metric]
    fig = Figure(figsize=(7.5, 5.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    several = len(sources) > 1
    drawn = 0
    compared: list[tuple[float, float]] = []  # points of the curves that are not a BD-rate anchor
    anchor_points: list[tuple[float, float]] = []
    for stem, results in sources:
        anchor = results.get("bd_rate", {}).get("anchor")
        for codec, entry in results["codecs"].items():
            points = sorted(curve(entry.get("points", []), key))
            if not points:
                continue
            label = f"{codec} ({stem})" if several else codec
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=4, label=label)
            (anchor_points if codec == anchor else compared).extend(points)
            drawn += 1
    if not drawn:
        raise ValueError(
            f"nothing to plot: no codec has a complete point with {metric} "
            f'(was it measured? see the results\' "metrics")'
        )
    _frame(ax, compared, anchor_points)
    datasets = sorted({f"{r['dataset']['name']} ({len(r.get('images', []))} images)" for _, r in sources})
    ax.set_title(f"Rate-distortion on {', '.join(datasets)}")
    ax.set_xlabel("bits per pixel (bpp)")
    ax.set_ylabel(axis_label)
    ax.grid(True, alpha=0.4)
    ax.legend()
    with atomic_path(output) as tmp:
        fig.savefig(tmp, format=fmt, dpi=120)
    return drawn
