"""The work of one file, in a worker process or in this one with -j 1: encode or decode it, write its
output atomically (or to stdout), and report a failure as one line."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import describe
from ..io import formats
from ..io.atomic import atomic_path
from ..io.bitstream import read_stream
from ..options import check_codebook_size
from ..pool import emit
from .jobs import DONE, ENCODE, FAILED, Job, Settings
from .outputs import ensure_inside

# -- the work of one file (in a worker process, or in this one with -j 1) ----------------------------------

_state: dict[str, Any] = {}


def init_worker(settings: Settings) -> None:
    """Load the model once per process (option values were checked by the command line before any heavy
    import); ``raqcodec.pool`` gives each worker process one torch thread."""
    from ..codec import pick_device
    from ..model import registry

    started = time.perf_counter()
    device = pick_device(settings.device)
    if settings.kind == ENCODE:
        model = registry.load(settings.model).on(device)
        if settings.codebook_size is not None:
            check_codebook_size(settings.codebook_size, model.size_range, model.name)
        _state["model"] = model
    elif settings.model is not None:
        registry.load(settings.model).on(device)  # cached: decode finds it by name, first
    _state["settings"] = settings
    _state["load_seconds"] = time.perf_counter() - started  # reported with the first file's stages


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise OSError(f"{path} is not a regular file")


def write_output(job: Job, write: Callable[[Any], None]) -> None:
    """Write through ``io.atomic.atomic_path`` (a temporary name in the destination folder, synced, then
    renamed: the real name only ever holds a complete file), or to stdout for ``-o -``. Checked inside
    the output tree before and after making folders."""
    if job.stdout:
        write(sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    if job.root is not None:
        ensure_inside(job.output, job.root)
    job.output.parent.mkdir(parents=True, exist_ok=True)
    if job.root is not None:
        ensure_inside(job.output, job.root)  # a link made meanwhile
    write(job.output)


def _stages(measured: dict[str, float], write_seconds: float) -> dict[str, float]:
    stages = {"model load": _state.pop("load_seconds")} if _state.get("load_seconds") else {}
    stages.update(measured)
    stages["write"] = write_seconds
    return {name: round(seconds, 4) for name, seconds in stages.items()}


def _encode(job: Job, settings: Settings) -> tuple[dict[str, Any], list[str]]:
    from .. import codec

    if job.stdin:
        source: Any = sys.stdin.buffer.read()
    else:
        _require_file(job.source)
        source = job.source
    result = codec.encode_detailed(
        source,
        bpp=settings.bpp,
        codebook_size=settings.codebook_size,
        model=_state["model"],
        adapter=settings.adapter,
        device=settings.device,
        entropy=settings.entropy,
        refine=settings.refine,
        effort=settings.effort,
        psnr=settings.psnr,
        layers=settings.layers,
        progress=emit,  # to the parent's display (raqcodec.pool)
    )

    def write(target: Any) -> None:
        if isinstance(target, Path):
            with atomic_path(target) as tmp:
                tmp.write_bytes(result.data)
        else:
            target.write(result.data)

    started = time.perf_counter()
    write_output(job, write)
    fields = {
        "width": result.width,
        "height": result.height,
        "bytes": len(result.data),
        "bpp": round(result.bpp, 6),
        "codebook_size": result.codebook_size,
        "adapter": result.adapter,
        "coder": result.coder,
        "model": result.model,
        "seconds": round(result.seconds, 4),
    }
    fields["effort"] = result.effort
    if settings.bpp is not None:
        fields["budget_unused"] = result.budget_unused
    if settings.psnr is not None:
        fields["psnr"] = round(result.psnr, 4) if result.psnr is not None else None
    fields["stages"] = _stages(result.stages, time.perf_counter() - started)
    return fields, result.notes


def _decode(job: Job, settings: Settings) -> tuple[dict[str, Any], list[str]]:
    from .. import codec
    from ..io import writing

    started = time.perf_counter()
    data = read_stream(sys.stdin.buffer if job.stdin else job.source)
    measured: dict[str, float] = {"read": time.perf_counter() - started}
    image = codec.decode(data, model=settings.model, device=settings.device, stages=measured)
    fmt = formats.output_format(job.output) if not job.stdout else formats.OUTPUT_FORMATS[formats.DEFAULT_OUTPUT]
    notes: list[str] = []
    written = time.perf_counter()
    write_output(job, lambda target: notes.extend(writing.save_image(image, target, fmt, settings.quality)))
    return {
        "width": image.width,
        "height": image.height,
        "mode": image.mode,
        "format": fmt.name,
        "seconds": round(time.perf_counter() - started, 4),
        "stages": _stages(measured, time.perf_counter() - written),
    }, notes


def run_job(job: Job) -> dict[str, Any]:
    """One file; a failure is returned (one line), never raised, so that the other files go on."""
    settings: Settings = _state["settings"]
    try:
        fields, notes = (_encode if settings.kind == ENCODE else _decode)(job, settings)
        size_in = job.source.stat().st_size if not job.stdin else 0
        size_out = job.output.stat().st_size if not job.stdout else fields.get("bytes", 0)
        return {"status": DONE, "fields": fields, "notes": notes, "bytes_in": size_in, "bytes_out": size_out}
    except Exception as exc:  # noqa: BLE001 - one file's failure must not lose the others
        return {"status": FAILED, "error": describe(exc)}
