"""The evaluation commands: compare two images, rate-distortion curves (``raqcodec.eval``), plots."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import USER_ERRORS
from ..eval import BASELINES, DEFAULT_BASELINES, METRICS, OURS
from ..options import DEFAULT_EFFORT, MAX_EFFORT
from .app import EXIT_FAILED, _note, _say_error, main
from .options import _check_new_files, _device, _force, _name_list, _number_list


def _compared(path: Path, model: str | None) -> Any:
    """An image file, or a .raq file decoded, as ``io.images.SourceImage`` (8-bit RGB plus alpha)."""
    from ..io import images
    from ..io.bitstream import MAGIC

    with open(path, "rb") as fh:
        is_stream = fh.read(len(MAGIC)) == MAGIC
    if not is_stream:
        return images.load_image(path)
    from .. import codec

    return images.load_image(codec.decode(path, model=model), name=str(path))


@main.command()
@click.argument("reference", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("distorted", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", default=None, help="For a .raq file: model name or path to try first.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object on stdout.")
def compare(reference: Path, distorted: Path, model: str | None, as_json: bool) -> None:
    """Compare DISTORTED with REFERENCE on every channel: RGB PSNR (8-bit), MS-SSIM (both sides at least
    161 pixels), and the alpha channel's PSNR separately (a missing alpha is opaque). Either file may be a
    .raq file: it is decoded first."""
    import numpy as np

    from ..eval import metrics

    try:
        a, b = _compared(reference, model), _compared(distorted, model)
    except USER_ERRORS as exc:
        _say_error(str(exc))
        sys.exit(EXIT_FAILED)
    if a.rgb.shape != b.rgb.shape:
        _say_error(f"sizes differ: {a.width}x{a.height} and {b.width}x{b.height}")
        sys.exit(EXIT_FAILED)
    rgb = metrics.psnr(metrics.mse(a.rgb, b.rgb))
    has_alpha = a.alpha is not None or b.alpha is not None
    opaque = np.full(a.rgb.shape[:2], 255, np.uint8)
    alpha = metrics.psnr(metrics.mse(opaque if a.alpha is None else a.alpha, opaque if b.alpha is None else b.alpha))
    ms_ssim = None
    if min(a.width, a.height) >= metrics.ms_ssim_min_side():
        ms_ssim = float(metrics.ms_ssim(a.rgb.transpose(2, 0, 1)[None], b.rgb.transpose(2, 0, 1)[None])[0])
    record = {
        "reference": str(reference),
        "distorted": str(distorted),
        "psnr": None if rgb == math.inf else round(rgb, 4),  # RGB; JSON has no inf: null when identical
        "alpha_psnr": None if alpha == math.inf else round(alpha, 4),
        "has_alpha": has_alpha,
        "ms_ssim": None if ms_ssim is None else round(ms_ssim, 6),
        "ms_ssim_db": None if ms_ssim is None or ms_ssim >= 1 else round(metrics.ms_ssim_db(ms_ssim), 4),
        "rgb_identical": rgb == math.inf,
        "alpha_identical": alpha == math.inf,
        "identical": rgb == math.inf and alpha == math.inf,
    }
    if as_json:
        click.echo(json.dumps(record))
        return
    if record["identical"]:
        click.echo("identical pixels (RGB" + (" and alpha)" if has_alpha else ")"))
        return
    parts = ["RGB identical" if rgb == math.inf else f"RGB PSNR {rgb:.2f} dB"]
    if ms_ssim is not None:
        parts.append(f"MS-SSIM {ms_ssim:.4f}" + (f" ({record['ms_ssim_db']:.2f} dB)" if record["ms_ssim_db"] else ""))
    else:
        parts.append(f"MS-SSIM n/a (a side under {metrics.ms_ssim_min_side()} pixels)")
    if has_alpha:
        parts.append("alpha identical" if alpha == math.inf else f"alpha PSNR {alpha:.2f} dB")
    else:
        parts.append("no alpha")
    click.echo(", ".join(parts))


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--bpp",
    "bpp_list",
    metavar="LIST",
    help="raqcodec --bpp targets, comma-separated [default: 0.1,0.15,0.2,0.3,0.4,0.5]; with --no-raq, "
    "the mean bpp the baselines' qualities aim at.",
)
@click.option(
    "--codebook-sizes",
    "size_list",
    metavar="LIST",
    help="Measure raqcodec at these codebook sizes K~ instead of --bpp targets.",
)
@click.option(
    "--psnr",
    "psnr_list",
    metavar="LIST",
    help="Measure raqcodec at these PSNR targets (dB, --psnr of encode) instead of --bpp targets.",
)
@click.option(
    "--effort",
    type=click.IntRange(0, MAX_EFFORT),
    default=None,
    metavar="N",
    help=f"raqcodec's encoder effort 0..{MAX_EFFORT} (see encode --help).  [default: {DEFAULT_EFFORT}]",
)
@click.option(
    "--baselines",
    "baseline_list",
    default=",".join(DEFAULT_BASELINES),
    show_default=True,
    metavar="LIST",
    help="Reference codecs, comma-separated: jpeg, webp, avif (Pillow), or none.",
)
@click.option("--no-raq", is_flag=True, help="Measure the baselines only (raqcodec is the slow one).")
@click.option(
    "--metrics",
    "metric_list",
    default="psnr,ms-ssim",
    show_default=True,
    metavar="LIST",
    help="psnr, ms-ssim (MS-SSIM needs both sides >= 161 pixels; null otherwise).",
)
@click.option(
    "--anchor",
    type=click.Choice([OURS, *BASELINES]),
    default=None,
    help="Codec the BD-rates are measured against.  [default: jpeg when measured]",
)
@click.option("--model", default=None, help="Model name or .safetensors path (default: the bundled default).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the results as JSON.")
@click.option(
    "--per-image", type=click.Path(dir_okay=False, path_type=Path), help="Write one CSV row per codec x point x image."
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Draw the PSNR curves (.png, .svg or .pdf).",
)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Worker processes (each loads the model once and uses one torch thread).",
)
@_device
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@_force
def rd(
    inputs: tuple[Path, ...],
    bpp_list: str | None,
    size_list: str | None,
    psnr_list: str | None,
    effort: int | None,
    baseline_list: str,
    no_raq: bool,
    metric_list: str,
    anchor: str | None,
    model: str | None,
    output: Path | None,
    per_image: Path | None,
    plot_path: Path | None,
    jobs: int,
    device: str,
    quiet: bool,
    force: bool,
) -> None:
    """Rate-distortion curves: raqcodec and reference codecs on images or folders (searched recursively).

    Every point is one setting applied to every image; its values are means over the images of bpp (real
    file sizes), RGB PSNR, MS-SSIM (also in dB) and encode/decode seconds. Baseline qualities are searched
    so that their points span raqcodec's bpp range. BD-rates (PCHIP) are against --anchor. Exits 1 if
    any image or point failed (the results are still written, failures listed in them).

    \b
    raqcodec rd kodak/ --baselines jpeg,webp,avif -o rd.json --plot rd.png
    raqcodec rd kodak/ --no-raq --baselines jpeg,webp --bpp 0.1,0.2,0.3,0.5,0.75,1.0
    raqcodec rd kodak/ --psnr 26,28,30,32 --effort 1 -o by-quality.json
    """
    from ..eval import plot as rdplot
    from ..eval import rd as engine
    from ..eval import report
    from ..eval.baselines import BaselineUnavailable

    bpp = _number_list(bpp_list, float, "--bpp")
    sizes = _number_list(size_list, int, "--codebook-sizes")
    targets = _number_list(psnr_list, float, "--psnr")
    if sum(x is not None for x in (bpp, sizes, targets)) > 1:
        raise click.UsageError("give at most one of --bpp, --codebook-sizes and --psnr")
    if no_raq and (sizes is not None or targets is not None):
        raise click.UsageError("--codebook-sizes and --psnr measure raqcodec; they cannot go with --no-raq")
    metrics = _name_list(metric_list, METRICS, "--metrics")
    if not metrics:
        raise click.BadParameter("give at least one metric", param_hint="--metrics")
    if plot_path is not None:
        try:
            rdplot.check_output(plot_path)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--plot") from None
    _check_new_files([output, per_image, plot_path], force)
    config = engine.RDConfig(
        inputs=list(inputs),
        bpp=bpp,
        codebook_sizes=sizes,
        psnr_targets=targets,
        effort=effort,
        raq=not no_raq,
        baselines=_name_list(baseline_list, BASELINES, "--baselines"),
        metrics=tuple(m for m in METRICS if m in metrics),
        anchor=anchor,
        model=model,
        device=device,
        jobs=jobs,
    )
    from rich.console import Console

    from ..progress import progress_bar

    progress = progress_bar(not quiet and sys.stderr.isatty())
    try:
        with progress:
            results = engine.run(config, progress)
    except (engine.RDError, BaselineUnavailable) as exc:
        raise click.ClickException(str(exc)) from None
    except USER_ERRORS as exc:
        _say_error(str(exc))
        sys.exit(EXIT_FAILED)
    params = click.get_current_context().params  # as parsed: sys.argv is not ours when called as a library
    results = {
        "options": {
            k: [str(v) for v in value] if isinstance(value, tuple) else str(value) if isinstance(value, Path) else value
            for k, value in params.items()
        },
        **results,
    }
    for failure in results["failures"]:
        where = " ".join(str(x) for x in (failure["codec"], _setting_text(failure["setting"])) if x)
        _say_error(f"{failure['image']}{': ' + where if where else ''}: {failure['message']}")
    for note in results["notes"]:
        _note(note)
    console = Console()
    for table in report.summary_tables(results):
        console.print(table)
    failed = bool(results["failures"])
    if output is not None:
        report.write_json(results, output)
        click.echo(f"wrote {output}", err=True)
    if per_image is not None:
        report.write_csv(results, per_image)
        click.echo(f"wrote {per_image}", err=True)
    if plot_path is not None:
        stem = output.stem if output is not None else "rd"
        try:
            rdplot.plot([(stem, results)], plot_path, "psnr" if "psnr" in metrics else "ms-ssim")
            click.echo(f"wrote {plot_path}", err=True)
        except ValueError as exc:
            _say_error(str(exc))
            failed = True
    if failed:
        sys.exit(EXIT_FAILED)


def _setting_text(setting: dict[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in setting.items()) if setting else ""


@main.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The figure: .png, .svg or .pdf.",
)
@click.option("--metric", type=click.Choice(METRICS), default="psnr", show_default=True)
@_force
def plot(results: tuple[Path, ...], output: Path, metric: str, force: bool) -> None:
    """Plot rate-distortion curves from `raqcodec rd -o` results files: one curve per codec and file."""
    from ..eval import plot as rdplot

    try:
        rdplot.check_output(output)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="-o") from None
    _check_new_files([output], force)
    try:
        loaded = [(path.stem, rdplot.load_results(path)) for path in results]
        curves = rdplot.plot(loaded, output, metric)
    except (ValueError, OSError) as exc:
        _say_error(str(exc))
        sys.exit(EXIT_FAILED)
    click.echo(f"wrote {output} ({curves} curves)")
