"""Fine-tuning one part of a model (raqcodec.train.finetune): resumes, and exports a model in which only that
part changed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from conftest import make_tiny_model, smooth_image
from safetensors.torch import load_file

import raqcodec
from raqcodec.model.files import read_model_file
from raqcodec.train import finetune


def _model_and_photos(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny model file and a folder of 6 small photos to fine-tune it on."""
    base = make_tiny_model(tmp_path, "base")
    data = tmp_path / "photos"
    data.mkdir()
    for i in range(6):
        PIL.Image.fromarray(smooth_image(64, 80, seed=i)).save(data / f"p{i}.png")
    return base, data


def test_fine_tune_resumes_and_exports_a_model_with_the_same_grids(tmp_path: Path) -> None:
    base, data = _model_and_photos(tmp_path)
    run = tmp_path / "run"
    common = [
        "--part",
        "decoder",
        "--base",
        str(base),
        "--data",
        str(data),
        "--out",
        str(run),
        "--crop",
        "32",
        "--batch",
        "2",
        "--validation-crop",
        "32",
    ]
    finetune.main([*common, "--steps", "6", "--minutes", "0.0001", "--validate-every", "2", "--lr", "1e-3"])
    first = int(load_file(str(run / "state.safetensors"))["step"])
    assert 1 <= first < 6  # stopped by the time limit, with a checkpoint
    finetune.main([*common, "--steps", "6", "--validate-every", "2", "--lr", "1e-3"])
    assert int(load_file(str(run / "state.safetensors"))["step"]) == 6
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert log[0]["step"] == 0 and log[-1]["step"] == 6 and set(log[-1]["validation"]) == {"k16", "k64"}

    exported = tmp_path / "tuned.safetensors"
    finetune.main([*common, "--export", str(exported)])
    old, new = read_model_file(base).tensors, read_model_file(exported).tensors
    assert set(old) == set(new)
    for name in old:  # only the decoder changed: the same grids, codebooks and context model
        same = torch.equal(old[name], new[name])
        assert same != name.startswith("decoder."), name
    image = smooth_image(40, 48, seed=9)
    plain = raqcodec.encode(image, codebook_size=32, model=str(base), refine=0)
    grid_old = raqcodec.inspect(plain, model=str(base))["indices"]
    tuned = raqcodec.encode(image, codebook_size=32, model=str(exported), refine=0)
    assert np.array_equal(raqcodec.inspect(tuned, model=str(exported))["indices"], grid_old)
    assert np.asarray(raqcodec.decode(tuned, model=str(exported))).shape == image.shape


def test_encoder_fine_tune_changes_only_the_encoder(tmp_path: Path) -> None:
    base, data = _model_and_photos(tmp_path)
    run = tmp_path / "run"
    common = ["--part", "encoder", "--base", str(base), "--data", str(data), "--out", str(run), "--crop", "32"]
    common += ["--batch", "2", "--validation-crop", "32"]
    finetune.main([*common, "--steps", "4", "--validate-every", "2", "--lr", "1e-2"])
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 4 and log[-1]["validation"] != log[0]["validation"]
    assert set(log[-1]["validation"]) == {"k16", "k64", "bpp16", "bpp64"}  # the grids' bits are validated too

    exported = tmp_path / "tuned.safetensors"
    finetune.main([*common, "--export", str(exported)])
    old, new = read_model_file(base).tensors, read_model_file(exported).tensors
    assert set(old) == set(new)
    changed = {name for name in old if not torch.equal(old[name], new[name])}
    assert changed and all(name.startswith("encoder.") for name in changed)
    image = smooth_image(40, 48, seed=9)
    tuned = raqcodec.encode(image, codebook_size=32, model=str(exported), refine=0)
    assert np.asarray(raqcodec.decode(tuned, model=str(exported))).shape == image.shape
