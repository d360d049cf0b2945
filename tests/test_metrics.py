"""raqcodec.eval.metrics: SSIM (Wang et al. 2004) checked against its defining properties and scikit-image,
PSNR and codebook perplexity on known cases. All images are generated here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import smooth_image

from raqcodec.eval.metrics import (
    batch_mse,
    gaussian_window,
    ms_ssim,
    ms_ssim_db,
    ms_ssim_min_side,
    perplexity,
    psnr,
    ssim,
)


def batch(*images: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 arrays -> (N, 3, H, W) uint8 tensor."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def noisy(image: np.ndarray, std: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(image + rng.normal(0, std, image.shape), 0, 255).round().astype(np.uint8)


def test_window_is_normalised_and_symmetric() -> None:
    w = gaussian_window(11, 1.5)
    assert w.shape == (11,)
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-15)
    assert torch.equal(w, w.flip(0))
    assert int(w.argmax()) == 5


def test_identical_images_give_one() -> None:
    images = batch(smooth_image(32, 32, seed=1), smooth_image(32, 32, seed=2))
    assert torch.allclose(ssim(images, images), torch.ones(2, dtype=torch.float64), atol=1e-12)
    flat = torch.full((2, 3, 16, 16), 77, dtype=torch.uint8)  # zero variance: still exactly 1
    assert torch.equal(ssim(flat, flat), torch.ones(2, dtype=torch.float64))


def test_uint8_and_float_inputs_agree() -> None:
    a, b = batch(smooth_image(32, 32, seed=3)), batch(noisy(smooth_image(32, 32, seed=3), 10, seed=0))
    assert torch.equal(ssim(a, b), ssim(a.float(), b.double()))


def test_symmetric_and_per_image() -> None:
    clean = [smooth_image(32, 32, seed=s) for s in range(3)]
    dirty = [noisy(im, 15, seed=s) for s, im in enumerate(clean)]
    a, b = batch(*clean), batch(*dirty)
    both = ssim(a, b)
    assert both.shape == (3,)
    assert torch.allclose(both, ssim(b, a), atol=1e-14)
    for i in range(3):  # a batch is only a loop over images
        assert float(ssim(a[i : i + 1], b[i : i + 1])[0]) == pytest.approx(float(both[i]), abs=1e-14)


def test_ssim_falls_as_noise_grows() -> None:
    clean = smooth_image(48, 48, seed=4)
    scores = [float(ssim(batch(clean), batch(noisy(clean, std, seed=7)))[0]) for std in (2, 5, 10, 20, 40, 80)]
    assert all(later < earlier for earlier, later in zip(scores, scores[1:]))
    assert 0.0 < scores[-1] < scores[0] < 1.0


def test_ssim_sees_structure_that_psnr_misses() -> None:
    """The textbook case: a uniform brightness shift keeps the structure (high SSIM) while noise of the
    same MSE destroys it (low SSIM)."""
    clean = smooth_image(48, 48, seed=5).astype(np.float64)
    shifted = clean + 8.0
    rng = np.random.default_rng(0)
    noise = rng.choice([-8.0, 8.0], size=clean.shape)
    scrambled = clean + noise
    a = batch(clean)
    assert float(psnr(batch_mse(a, batch(shifted)))[0]) == pytest.approx(
        float(psnr(batch_mse(a, batch(scrambled)))[0]), abs=1e-9
    )
    assert float(ssim(a, batch(shifted))[0]) > float(ssim(a, batch(scrambled))[0]) + 0.2


def test_bad_shapes_are_rejected() -> None:
    a = torch.zeros(1, 3, 32, 32)
    with pytest.raises(ValueError, match="shapes differ"):
        ssim(a, torch.zeros(1, 3, 32, 31))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        ssim(a[0], a[0])
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.zeros(1, 3, 10, 32), torch.zeros(1, 3, 10, 32))


@pytest.mark.parametrize("shape", [(32, 32), (40, 56), (11, 17)])
def test_matches_scikit_image(shape: tuple[int, int]) -> None:
    skimage_metrics = pytest.importorskip("skimage.metrics")
    h, w = shape
    pairs = [
        (smooth_image(h, w, seed=s), noisy(smooth_image(h, w, seed=s), std, seed=s))
        for s, std in enumerate((3, 12, 30, 60))
    ]
    pairs.append((smooth_image(h, w, seed=9), smooth_image(h, w, seed=10)))  # unrelated images
    ours = ssim(batch(*(p[0] for p in pairs)), batch(*(p[1] for p in pairs)))
    for i, (a, b) in enumerate(pairs):
        reference = skimage_metrics.structural_similarity(
            a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=-1
        )
        assert float(ours[i]) == pytest.approx(float(reference), abs=1e-4)


def test_psnr_known_values() -> None:
    a = torch.full((2, 3, 8, 8), 100, dtype=torch.uint8)
    b = a.clone()
    b[1] += 1  # every pixel off by one: MSE 1
    values = psnr(batch_mse(a, b))
    assert math.isinf(float(values[0]))
    assert float(values[1]) == pytest.approx(20 * math.log10(255), abs=1e-12)


def test_perplexity_counts_effective_codes() -> None:
    assert perplexity(torch.tensor([3, 3, 3, 3]), 16) == pytest.approx(1.0)
    assert perplexity(torch.arange(8).repeat(5), 16) == pytest.approx(8.0)
    two_to_one = torch.tensor([0, 0, 1])
    expected = math.exp(-(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)))
    assert perplexity(two_to_one, 4) == pytest.approx(expected)


@pytest.mark.parametrize("shape", [(161, 161), (176, 200), (203, 190)])  # odd sides exercise the pooling pad
def test_ms_ssim_matches_pytorch_msssim(shape: tuple[int, int]) -> None:
    from pytorch_msssim import ms_ssim as reference_ms_ssim  # a test extra: the reference implementation

    h, w = shape
    pairs = [
        (smooth_image(h, w, seed=s), noisy(smooth_image(h, w, seed=s), std, seed=s))
        for s, std in enumerate((2, 8, 25, 60))
    ]
    pairs.append((smooth_image(h, w, seed=9), smooth_image(h, w, seed=10)))
    x, y = batch(*(p[0] for p in pairs)), batch(*(p[1] for p in pairs))
    ours = ms_ssim(x, y)
    reference = reference_ms_ssim(x.double(), y.double(), data_range=255, size_average=False)
    assert ours.shape == (len(pairs),)
    assert torch.allclose(ours, reference.double(), atol=1e-4, rtol=0)
    assert float(ours[0]) > float(ours[3]) > float(ours[4])  # more noise, lower score


def test_ms_ssim_limits() -> None:
    a = batch(smooth_image(161, 170))
    assert float(ms_ssim(a, a)[0]) == pytest.approx(1.0, abs=1e-12)
    assert ms_ssim_min_side() == 161 and ms_ssim_db(1.0) == math.inf
    assert ms_ssim_db(0.99) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="at least 161x161"):
        ms_ssim(torch.zeros(1, 3, 160, 300), torch.zeros(1, 3, 160, 300))
