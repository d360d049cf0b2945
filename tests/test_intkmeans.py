"""Integer k-means: exact, portable centroids for codebook sizes below a model's trained range."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import smooth_image

import raqcodec
from raqcodec.io import bitstream
from raqcodec.model.intkmeans import integer_kmeans
from raqcodec.model.loaded import CodecModel, codebook_crc


def test_worked_example() -> None:
    points = torch.tensor([[0, 0], [10, 0], [0, 10], [10, 10], [1, 1]])
    # First pass: {0, 2, 4} and {1, 3} -> floor means (0, 3) and (10, 5); the second pass keeps them.
    assert integer_kmeans(points, 2).tolist() == [[0, 3], [10, 5]]


def test_means_round_towards_minus_infinity_and_ties_go_low() -> None:
    assert integer_kmeans(torch.tensor([[-1], [-2]]), 1).tolist() == [[-2]]  # floor(-1.5) = -2
    # The middle point is equally far from both starting centroids: it joins the lower index.
    assert integer_kmeans(torch.tensor([[0], [4], [2]]), 2).tolist() == [[1], [4]]


def test_same_result_whatever_the_threads_and_input_dtype() -> None:
    rng = np.random.default_rng(0)
    points = torch.from_numpy(rng.integers(-(2**21), 2**21, size=(64, 16)))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = integer_kmeans(points, 5)
        torch.set_num_threads(2)
        two = integer_kmeans(points.to(torch.int32), 5)
    finally:
        torch.set_num_threads(threads)
    assert one.dtype == torch.int64 and torch.equal(one, two)
    assert (one.min(0).values >= points.min(0).values).all() and (one.max(0).values <= points.max(0).values).all()


def test_bounds() -> None:
    with pytest.raises(ValueError):
        integer_kmeans(torch.zeros(3, 2, dtype=torch.int64), 4)
    with pytest.raises(ValueError, match="too large"):
        integer_kmeans(torch.full((3, 2), 2**27), 2)


def test_sizes_below_the_trained_range_code_and_decode(tiny_model_path: Path) -> None:
    model = CodecModel.load(tiny_model_path)
    assert model.trained_range == (4, 64) and model.size_range == (2, 64)
    base = model.config.codebook_size  # 16: small sizes cluster the base-size codebook
    assert torch.equal(model.codebook("seq2seq", 3), integer_kmeans(model.sequence[:base], 3))
    assert torch.equal(model.codebook("seq2seq", 4), model.sequence[:4])  # trained sizes: prefixes
    image = smooth_image(40, 48, seed=2)
    for size in (2, 3):
        data = raqcodec.encode(image, codebook_size=size, model=model)
        header = bitstream.read_header(data)
        assert header.codebook_size == size and header.codebook_crc == codebook_crc(model.codebook("seq2seq", size))
        assert np.asarray(raqcodec.decode(data, model=model)).shape == (40, 48, 3)
