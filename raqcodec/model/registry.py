"""Finding models: by name, by path, or by the fingerprint a stream carries.

Search order for a name: each directory in ``$RAQCODEC_MODEL_PATH`` (os.pathsep-separated), then the models
bundled with the package (``models/`` in the repository, installed as the ``raqcodec.bundled`` package so
both editable and regular installs find them). Loaded models are cached per file for the process.
"""

from __future__ import annotations

import json
import os
import struct
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelFileError, ModelNotFound

if TYPE_CHECKING:  # loading a model needs torch; finding one and reading its header do not
    from .loaded import CodecModel

DEFAULT_MODEL = "raq-photo2"
# The smallest codebook any model codes with (``raqcodec.model.loaded.MIN_CODEBOOK_SIZE``; a test keeps them equal).
MIN_CODEBOOK_SIZE = 2
_HEADER_LIMIT = 1 << 24  # a safetensors header holds names and shapes: far below this
_cache: dict[Path, CodecModel] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path  # the .safetensors file
    card: dict[str, Any]


def search_dirs() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("RAQCODEC_MODEL_PATH", "").split(os.pathsep) if p]
    try:
        bundled = resources.files("raqcodec.bundled")
        dirs.append(Path(str(bundled)))
    except ModuleNotFoundError:  # running from a source tree without the package mapping
        dirs.append(Path(__file__).resolve().parent.parent / "models")
    return dirs


def _read_card(weights: Path) -> dict[str, Any]:
    card_path = weights.with_suffix(".json")
    try:
        return json.loads(card_path.read_text(encoding="utf-8")) if card_path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def available_models() -> list[ModelEntry]:
    seen: dict[str, ModelEntry] = {}
    for directory in search_dirs():
        if not directory.is_dir():
            continue
        for weights in sorted(directory.glob("*.safetensors")):
            if weights.stem not in seen:  # earlier directories shadow later ones
                seen[weights.stem] = ModelEntry(weights.stem, weights, _read_card(weights))
    return list(seen.values())


def resolve(name_or_path: str | os.PathLike | None) -> Path:
    """Path of the model file for a name or a path (None: the default model)."""
    target = str(name_or_path) if name_or_path is not None else DEFAULT_MODEL
    as_path = Path(target)
    if as_path.suffix == ".safetensors" or as_path.exists():
        if not as_path.is_file():
            raise ModelNotFound(f"model file {target} does not exist")
        return as_path.resolve()
    for entry in available_models():
        if entry.name == target:
            return entry.path.resolve()
    names = ", ".join(e.name for e in available_models()) or "none installed"
    raise ModelNotFound(f"unknown model {target!r} (available: {names})")


def load(name_or_path: str | os.PathLike | None = None) -> CodecModel:
    from .loaded import CodecModel

    path = resolve(name_or_path)
    with _lock:
        if path not in _cache:
            _cache[path] = CodecModel.load(path)
        return _cache[path]


def model_config(path: Path) -> dict[str, Any]:
    """The architecture stored in a model file's safetensors header, read without torch (the command
    line checks option values against it before any heavy import)."""
    try:
        with open(path, "rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            if length > _HEADER_LIMIT:
                raise ValueError(f"a header of {length} bytes")
            header = json.loads(fh.read(length))
        config = json.loads(header["__metadata__"]["raqcodec"])["config"]
        if not isinstance(config, dict):
            raise ValueError("no architecture")
        return config
    except (OSError, ValueError, KeyError, TypeError, struct.error) as exc:
        raise ModelFileError(f"{path} is not a valid raqcodec model file ({exc})") from None


def coding_range(name_or_path: str | os.PathLike | None = None) -> tuple[int, int]:
    """The codebook sizes a model codes with (``CodecModel.size_range``), from its header alone."""
    config = model_config(resolve(name_or_path))
    try:
        k_min, k_max = int(config["k_min"]), int(config["k_max"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"model {name_or_path or DEFAULT_MODEL} has no codebook range ({exc})") from None
    return min(MIN_CODEBOOK_SIZE, k_min), k_max


def find_by_fingerprint(prefix: bytes, candidates: list[str | os.PathLike] | None = None) -> CodecModel:
    """The model whose fingerprint starts with ``prefix`` (8 bytes from a stream header).

    ``candidates`` (names or paths) are tried first; then every installed model, cheapest check first
    (the fingerprint written in its card), always confirmed against the fingerprint of the loaded tensors.
    """
    want = prefix.hex()
    for candidate in candidates or []:
        model = load(candidate)
        if model.fingerprint.startswith(want):
            return model
    entries = available_models()
    entries.sort(key=lambda e: not str(e.card.get("fingerprint", "")).startswith(want))
    for entry in entries:
        model = load(entry.path)
        if model.fingerprint.startswith(want):
            return model
    raise ModelNotFound(
        f"this stream needs model {want}, which is not installed "
        "(pass --model PATH, or add its directory to RAQCODEC_MODEL_PATH)"
    )
