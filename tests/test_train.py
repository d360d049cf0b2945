"""Training: recipes, sampling of K~, exact resume from checkpoints, export to a loadable model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import smooth_image
from PIL import Image

from raqcodec.model.loaded import CodecModel
from raqcodec.nn.config import ModelConfig
from raqcodec.nn.raq import RAQModel
from raqcodec.train import build_sources, builtin_recipes, load_recipe, train
from raqcodec.train.export import export_run
from raqcodec.train.state import latest_checkpoint, load_training_state
from raqcodec.train.trainer import draw_codebook_size, learning_rate

TINY_OVERRIDES = {
    "model.channels": 16,
    "model.res_channels": 8,
    "model.res_blocks": 1,
    "model.latent_dim": 8,
    "model.codebook_size": 16,
    "model.k_min": 4,
    "model.k_max": 64,
    "train.batch_size": 2,
    "train.crop": 32,
    "train.steps": 6,
    "train.checkpoint_every": 2,
    "train.validate_every": 3,
    "train.validation_sizes": [4, 16, 64],
    "train.validation_crop": 32,
    "train.holdout_every": 3,
    "train.warmup_steps": 2,
}


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(smooth_image(48, 64, seed=i)).save(folder / f"{i}.png")
    return folder


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_builtin_recipes_load() -> None:
    assert {"kodak-default", "paper-cifar10"} <= set(builtin_recipes())
    paper = load_recipe("paper-cifar10")
    assert paper.train.k_sampling == "uniform" and paper.model.codebook_size == 128
    assert (paper.model.k_min, paper.model.k_max) == (8, 1024)
    with pytest.raises(ValueError, match="unknown recipe"):
        load_recipe("nope")
    with pytest.raises(ValueError):
        load_recipe("kodak-default", {"train.bogus": 1})
    with pytest.raises(ValueError, match="train.mode"):
        load_recipe("kodak-default", {"train.mode": "joint"})
    with pytest.raises(ValueError, match="k_sampling"):
        load_recipe("kodak-default", {"train.k_sampling": "loguniform"})


def test_codebook_size_draws_cover_the_range() -> None:
    expected_small = {"uniform": (0.03, 0.09), "log-uniform": (0.35, 0.5), "mixed": (0.19, 0.29)}
    for sampling, (lo, hi) in expected_small.items():
        recipe = load_recipe("kodak-default", {"train.k_sampling": sampling})
        g = torch.Generator().manual_seed(0)
        draws = [draw_codebook_size(recipe, g) for _ in range(4000)]
        assert min(draws) == recipe.model.k_min and max(draws) >= recipe.model.k_max - 40
        assert max(draws) <= recipe.model.k_max
        small = sum(d <= 64 for d in draws) / len(draws)
        assert lo < small < hi, (sampling, small)


def test_learning_rate_schedule() -> None:
    recipe = load_recipe("kodak-default", {"train.steps": 100, "train.warmup_steps": 10})
    assert learning_rate(recipe, 0) == pytest.approx(recipe.train.lr / 10)
    assert learning_rate(recipe, 10) == pytest.approx(recipe.train.lr)
    assert learning_rate(recipe, 100) == pytest.approx(recipe.train.lr * recipe.train.min_lr_ratio)


def test_resume_continues_exactly(photos: Path, tmp_path: Path) -> None:
    recipe = load_recipe("kodak-default", TINY_OVERRIDES)
    source, validation = build_sources(recipe, [photos])
    assert validation is not None and validation.shape[1:] == (3, 32, 32)

    straight = tmp_path / "straight"
    train(recipe, source, straight, validation=validation, show_progress=False)
    interrupted = tmp_path / "interrupted"
    first = train(recipe, source, interrupted, validation=validation, max_steps=4, show_progress=False)
    assert first.step == 4
    second = train(recipe, source, interrupted, validation=validation, show_progress=False)
    assert second.step == 6

    a, b = _records(straight), _records(interrupted)
    assert [r["step"] for r in b] == list(range(1, 7))
    for ra, rb in zip(a, b):
        assert {k: v for k, v in ra.items() if k != "seconds"} == {k: v for k, v in rb.items() if k != "seconds"}
    assert any("psnr_k16" in r for r in a)

    wa, wb = RAQModel(recipe.model), RAQModel(recipe.model)
    load_training_state(latest_checkpoint(straight), wa, None, None)
    load_training_state(latest_checkpoint(interrupted), wb, None, None)
    for (name, ta), tb in zip(wa.state_dict().items(), wb.state_dict().values()):
        assert torch.equal(ta, tb), name


def test_export_makes_a_loadable_model(photos: Path, tmp_path: Path) -> None:
    recipe = load_recipe("kodak-default", {**TINY_OVERRIDES, "train.steps": 2})
    source, _ = build_sources(recipe, [photos])
    run = tmp_path / "run"
    train(recipe, source, run, show_progress=False)
    card = export_run(run, "mini", tmp_path / "models", [photos], "test export")
    model = CodecModel.load(tmp_path / "models" / "mini.safetensors")
    assert model.fingerprint == card["fingerprint"]
    assert card["k_range"] == [4, 64] and card["training"]["steps"] == 2
    assert model.sequence.shape == (64, 8)
    saved = json.loads((tmp_path / "models" / "mini.json").read_text())
    assert saved["fingerprint"] == card["fingerprint"]


def test_warm_start_grows_a_model_without_changing_what_it_computes(tmp_path: Path) -> None:
    from conftest import TINY, make_tiny_model

    from raqcodec.model.files import read_model_file
    from raqcodec.nn.autoencoder import Decoder
    from raqcodec.train.warmstart import warm_start

    source = read_model_file(make_tiny_model(tmp_path))
    grown_cfg = ModelConfig.from_dict({**TINY.to_dict(), "decoder_res_blocks": 3, "k_min": 2, "k_max": 128})
    grown = RAQModel(grown_cfg)
    names = warm_start(grown, str(tmp_path / "tiny.safetensors"), latents_per_batch=512)
    assert "adapter.step_embedding" in names and any(n.startswith("decoder.blocks.2.") for n in names)

    t = source.tensors
    assert torch.equal(grown.encoder.stem.weight, t["encoder.stem.weight"])
    assert torch.equal(grown.adapter.step_embedding[:64], t["adapter.step_embedding"])
    assert torch.equal(grown.codebook.embedding, t["codebook.embedding"])
    # The EMA restarts at steady state: an update with the codebook's own vectors leaves it in place.
    assert torch.allclose(grown.codebook.cluster_size, torch.full((TINY.codebook_size,), 512 / TINY.codebook_size))
    assert torch.allclose(grown.codebook.embedding_sum / grown.codebook.cluster_size[:, None], grown.codebook.embedding)
    original = Decoder(TINY)
    original.load_state_dict({k[len("decoder.") :]: v for k, v in t.items() if k.startswith("decoder.")})
    z = torch.randn(2, TINY.latent_dim, 5, 6)
    with torch.no_grad():
        assert torch.allclose(grown.decoder(z), original(z), atol=1e-6)  # new blocks start as identities
        # The first 64 adapted vectors only depend on the copied weights and embeddings.
        book = grown.adapter.generate(grown.codebook.embedding)
        small = RAQModel(TINY)
        small.load_state_dict({k: v for k, v in t.items() if not k.startswith("frozen.")}, strict=False)
        assert torch.allclose(book[:64], small.adapter.generate(small.codebook.embedding), atol=1e-6)

    wider = RAQModel(ModelConfig.from_dict({**TINY.to_dict(), "channels": 24}))
    with pytest.raises(ValueError, match="warm start"):
        warm_start(wider, str(tmp_path / "tiny.safetensors"), latents_per_batch=512)


def test_fixed_mode_trains_the_base_path_and_exports_a_one_size_model(photos: Path, tmp_path: Path) -> None:
    import raqcodec

    recipe = load_recipe("kodak-default", {**TINY_OVERRIDES, "train.mode": "fixed", "train.steps": 3})
    source, _ = build_sources(recipe, [photos])
    result = train(recipe, source, tmp_path / "run", show_progress=False)
    records = _records(tmp_path / "run")
    assert all(r["k"] is None and "mse_adapted" not in r for r in records)
    torch.manual_seed(recipe.train.seed)
    fresh = RAQModel(recipe.model)  # the adapter is not trained in fixed mode
    assert torch.equal(result.model.adapter.step_embedding, fresh.adapter.step_embedding)

    card = export_run(tmp_path / "run", "fixed16", tmp_path / "models", [photos], "fixed-rate test")
    assert card["k_range"] == [16, 16]
    model = CodecModel.load(tmp_path / "models" / "fixed16.safetensors")
    base = torch.round(model.base_codebook.double() * 2.0**model.act_frac_bits).long()
    assert torch.equal(model.sequence, base)  # its one codebook is the base codebook
    image = Image.fromarray(smooth_image(32, 48, seed=9))
    data = raqcodec.encode(image, codebook_size=16, model=model)
    assert raqcodec.decode(data, model=model).size == (48, 32)
