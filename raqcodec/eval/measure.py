"""The work of one image at one setting, in a worker process (or in this one with -j 1): raqcodec or a
baseline codes it, the file is decoded and measured against its source."""

from __future__ import annotations

import time
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import numpy as np

from ..errors import USER_ERRORS, BaselineUnavailable
from . import METRICS, baselines

Row = dict[str, Any]  # one codec x setting x image: measurements, or {"error": message}

# -- work done in the worker processes (or in this one with -j 1) --------------------------------------------

_worker: dict[str, Any] = {"model": None, "device": "auto", "metrics": METRICS}


def init_worker(model_path: str | None, device: str, metrics: tuple[str, ...]) -> None:
    """Load the model once per process (``raqcodec.pool`` gives each worker process one torch thread)."""
    from ..codec import pick_device
    from ..model import registry

    _worker["device"] = device
    _worker["metrics"] = metrics
    _worker["model"] = registry.load(model_path).on(pick_device(device)) if model_path else None
    if _worker["model"] is not None:
        _warm_up(_worker["model"], device)


def _warm_up(model: Any, device: str) -> None:
    """One untimed encode and decode, so that one-time set-up (torch kernels, the context model's tables)
    is not charged to the first image measured. Codebooks of each size are still built on first use."""
    from .. import codec

    ramp = np.linspace(0, 255, 32 * 32 * 3).reshape(32, 32, 3).astype(np.uint8)
    try:
        codec.decode(
            codec.encode(ramp, codebook_size=model.size_range[0], model=model, device=device),
            model=model,
            device=device,
        )
    except Exception:  # noqa: BLE001 - a warm-up only; real failures are reported per image
        pass


@lru_cache(maxsize=64)
def load_rgb(path: str) -> np.ndarray:
    """The 8-bit RGB pixels every codec codes (cached: each image is used by every point)."""
    from ..io.images import load_image

    return load_image(path).rgb


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (*USER_ERRORS, BaselineUnavailable)):
        return str(exc)
    return f"internal error ({type(exc).__name__}: {exc})"


def lost(how: str) -> Row:
    """The row of a task whose worker process died on it (``raqcodec.pool``)."""
    return {"error": f"the worker process died ({how}) on this image"}


def measure(
    reference: np.ndarray, data: bytes, decoded: np.ndarray, encode_s: float, decode_s: float, metrics: Iterable[str]
) -> Row:
    """Per-image values of one coded file (MS-SSIM None where the image is too small for it)."""
    from .metrics import ms_ssim, ms_ssim_db, ms_ssim_min_side, mse, psnr

    height, width = reference.shape[:2]
    row: Row = {
        "bytes": len(data),
        "bpp": len(data) * 8 / (width * height),
        "psnr": None,
        "ms_ssim": None,
        "ms_ssim_db": None,
        "encode_s": encode_s,
        "decode_s": decode_s,
    }
    if decoded.shape != reference.shape:
        raise ValueError(f"decoded image is {decoded.shape}, the source {reference.shape}")
    if "psnr" in metrics:
        row["psnr"] = psnr(mse(reference, decoded))
    if "ms-ssim" in metrics and min(height, width) >= ms_ssim_min_side():
        import torch

        def batch(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.array(a)).permute(2, 0, 1).unsqueeze(0)  # a writable copy

        row["ms_ssim"] = float(ms_ssim(batch(reference), batch(decoded))[0])
        row["ms_ssim_db"] = ms_ssim_db(row["ms_ssim"])
    return row


def raq_task(path: str, key: str, value: float, effort: int | None = None) -> Row:
    """One image through raqcodec at one setting (key "bpp_target", "codebook_size" or "psnr_target")
    and effort level (None: the codec's default)."""
    from .. import codec

    try:
        rgb = load_rgb(path)
        model, device = _worker["model"], _worker["device"]
        args: dict[str, Any] = {"bpp_target": {"bpp": value}, "psnr_target": {"psnr": value}}.get(
            key, {"codebook_size": int(value)}
        )
        started = time.perf_counter()
        result = codec.encode_detailed(rgb, model=model, device=device, effort=effort, **args)
        encode_s = time.perf_counter() - started
        started = time.perf_counter()
        image = codec.decode(result.data, model=model, device=device)
        decoded = np.asarray(image.convert("RGB"))
        decode_s = time.perf_counter() - started
        row = measure(rgb, result.data, decoded, encode_s, decode_s, _worker["metrics"])
        row["encode_stages"] = dict(result.stages)  # where the encode's time went (``EncodeResult.stages``)
        return row
    except Exception as exc:  # noqa: BLE001 - one image's failure must not lose the others' results
        return {"error": _describe(exc)}


def baseline_encode_task(path: str, name: str, quality: int) -> Row:
    """One image encoded by a baseline: the bytes (kept for measuring later) and the seconds."""
    try:
        data, seconds = baselines.encode(name, load_rgb(path), quality)
        return {"data": data, "encode_s": seconds}
    except Exception as exc:  # noqa: BLE001
        return {"error": _describe(exc)}


def baseline_measure_task(path: str, data: bytes, encode_s: float) -> Row:
    """Decode a baseline's file and measure it against its source."""
    try:
        decoded, decode_s = baselines.decode(data)
        return measure(load_rgb(path), data, decoded, encode_s, decode_s, _worker["metrics"])
    except Exception as exc:  # noqa: BLE001
        return {"error": _describe(exc)}
