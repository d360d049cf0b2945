"""Shared fixtures: a tiny frozen model (random weights, fast) and small generated images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from raqcodec.model.files import freeze, write_model_file
from raqcodec.nn.config import ModelConfig
from raqcodec.nn.context import ContextConfig, ContextNet
from raqcodec.nn.raq import RAQModel
from raqcodec.train.context import freeze as freeze_context

TINY = ModelConfig(channels=16, res_channels=8, res_blocks=1, latent_dim=8, codebook_size=16, k_min=4, k_max=64)


def tiny_context(seed: int = 0) -> dict[str, torch.Tensor]:
    """Frozen tensors of a small, untrained context model for TINY's latent size."""
    torch.manual_seed(seed)
    return freeze_context(ContextNet(ContextConfig(latent_dim=TINY.latent_dim, hidden=16, proj_dim=4, components=2)))


def make_tiny_model(
    directory: Path, name: str = "tiny", seed: int = 0, with_context: bool = True, context_seed: int = 0
) -> Path:
    torch.manual_seed(seed)
    model = RAQModel(TINY)
    calib = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    model.codebook.initialize_from(model.encoder(calib).permute(0, 2, 3, 1).reshape(-1, TINY.latent_dim).detach())
    path = directory / f"{name}.safetensors"
    tensors = freeze(model, calib)
    if with_context:
        tensors |= tiny_context(context_seed)
    write_model_file(path, name, TINY, tensors)
    return path


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep computed cluster codebooks out of the user's cache."""
    import os

    os.environ["RAQCODEC_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("models"))


def smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A photo-like test image: smooth colour gradients plus mild texture, uint8 (H, W, 3)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    chans = []
    for _channel in range(3):
        fy, fx, phase = rng.uniform(0.01, 0.08, 2).tolist() + [rng.uniform(0, 6.28)]
        chans.append(0.5 + 0.35 * np.sin(fy * y + fx * x + phase))
    img = np.stack(chans, -1) + rng.normal(0, 0.02, (height, width, 3))
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


@pytest.fixture
def photo() -> Path:
    """A real photograph that ships with a dependency (matplotlib's sample data): no download, no ../shared."""
    import matplotlib.cbook

    return Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
