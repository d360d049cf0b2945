"""The model's parts: adapters (shapes, nesting), DKM/IKM, EMA codebook, exact decoder."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import TINY

from raqcodec.model import exact
from raqcodec.nn.cluster import ClusterSettings, cluster_codebook, dkm, ikm, multiscale_mmd
from raqcodec.nn.config import ModelConfig
from raqcodec.nn.quantizer import EMACodebook, nearest_in_prefixes, nearest_indices
from raqcodec.nn.raq import RAQModel
from raqcodec.nn.seq2seq import Seq2SeqAdapter


@pytest.mark.parametrize("mode", ["reference", "paper", "none"])
def test_seq2seq_codebooks_are_nested_prefixes(mode: str) -> None:
    torch.manual_seed(0)
    adapter = Seq2SeqAdapter(dataclasses.replace(TINY, cross_forcing=mode)).eval()
    base = torch.randn(TINY.codebook_size, TINY.latent_dim)
    with torch.no_grad():
        full = adapter(base, TINY.k_max)
        short = adapter(base, 10)
    assert full.shape == (TINY.k_max, TINY.latent_dim)
    assert short.shape == (10, TINY.latent_dim)
    torch.testing.assert_close(short, full[:10], rtol=0, atol=1e-6)
    assert full.abs().max() < 1  # an LSTM output lies in (-1, 1)
    torch.testing.assert_close(adapter.generate(base), full, rtol=0, atol=1e-6)


def test_cross_forcing_feeds_base_vectors_on_odd_steps() -> None:
    adapter = Seq2SeqAdapter(TINY)
    base = torch.randn(TINY.codebook_size, TINY.latent_dim)
    inputs = adapter._teacher_inputs(base, 40)
    assert torch.equal(inputs[1], base[0]) and torch.equal(inputs[3], base[1]) and torch.equal(inputs[31], base[15])
    assert torch.equal(inputs[0], adapter.step_embedding[0]) and torch.equal(inputs[2], adapter.step_embedding[2])
    assert torch.equal(inputs[33], adapter.step_embedding[33])  # past 2K: embeddings only


def test_seq2seq_rejects_sizes_outside_range() -> None:
    adapter = Seq2SeqAdapter(TINY)
    with pytest.raises(ValueError):
        adapter(torch.randn(16, 8), TINY.k_max + 1)


def test_dkm_recovers_separated_clusters() -> None:
    torch.manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0]], dtype=torch.float64)
    points = torch.cat([centres[i] + 0.05 * torch.randn(10, 2, dtype=torch.float64) for i in range(3)])
    points = points[torch.tensor([0, 10, 20] + [i for i in range(30) if i not in (0, 10, 20)])]  # one of each first
    found = dkm(points, 3)
    assert found.shape == (3, 2)
    dist = torch.cdist(found, centres).min(1).values
    assert dist.max() < 0.1


def test_cluster_codebook_sizes_and_determinism() -> None:
    torch.manual_seed(1)
    base = torch.randn(16, 4)
    small = cluster_codebook(base, 5)
    assert small.shape == (5, 4) and small.dtype == torch.float64
    assert torch.equal(cluster_codebook(base, 16), base.double())
    settings = ClusterSettings(ikm_steps=40)
    grown = ikm(base.double(), 24, settings)
    assert grown.shape == (24, 4)
    assert torch.equal(grown, ikm(base.double(), 24, settings))  # the decoder recomputes the same codebook
    start = torch.randn(24, 4, generator=torch.Generator().manual_seed(48), dtype=torch.float64) * 0.125
    with torch.no_grad():
        before = multiscale_mmd(dkm(start, 16, settings, iterations=10), base.double(), settings.mmd_scales)
        after = multiscale_mmd(dkm(grown, 16, settings, iterations=10), base.double(), settings.mmd_scales)
    assert after < before


def test_nearest_indices_prefers_lower_index_on_ties() -> None:
    book = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    idx = nearest_indices(torch.tensor([[1.0, 0.0], [0.0, 0.9]]), book)
    assert idx.tolist() == [0, 2]


def test_nearest_in_prefixes_is_nearest_indices_of_each_prefix() -> None:
    """One product serves every prefix of a nested codebook: the same indices as a search of each prefix,
    ties to the lower index (a duplicated row later in the book never wins)."""
    torch.manual_seed(0)
    latents, book = torch.randn(3000, 16), torch.randn(300, 16)
    book[200] = book[7]  # a tie across prefixes
    latents[:5] = book[7]
    found = nearest_in_prefixes(latents, book, [300, 8, 64, 250], chunk=1000)
    assert sorted(found) == [8, 64, 250, 300]
    for size, indices in found.items():
        brute = ((latents[:, None, :] - book[None, :size, :]) ** 2).sum(-1).argmin(1)
        assert torch.equal(indices, brute) and torch.equal(indices, nearest_indices(latents, book[:size]))
    assert found[300][:5].tolist() == [7] * 5


def test_ema_codebook_moves_towards_data_and_restarts_dead_codes() -> None:
    cb = EMACodebook(4, 2, decay=0.5, eps=1e-5, dead_threshold=1.0)
    rows = torch.tensor([[1.0, 1.0]] * 50 + [[-1.0, -1.0]] * 50)
    cb.initialize_from(rows, torch.Generator().manual_seed(0))
    for _ in range(5):
        idx = nearest_indices(rows, cb.embedding)
        cb.update(rows, idx, torch.Generator().manual_seed(1))
    used = set(nearest_indices(rows, cb.embedding).tolist())
    for i in used:
        assert torch.allclose(cb.embedding[i].abs(), torch.ones(2), atol=1e-3)
    # codes that no latent picks were restarted onto data points
    assert all(torch.allclose(v.abs(), torch.ones(2), atol=1e-3) for v in cb.embedding)


def _float_and_exact(seed: int = 0) -> tuple[RAQModel, exact.ExactDecoder, torch.Tensor, int]:
    torch.manual_seed(seed)
    model = RAQModel(TINY).eval()
    latents = torch.randn(1, TINY.latent_dim, 9, 13) * 0.5
    frac = exact.calibrate_act_frac_bits(model.decoder, latents)
    dec = exact.ExactDecoder(model.decoder, frac, exact.decoder_weight_bits(model.decoder))
    return model, dec, latents, frac


def _as_codebook(ints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A latent grid (d, h, w) as a codebook of its positions and the grid of their indices."""
    d, h, w = ints.shape
    return ints.reshape(d, -1).t().contiguous(), torch.arange(h * w).view(h, w)


