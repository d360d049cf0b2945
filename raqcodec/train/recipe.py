"""Training recipes: TOML files with a [model] table (``ModelConfig``) and a [train] table (``TrainConfig``)."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from ..nn.config import ModelConfig


@dataclass(frozen=True)
class TrainConfig:
    mode: Literal["raq", "fixed"] = "raq"  # raq: joint training with the adapter; fixed: one codebook size
    steps: int = 20000
    batch_size: int = 16
    crop: int = 128  # side of the square training crops (32 for CIFAR-10: whole images)
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_steps: int = 200
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio
    grad_clip: float = 1.0
    # How K~ is drawn each step: "uniform" over [k_min, k_max] (the paper), or "log-uniform" (every
    # octave equally often, which trains the small codebooks that low bitrates use as often as the large).
    # "mixed" draws from "uniform" with probability uniform_fraction and from "log-uniform" otherwise:
    # large codebooks get the training that high rates need while every octave is still visited.
    k_sampling: Literal["uniform", "log-uniform", "mixed"] = "uniform"
    uniform_fraction: float = 0.5
    scale_min: float = 0.5  # random down-scaling of crops: factor drawn from [scale_min, 1]
    max_short_side: int = 512  # photos are reduced to this short side when loaded
    seed: int = 0
    # Warm start: a model file (path or installed name) whose float weights initialise a new run. The
    # architecture may grow: extra decoder blocks start as identities, a longer k_max keeps the learned
    # step embeddings as a prefix. Ignored when the run directory already has a checkpoint (resume).
    init_from: str = ""
    checkpoint_every: int = 250
    validate_every: int = 500
    validation_sizes: list[int] = field(default_factory=lambda: [16, 64, 256, 1024])
    validation_crop: int = 256
    holdout_every: int = 50  # every n-th image of the sorted file list is held out for validation

    def __post_init__(self) -> None:
        if self.mode not in ("raq", "fixed"):
            raise ValueError(f"train.mode must be raq or fixed, got {self.mode!r}")
        if self.k_sampling not in ("uniform", "log-uniform", "mixed"):
            raise ValueError(f"train.k_sampling must be uniform, log-uniform or mixed, got {self.k_sampling!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Recipe:
    name: str
    model: ModelConfig
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model.to_dict(), "train": self.train.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], name: str) -> Recipe:
        train, model = data.get("train", {}), data.get("model", {})
        known = {f.name for f in fields(TrainConfig)}
        if set(train) - known:
            raise ValueError(f"unknown [train] keys: {sorted(set(train) - known)}")
        _check_types("train", TrainConfig(), train)
        _check_types("model", ModelConfig(), model)
        return cls(name=data.get("name", name), model=ModelConfig.from_dict(model), train=TrainConfig(**train))


def _check_types(table: str, defaults: Any, values: dict[str, Any]) -> None:
    """Each value must have its default's type (ints are fine where floats are expected)."""
    for key, value in values.items():
        if not hasattr(defaults, key):
            continue  # unknown keys are reported by the config itself
        default = getattr(defaults, key)
        if default is None:  # optional integer fields (e.g. model.decoder_res_blocks)
            ok = value is None or (isinstance(value, int) and not isinstance(value, bool))
        elif isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, (int, float)):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            ok = ok and (isinstance(value, int) or isinstance(default, float))
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise ValueError(f"{table}.{key} must be of type {type(default).__name__}, got {value!r}")


def builtin_recipes() -> list[str]:
    return sorted(
        p.name.removesuffix(".toml")
        for p in resources.files(__package__).joinpath("recipes").iterdir()
        if p.name.endswith(".toml")
    )


def load_recipe(name_or_path: str, overrides: dict[str, Any] | None = None) -> Recipe:
    """A built-in recipe by name (``raqcodec/train/recipes/<name>.toml``) or a TOML file by path.

    ``overrides`` maps "train.steps" / "model.channels" style keys to values.
    """
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        text, name = path.read_text(encoding="utf-8"), path.stem
    else:
        res = resources.files(__package__).joinpath("recipes", f"{name_or_path}.toml")
        if not res.is_file():
            raise ValueError(f"unknown recipe {name_or_path!r}; built-in recipes: {', '.join(builtin_recipes())}")
        text, name = res.read_text(encoding="utf-8"), name_or_path
    data = tomllib.loads(text)
    for key, value in (overrides or {}).items():
        table, _, item = key.partition(".")
        if table not in ("model", "train") or not item:
            raise ValueError(f"override keys look like train.steps or model.channels, got {key!r}")
        data.setdefault(table, {})[item] = value
    return Recipe.from_dict(data, name)
