"""Running the real ``raqcodec`` command in a child process, as a user would, for the CLI tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from conftest import smooth_image
from PIL import Image

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RAQ_MAGIC = b"\x89RAQ"
MAGIC = {  # what the first bytes of each format look like
    "PNG": (PNG_MAGIC,),
    "RAQ": (RAQ_MAGIC,),
    "JPEG": (b"\xff\xd8\xff",),
    "TIFF": (b"II*\x00", b"MM\x00*"),
    "PPM": (b"P6",),
    "PGM": (b"P5",),
}


def magic_of(path: Path) -> str:
    head = path.read_bytes()[:16]
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    for name, starts in MAGIC.items():
        if any(head.startswith(s) for s in starts):
            return name
    return f"unknown {head[:8]!r}"


def tiny_env(tiny_model_path: Path) -> dict[str, str]:
    """The environment of a child process that finds the tiny test model by name."""
    env = {**os.environ, "RAQCODEC_MODEL_PATH": str(tiny_model_path.parent)}
    env.pop("RAQCODEC_DEBUG", None)
    return env


def raqcodec(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stdin: bytes | None = None,
    umask: int | None = None,
    timeout: float = 300,
    python_flags: tuple[str, ...] = (),
) -> subprocess.CompletedProcess:
    """``python -m raqcodec ARGS`` in a fresh process; stdout as bytes, stderr as text."""
    preexec: Callable[[], Any] | None = (lambda: os.umask(umask)) if umask is not None else None
    proc = subprocess.run(
        [sys.executable, *python_flags, "-m", "raqcodec", *args],
        input=stdin,
        capture_output=True,
        env=env if env is not None else dict(os.environ),
        cwd=cwd,
        timeout=timeout,
        preexec_fn=preexec,
    )
    proc.stderr = proc.stderr.decode("utf-8", "replace")
    return proc


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def write_photo(path: Path, height: int = 30, width: int = 42, seed: int = 0, mode: str = "RGB", **save: Any) -> Path:
    """A small photo-like image in whatever format ``path``'s extension names."""
    image = Image.fromarray(smooth_image(height, width, seed))
    if mode != "RGB":
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **save)
    return path


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)
