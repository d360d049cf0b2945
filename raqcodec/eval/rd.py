"""Rate-distortion measurement behind ``raqcodec rd``: raqcodec and reference codecs on a set of images.

Every number comes from a real file: raqcodec through ``codec.encode`` / ``codec.decode`` (the API the
CLI uses), the baselines through Pillow (``raqcodec.eval.baselines``). bpp is the whole file (header
included) x 8 / pixels; PSNR is 8-bit RGB over all three channels; MS-SSIM is ``metrics.ms_ssim`` and
its dB form -10 log10(1 - MS-SSIM). Every codec codes the same pixels: ``io.images.load_image``'s 8-bit RGB
of each file (alpha and 16-bit depth are not part of the comparison).

A *point* is one setting (a raqcodec --bpp target or codebook size, or a baseline quality) applied to
every image. Its values are the means over the images of the per-image values (mean bpp, mean PSNR in dB,
mean MS-SSIM, mean MS-SSIM in dB, mean seconds), the convention of the learned-compression literature.
A point where some image failed (an unreachable --bpp target, say) keeps the means of the images that
worked but is marked ``complete: false``, and is left out of BD-rates and plots: its mean is over a
different set of images. An image that cannot be read is left out of every point.

Baseline qualities are searched, not fixed: for each target mean bpp (the mean bpp of raqcodec's
complete points, or the --bpp values when raqcodec is not run), bisection over the integer quality
(mean bpp rises with quality) finds the quality whose mean bpp over the images is closest; then
qualities are added below and above until the baseline's points span the targets wherever the codec
can reach them. Each quality is encoded once (cached), and the files of the chosen qualities are the
ones decoded and measured.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RDError, WorkerStartError
from ..io.finder import find_files
from ..io.formats import READABLE_EXTENSIONS
from ..options import DEFAULT_EFFORT
from ..pool import WorkerPool
from . import DEFAULT_BASELINES, METRICS, OURS, baselines, bdrate
from .measure import (
    Row,
    _describe,
    baseline_encode_task,
    baseline_measure_task,
    init_worker,
    load_rgb,
    lost,
    raq_task,
)

# The low rates raqcodec is built for (the default model writes 0.03 to beyond 1 bpp; a model without a
# residual stage gives its largest codebook for a target above an image's reach).
DEFAULT_BPP = (0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
RESULTS_FORMAT = "raqcodec-rd/1"


@dataclass
class RDConfig:
    inputs: list[Path]
    bpp: list[float] | None = None  # raqcodec --bpp targets (and baseline targets without raqcodec)
    codebook_sizes: list[int] | None = None
    psnr_targets: list[float] | None = None  # raqcodec --psnr targets instead of --bpp
    effort: int | None = None  # raqcodec's encoder effort (None: the codec's default)
    baselines: list[str] = field(default_factory=lambda: list(DEFAULT_BASELINES))
    raq: bool = True  # False: baselines only
    metrics: tuple[str, ...] = METRICS
    anchor: str | None = None  # BD-rate anchor; None: jpeg when run
    model: str | None = None
    device: str = "auto"
    jobs: int = 1


# -- inputs ----------------------------------------------------------------------------------------------


def collect_images(inputs: Sequence[Path]) -> list[Path]:
    """Image files named or found under the inputs (``raqcodec.io.finder``'s rule), each once."""
    try:
        found = find_files(inputs, READABLE_EXTENSIONS)
    except FileNotFoundError as exc:
        raise RDError(str(exc)) from None
    if not found:
        raise RDError(f"no image files ({', '.join(sorted(READABLE_EXTENSIONS))}) under {', '.join(map(str, inputs))}")
    return found


def image_names(paths: Sequence[Path]) -> list[str]:
    """Names relative to the inputs' common directory: short, unique, and free of where the data lives."""
    resolved = [p.resolve() for p in paths]
    root = Path(os.path.commonpath([p.parent for p in resolved]))
    return [p.relative_to(root).as_posix() for p in resolved]


class _Progress:
    """A thin wrapper so that the engine runs the same with or without a rich progress bar."""

    def __init__(self, progress: Any | None) -> None:
        self.progress = progress

    def task(self, label: str, total: int | None) -> _Task:
        return _Task(self.progress, None if self.progress is None else self.progress.add_task(label, total=total))


class _Task:
    """One bar: ``tick`` after each unit of work; ``expect`` when more work is known to come."""

    def __init__(self, progress: Any | None, task_id: Any) -> None:
        self.progress, self.task_id = progress, task_id

    def __call__(self) -> None:
        if self.progress is not None:
            self.progress.advance(self.task_id)

    def expect(self, more: int) -> None:
        if self.progress is not None:
            total = self.progress.tasks[self.progress.task_ids.index(self.task_id)].total or 0
            self.progress.update(self.task_id, total=total + more)


# -- points ------------------------------------------------------------------------------------------------


def _mean(values: list[float | None]) -> float | None:
    """Mean of per-image values; None when any is missing or infinite (JSON has no inf)."""
    if not values or any(v is None or not math.isfinite(v) for v in values):
        return None
    return statistics.fmean(values)  # type: ignore[arg-type]


def make_point(setting: dict[str, Any], names: list[str], rows: list[Row]) -> dict[str, Any]:
    """One point: the setting, the means over the images that worked, and the per-image values."""
    ok = [r for r in rows if "error" not in r]
    point: dict[str, Any] = dict(setting)
    for key in ("bpp", "psnr", "ms_ssim", "ms_ssim_db", "encode_s", "decode_s"):
        point[key] = _mean([r[key] for r in ok])
    staged = [r["encode_stages"] for r in ok if "encode_stages" in r]
    if staged and len(staged) == len(ok):  # mean seconds per encode stage (one that did not run: 0)
        names_seen = list(dict.fromkeys(name for stages in staged for name in stages))
        point["encode_stages"] = {n: statistics.fmean(s.get(n, 0.0) for s in staged) for n in names_seen}
    point.update(images=len(rows), images_ok=len(ok), complete=len(ok) == len(rows) and bool(rows))
    point["per_image"] = [
        {"image": name, **{k: v for k, v in r.items() if k != "data"}} for name, r in zip(names, rows)
    ]
    return point


def _failures(codec: str, point: dict[str, Any], setting: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"image": r["image"], "codec": codec, "setting": setting, "message": r["error"]}
        for r in point["per_image"]
        if "error" in r
    ]