def test_exact_decoder_matches_float_decoder() -> None:
    model, dec, latents, frac = _float_and_exact()
    ints = torch.round(latents[0].double() * 2.0**frac)
    out = dec(*_as_codebook(ints))
    with torch.no_grad():
        ref = (model.decoder((ints * 2.0**-frac).float()[None])[0].clamp(0, 1) * 255).round()
    assert out.shape == (3, 36, 52) and out.dtype == torch.uint8
    assert (out.double() - ref.double()).abs().max() <= 1


def test_exact_decoder_independent_of_threads_and_chunking() -> None:
    model, dec, latents, frac = _float_and_exact(3)
    ints = torch.round(latents[0].double() * 2.0**frac)
    reference = dec(*_as_codebook(ints))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = dec(*_as_codebook(ints))
    finally:
        torch.set_num_threads(threads)
    one_row = exact.ExactDecoder(model.decoder, frac, exact.decoder_weight_bits(model.decoder), row_chunk_elements=64)
    chunked = one_row(*_as_codebook(ints))  # one row per matrix product
    assert torch.equal(reference, single) and torch.equal(reference, chunked)


def test_stem_table_is_the_stem_convolution_bit_for_bit() -> None:
    """Looked-up codeword products give the same integers as the 3x3 convolution of the latent grid,
    codewords used many times, unused ones and borders included."""
    model, dec, _, frac = _float_and_exact(5)
    gen = torch.Generator().manual_seed(5)
    codebook = torch.round(torch.randn(40, TINY.latent_dim, generator=gen, dtype=torch.float64) * 2.0**frac)
    indices = torch.randint(0, 30, (7, 11), generator=gen)  # codewords 30..39 unused
    conv = exact.ExactConv(model.decoder.stem, frac, exact.decoder_weight_bits(model.decoder)["stem"])
    direct = conv(codebook[indices].permute(2, 0, 1).contiguous())
    assert torch.equal(dec.stem(codebook, indices), direct)
    assert torch.equal(dec.stem(codebook, indices[2:5, 3:4]), conv(codebook[indices[2:5, 3:4]].permute(2, 0, 1)))


def test_exact_decoder_refuses_layers_it_cannot_bound() -> None:
    with pytest.raises(ValueError):
        exact.ExactConv(torch.nn.Conv2d(4, 4, 5, padding=2), 10, 10)
    with pytest.raises(ValueError):
        exact.ExactConv(torch.nn.Conv2d(1024, 4, 3, padding=1), 10, 10)  # 9216 terms > 2^13


def test_model_config_validation() -> None:
    with pytest.raises(ValueError):
        ModelConfig(k_min=10, k_max=5)
    with pytest.raises(ValueError):
        ModelConfig.from_dict({"channels": 8, "bogus": 1})
