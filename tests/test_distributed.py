"""Data-parallel training: torchrun with two CPU processes (gloo) keeps both ranks' models identical."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import smooth_image
from PIL import Image
from safetensors.torch import load_file
from test_train import TINY_OVERRIDES

from raqcodec.nn.raq import RAQModel
from raqcodec.train import load_recipe

pytestmark = pytest.mark.slow

STEPS = 6
# The tiny recipe of the single-process tests, with more held-out images and a checkpoint mid-run.
OVERRIDES = {**TINY_OVERRIDES, "train.steps": STEPS, "train.checkpoint_every": 3, "train.holdout_every": 4}

# Runs under torchrun: every rank trains, records its first batch, and saves the weights it ends with.
WORKER = f"""
import os, sys
from pathlib import Path
import torch
from safetensors.torch import save_file
from raqcodec.train import build_sources, load_recipe, train

torch.set_num_threads(1)
rank = int(os.environ["RANK"])
photos, run, out = map(Path, sys.argv[1:4])
recipe = load_recipe("kodak-default", {OVERRIDES!r})
source, validation = build_sources(recipe, [photos])
draw = source.batch
def first_batch_recorded(size, generator):
    x = draw(size, generator)
    target = out / f"batch{{rank}}.safetensors"
    if not target.exists():
        save_file({{"x": x.contiguous()}}, str(target))
    return x
source.batch = first_batch_recorded
result = train(recipe, source, run, validation=validation, show_progress=False)
save_file({{k: v.contiguous() for k, v in result.model.state_dict().items()}}, str(out / f"rank{{rank}}.safetensors"))
"""


def test_two_cpu_processes_hold_identical_weights(tmp_path: Path) -> None:
    photos, run = tmp_path / "photos", tmp_path / "run"
    photos.mkdir()
    for i in range(8):
        Image.fromarray(smooth_image(48, 64, seed=i)).save(photos / f"{i}.png")
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER, encoding="utf-8")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(worker),
            str(photos),
            str(run),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    rank0, rank1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), f"{name} differs between ranks"
    # The ranks trained on different batches (otherwise identical weights would prove nothing) ...
    x0 = load_file(str(tmp_path / "batch0.safetensors"))["x"]
    x1 = load_file(str(tmp_path / "batch1.safetensors"))["x"]
    assert not torch.equal(x0, x1)
    # ... and training moved the weights away from rank 0's initialisation, which DDP broadcast.
    recipe = load_recipe("kodak-default", OVERRIDES)
    torch.manual_seed(recipe.train.seed)
    start = RAQModel(recipe.model).state_dict()
    assert not torch.equal(start["decoder.head.weight"], rank0["decoder.head.weight"])

    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))  # rank 0 alone logs
    checkpoint = load_file(str(sorted(run.glob("step-*.safetensors"))[-1]))
    assert "rng.data" in checkpoint and "rng.data.r1" in checkpoint  # every rank's RNG, for exact resume