def closest_quality(mean_bpp: Callable[[int], float | None], lo: int, hi: int, target: float) -> int:
    """The quality in lo..hi whose mean bpp is closest to ``target`` (bisection: bpp rises with quality)."""

    def bpp(q: int) -> float:
        value = mean_bpp(q)
        return math.inf if value is None else value

    if bpp(hi) < target:
        return hi
    a, b = lo, hi  # invariant: bpp(b) >= target; find the smallest such quality
    if bpp(a) >= target:
        return a
    while b - a > 1:
        mid = (a + b) // 2
        if bpp(mid) >= target:
            b = mid
        else:
            a = mid
    return a if abs(bpp(a) - target) < abs(bpp(b) - target) else b


def choose_qualities(mean_bpp: Callable[[int], float | None], lo: int, hi: int, targets: list[float]) -> list[int]:
    """Qualities closest to each target, extended until they span the targets where the codec can."""
    chosen = {closest_quality(mean_bpp, lo, hi, t) for t in targets}
    low, high = min(chosen), max(chosen)

    def bpp(q: int) -> float:
        value = mean_bpp(q)
        return math.inf if value is None else value

    while low > lo and bpp(low) > min(targets):
        low -= 1
    while high < hi and bpp(high) < max(targets):
        high += 1
    return sorted(chosen | {low, high})


# -- the whole measurement ---------------------------------------------------------------------------------


def software_versions() -> dict[str, str | None]:
    import PIL
    import torch
    from PIL import features

    from .. import __version__

    def lib(feature: str) -> str | None:
        try:
            return features.version(feature)
        except ValueError:
            return None

    return {
        "python": platform.python_version(),
        "raqcodec": str(__version__),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "libjpeg": lib("jpg"),
        "libjpeg_turbo": lib("libjpeg_turbo"),
        "libwebp": lib("webp"),
        "libavif": lib("avif"),
    }


