"""Writing ``raqcodec rd`` results: the JSON file, the per-image CSV and the summary tables."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from ..io.atomic import atomic_path

# -- writing -------------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """inf/nan to None (JSON has neither), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_json(results: dict[str, Any], path: Path) -> None:
    import json

    text = json.dumps(_jsonable(results), indent=1, allow_nan=False) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


CSV_COLUMNS = (
    "codec",
    "bpp_target",
    "codebook_size",
    "psnr_target",
    "quality",
    "image",
    "width",
    "height",
    "bytes",
    "bpp",
    "psnr",
    "ms_ssim",
    "ms_ssim_db",
    "encode_s",
    "decode_s",
    "error",
)


def _cell(value: Any) -> Any:
    """A CSV cell: empty for a missing or non-finite value."""
    return "" if value is None or (isinstance(value, float) and not math.isfinite(value)) else value


def csv_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per codec x point x image, with the setting in its own column."""
    sizes = {im["name"]: im for im in results["images"]}
    rows = []
    for codec_name, entry in results["codecs"].items():
        for point in entry["points"]:
            for r in point["per_image"]:
                im = sizes[r["image"]]
                row = {"codec": codec_name, "width": im["width"], "height": im["height"]}
                row.update(
                    {k: point[k] for k in ("bpp_target", "codebook_size", "psnr_target", "quality") if k in point}
                )
                row.update(r)
                rows.append({k: _cell(row.get(k)) for k in CSV_COLUMNS})
    return rows


def write_csv(results: dict[str, Any], path: Path) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(csv_rows(results))


def setting_label(point: dict[str, Any]) -> str:
    if "bpp_target" in point:
        return f"--bpp {point['bpp_target']:g}"
    if "codebook_size" in point:
        return f"K~={point['codebook_size']}"
    if "psnr_target" in point:
        return f"--psnr {point['psnr_target']:g}"
    return f"q={point['quality']}"


def summary_tables(results: dict[str, Any]) -> list[Any]:
    """Rich tables for the terminal: every point, then the BD-rates."""
    from rich.table import Table

    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None or not math.isfinite(value) else format(value, fmt)

    table = Table(
        "codec",
        "setting",
        "bpp",
        "PSNR (dB)",
        "MS-SSIM (dB)",
        "enc s",
        "dec s",
        "images",
        title=f"{results['dataset']['name']}: {len(results['images'])} images (means over images)",
    )
    for codec_name, entry in results["codecs"].items():
        for p in entry["points"]:
            mark = "" if p["complete"] else " (incomplete)"
            table.add_row(
                codec_name,
                setting_label(p),
                num(p["bpp"], ".4f"),
                num(p["psnr"], ".2f"),
                num(p["ms_ssim_db"], ".2f"),
                num(p["encode_s"], ".3f"),
                num(p["decode_s"], ".3f"),
                f"{p['images_ok']}/{p['images']}{mark}",
            )
    tables = [table]
    bd = results["bd_rate"]
    if bd.get("anchor") and bd["codecs"]:
        bd_table = Table(
            "codec",
            "BD-rate PSNR",
            "BD-rate MS-SSIM",
            title=f"BD-rate against {bd['anchor']} (negative: fewer bits at equal quality)",
        )
        for codec_name, record in bd["codecs"].items():
            cells = []
            for key in ("psnr", "ms_ssim_db"):
                value = record.get(key)
                cells.append(f"{value:+.2f}%" if value is not None else ("n/a" if f"{key}_error" in record else "-"))
            bd_table.add_row(codec_name, *cells)
        tables.append(bd_table)
    return tables