def run(config: RDConfig, progress: Any | None = None) -> dict[str, Any]:
    """Measure every codec and point of ``config``; returns the results document (see module docstring).

    Raises RDError (no image could be read, bad anchor), BaselineUnavailable, and the model's errors.
    """
    from ..model import registry

    for name in config.baselines:
        baselines.get(name)
    codecs = ([OURS] if config.raq else []) + list(config.baselines)
    if not codecs:
        raise RDError("nothing to measure: raqcodec is skipped and no baseline is given")
    anchor = config.anchor or ("jpeg" if "jpeg" in codecs else None)
    if anchor is not None and anchor not in codecs:
        raise RDError(f"the anchor {anchor} is not among the codecs measured ({', '.join(codecs)})")
    model = registry.load(config.model) if config.raq else None
    if model is not None and config.codebook_sizes:
        lo, hi = model.size_range
        bad = [k for k in config.codebook_sizes if not lo <= k <= hi]
        if bad:
            raise RDError(f"codebook sizes {bad} are outside model {model.name}'s range {lo}..{hi}")

    paths = collect_images(config.inputs)
    all_names = image_names(paths)
    failures: list[dict[str, Any]] = []
    notes: list[str] = []
    images: list[dict[str, Any]] = []
    readable: list[Path] = []
    for path, name in zip(paths, all_names):
        try:
            rgb = load_rgb(str(path))
        except Exception as exc:  # noqa: BLE001 - reported, and the other images go on
            failures.append({"image": name, "codec": None, "setting": None, "message": _describe(exc)})
            continue
        images.append({"name": name, "width": int(rgb.shape[1]), "height": int(rgb.shape[0])})
        readable.append(path)
    if not readable:
        raise RDError(f"none of the {len(paths)} images could be read ({failures[0]['message']})")
    names = [im["name"] for im in images]
    files = [str(p) for p in readable]
    pixels = [im["width"] * im["height"] for im in images]

    from .metrics import ms_ssim_min_side

    small = [im["name"] for im in images if min(im["width"], im["height"]) < ms_ssim_min_side()]
    if "ms-ssim" in config.metrics and small:
        notes.append(
            f"MS-SSIM needs both sides >= {ms_ssim_min_side()} pixels; {len(small)} image(s) are smaller "
            f"({', '.join(small[:3])}{', ...' if len(small) > 3 else ''}): their ms_ssim is null, and so "
            "is that of every point"
        )

    ticker = _Progress(progress)
    model_path = str(model.path) if model is not None and model.path is not None else config.model
    pool = WorkerPool(
        config.jobs, init_worker, (model_path if config.raq else None, config.device, tuple(config.metrics))
    )
    results_codecs: dict[str, Any] = {}
    try:
        with pool:
            targets = list(config.bpp or DEFAULT_BPP)
            if config.raq:
                key = (
                    "codebook_size" if config.codebook_sizes else "psnr_target" if config.psnr_targets else "bpp_target"
                )
                values: list[float] = list(config.codebook_sizes or config.psnr_targets or targets)
                tick = ticker.task(OURS, len(values) * len(files))
                calls = [(f, key, v, config.effort) for v in values for f in files]
                rows = pool.map(raq_task, calls, tick, lost)
                points = []
                for i, value in enumerate(values):
                    setting = {key: value}
                    point = make_point(setting, names, rows[i * len(files) : (i + 1) * len(files)])
                    failures.extend(_failures(OURS, point, setting))
                    points.append(point)
                assert model is not None
                results_codecs[OURS] = {
                    "description": f"raqcodec, model {model.name}, seq2seq adapter, effort "
                    f"{DEFAULT_EFFORT if config.effort is None else config.effort}, default entropy coder",
                    "effort": DEFAULT_EFFORT if config.effort is None else config.effort,
                    "setting": key,
                    "points": points,
                }
                reached = [p["bpp"] for p in points if p["complete"] and p["bpp"] is not None]
                if reached:
                    targets = reached
                else:
                    notes.append("raqcodec has no complete point; baseline qualities aim at the --bpp values")
            sweeps = {
                name: _BaselineSweep(name, files, names, pixels, pool, ticker, failures) for name in config.baselines
            }
            for sweep in sweeps.values():
                sweep.span(targets)
            if anchor in sweeps:
                others = [p for name, e in results_codecs.items() for p in e["points"]] + [
                    p for name, sweep in sweeps.items() if name != anchor for p in sweep.points.values()
                ]
                for key in _quality_keys(config.metrics):
                    values = [p[key] for p in others if p["complete"] and p.get(key) is not None]
                    if values:
                        sweeps[anchor].cover(key, min(values), max(values))
            for name, sweep in sweeps.items():
                results_codecs[name] = sweep.entry(targets)
    except WorkerStartError as exc:
        raise RDError(str(exc)) from None

    bd = bd_rates(results_codecs, anchor, config.metrics)
    return {
        "format": RESULTS_FORMAT,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "dataset": {
            "name": dataset_name(config.inputs),
            "inputs": [str(p) for p in config.inputs],
            "images": len(images),
        },
        "images": images,
        "software": software_versions(),
        "model": None if model is None else {"name": model.name, "fingerprint": model.fingerprint},
        "device": config.device,
        "jobs": config.jobs,
        "metrics": list(config.metrics),
        "averaging": "a point's values are the means over its images of the per-image values "
        "(bpp, PSNR dB, MS-SSIM, MS-SSIM dB, seconds); points with a failed image are "
        "complete=false and left out of BD-rates and plots",
        "codecs": results_codecs,
        "bd_rate": bd,
        "failures": failures,
        "notes": notes,
    }


class _BaselineSweep:
    """One baseline's qualities: encoded once each (cached), measured once each (cached)."""

    def __init__(
        self,
        name: str,
        files: list[str],
        names: list[str],
        pixels: list[int],
        pool: WorkerPool,
        ticker: _Progress,
        failures: list[dict[str, Any]],
    ) -> None:
        self.name, self.files, self.names, self.pixels = name, files, names, pixels
        self.pool, self.failures = pool, failures
        self.spec = baselines.get(name)
        self.encoded: dict[int, list[Row]] = {}
        self.points: dict[int, dict[str, Any]] = {}  # every quality measured
        self.kept: set[int] = set()  # the ones reported: the span, and the ends added by ``cover``
        self.search_tick = ticker.task(f"{name} (quality search)", None)
        self.tick = ticker.task(name, 0)

    def mean_bpp(self, quality: int) -> float | None:
        if quality not in self.encoded:
            self.encoded[quality] = self.pool.map(
                baseline_encode_task, [(f, self.name, quality) for f in self.files], self.search_tick, lost
            )
        ok = [len(r["data"]) * 8 / n for r, n in zip(self.encoded[quality], self.pixels) if "error" not in r]
        return statistics.fmean(ok) if ok else None

    def measure(self, qualities: Iterable[int]) -> None:
        """Decode and measure the files of these qualities (all in one batch, for the worker processes)."""
        todo = [q for q in dict.fromkeys(qualities) if q not in self.points]
        for q in todo:
            self.mean_bpp(q)  # encodes if not done yet
        calls = [
            (f, r["data"], r["encode_s"]) for q in todo for f, r in zip(self.files, self.encoded[q]) if "error" not in r
        ]
        self.tick.expect(len(calls))
        measured = iter(self.pool.map(baseline_measure_task, calls, self.tick, lost))
        for q in todo:
            rows = [next(measured) if "error" not in r else {"error": r["error"]} for r in self.encoded[q]]
            point = make_point({"quality": q}, self.names, rows)
            self.failures.extend(_failures(self.name, point, {"quality": q}))
            self.points[q] = point

    def span(self, targets: list[float]) -> None:
        """Measure the qualities whose points span the target mean bpps (``choose_qualities``)."""
        chosen = choose_qualities(self.mean_bpp, *self.spec.qualities, targets)
        self.measure(chosen)
        self.kept.update(chosen)

    def cover(self, key: str, low: float, high: float) -> None:
        """Add qualities until the complete points' ``key`` values reach down to ``low`` and up to ``high``
        where the codec can: an anchor whose curve stops short of a test curve's quality range leaves
        the BD-rate integral only the overlap, a fraction of the curve being compared."""
        lo_q, hi_q = self.spec.qualities

        def value(q: int) -> float:
            self.measure([q])
            v = self.points[q].get(key) if self.points[q]["complete"] else None
            return math.nan if v is None else v

        def reach(goal: float, upward: bool) -> None:
            done = [q for q in self.kept if self.points[q]["complete"] and self.points[q].get(key) is not None]
            if not done:
                return
            edge = max(done) if upward else min(done)
            if upward:  # invariant: value(a) < goal <= value(b); the smallest quality reaching the goal
                a, b = edge, hi_q
                if value(a) >= goal:
                    return
                if not value(b) >= goal:
                    self.kept.add(b)  # out of reach: the best the codec can do
                    return
            else:  # invariant: value(a) <= goal < value(b); the largest quality reaching down to it
                a, b = lo_q, edge
                if value(b) <= goal:
                    return
                if not value(a) <= goal:
                    self.kept.add(a)
                    return
            while b - a > 1:
                mid = (a + b) // 2
                if upward:
                    a, b = (a, mid) if value(mid) >= goal else (mid, b)
                else:
                    a, b = (mid, b) if value(mid) <= goal else (a, mid)
            self.kept.add(b if upward else a)  # the probes in between are measured but not reported

        reach(high, upward=True)
        reach(low, upward=False)

    def entry(self, targets: list[float]) -> dict[str, Any]:
        return {
            "description": self.spec.description,
            "setting": "quality",
            "points": [self.points[q] for q in sorted(self.kept)],
            "search": {
                "targets_bpp": targets,
                "mean_bpp_by_quality": {str(q): self.mean_bpp(q) for q in sorted(self.encoded)},
            },
        }


def dataset_name(inputs: Sequence[Path]) -> str:
    """A short name for titles: the folder given, or the folder holding the files given."""
    folders = {(p if p.is_dir() else p.parent).resolve().name or str(p) for p in inputs}
    return ", ".join(sorted(folders))


def curve(points: list[dict[str, Any]], metric: str) -> list[tuple[float, float]]:
    """(bpp, quality) of the complete points that have ``metric`` ("psnr" or "ms_ssim_db")."""
    return [
        (p["bpp"], p[metric])
        for p in points
        if p.get("complete") and p.get("bpp") is not None and p.get(metric) is not None
    ]


def _quality_keys(metrics: Sequence[str]) -> list[str]:
    """The point fields that BD-rates integrate over, for the metrics measured."""
    return [key for key, metric in (("psnr", "psnr"), ("ms_ssim_db", "ms-ssim")) if metric in metrics]


def bd_rates(codecs: dict[str, Any], anchor: str | None, metrics: Sequence[str]) -> dict[str, Any]:
    """BD-rate (%, PCHIP, ``raqcodec.eval.bdrate``) of every codec against the anchor, on PSNR and MS-SSIM dB."""
    keys = _quality_keys(metrics)
    out: dict[str, Any] = {
        "anchor": anchor,
        "method": "Bjontegaard delta rate, PCHIP interpolation of "
        "log(bpp) over the overlapping quality range (raqcodec.eval.bdrate.bd_rate)",
        "codecs": {},
    }
    if anchor is None:
        out["note"] = "no anchor: jpeg is not measured and --anchor was not given"
        return out
    for name, entry in codecs.items():
        if name == anchor:
            continue
        record: dict[str, Any] = {}
        for key in keys:
            anchor_curve, test_curve = curve(codecs[anchor]["points"], key), curve(entry["points"], key)
            try:
                record[key] = bdrate.bd_rate(anchor_curve, test_curve)
                # the quality interval averaged over, and the share of the test curve's range it covers
                lo, hi = bdrate.overlap(anchor_curve, test_curve, "quality")
                span = max(q for _, q in test_curve) - min(q for _, q in test_curve)
                record[f"{key}_overlap"] = [lo, hi]
                record[f"{key}_overlap_share"] = (hi - lo) / span if span > 0 else None
            except ValueError as exc:
                record[key] = None
                record[f"{key}_error"] = str(exc)
        out["codecs"][name] = record
    return out
