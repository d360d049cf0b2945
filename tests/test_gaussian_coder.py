"""The refinement stage's symbol coder: frozen integer tables, escapes, and the exact latent decoder path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raqcodec.gaussian_coder import PRECISION, GaussianTables, SymbolStreamError, freeze_tables, scale_ladder


@pytest.fixture(scope="module")
def tables() -> GaussianTables:
    return GaussianTables(*freeze_tables())


def test_tables_are_integer_and_sum_to_precision() -> None:
    tails, freqs = freeze_tables()
    assert freqs.dtype == np.int32 and tails.dtype == np.int32
    for tail, row in zip(tails, freqs):
        used = row[: 2 * tail + 3]
        assert used.min() >= 1 and int(used.sum()) == 1 << PRECISION
        assert np.all(row[2 * tail + 3 :] == 0)
        # unimodal around symbol 0 (index tail + 1), symmetric up to the remainder given to 0
        assert int(np.argmax(used)) == tail + 1
        assert np.array_equal(used[1 : tail + 1], used[tail + 2 : 2 * tail + 2][::-1])


def test_round_trip_with_escapes_matches_ideal_bits(tables: GaussianTables) -> None:
    rng = np.random.default_rng(1)
    table = rng.integers(0, 40, 50_000)
    symbols = np.round(rng.normal(0, scale_ladder()[table])).astype(np.int64)
    symbols[:6] = [1000, -5000, 2**20, -(2**20), 0, 7]  # far beyond every tail: escapes
    data = tables.encode(symbols, table)
    assert np.array_equal(tables.decode(data, table), symbols)
    ideal = tables.ideal_bits(symbols, table)
    assert ideal <= len(data) * 8 <= ideal + 64  # rANS spends the information plus its flush


def test_decoding_with_other_tables_or_damage_is_not_silent(tables: GaussianTables) -> None:
    rng = np.random.default_rng(2)
    table = rng.integers(10, 30, 4096)
    symbols = np.round(rng.normal(0, scale_ladder()[table])).astype(np.int64)
    data = tables.encode(symbols, table)
    assert not np.array_equal(tables.decode(data, np.full_like(table, 5)), symbols)
    with pytest.raises(SymbolStreamError):
        tables.decode(data[:-1], table)
    with pytest.raises(ValueError):
        tables.encode(symbols, np.full_like(table, 64))


def test_tables_from_a_file_are_checked() -> None:
    tails, freqs = freeze_tables()
    bad = freqs.copy()
    bad[3, 0] += 1
    with pytest.raises(ValueError, match="2\\^16"):
        GaussianTables(tails, bad)
    with pytest.raises(ValueError):
        GaussianTables(tails[:-1], freqs)


def test_exact_decoder_latent_path_equals_codeword_path() -> None:
    from raqcodec.registry import load

    model = load("raq-photo")
    book = model.codebook("seq2seq", 64).to(torch.float64)
    indices = torch.from_numpy(np.random.default_rng(3).integers(0, 64, (12, 17)))
    latents = book[indices].permute(2, 0, 1).contiguous()
    assert torch.equal(model.decoder.decode_latents(latents), model.decoder(book, indices))


def test_exact_refinement_round_trip_on_a_random_stage() -> None:
    from raqcodec.nn.config import ModelConfig
    from raqcodec.nn.stages import ScalarRefinement
    from raqcodec.refinement import GROUP_CHANNELS, STEP_LEVELS, ExactRefinement, freeze

    torch.manual_seed(4)
    stage = ScalarRefinement(ModelConfig(), STEP_LEVELS, hidden=16)
    for p in stage.prior.parameters():
        torch.nn.init.normal_(p, std=0.05)
    frac = 16
    exact = ExactRefinement(stage.eval(), {**freeze(stage, frac)}, frac)
    q1 = torch.round(torch.randn(64, 9, 11, dtype=torch.float64) * 0.3 * 2**frac)
    prior = exact.prior(q1)
    assert torch.equal(prior.mean, torch.round(prior.mean))  # integers at 2^-F
    z = (q1 / 2**frac + torch.randn(64, 9, 11, dtype=torch.float64) * 0.1).float()
    level, groups = 10, 3
    symbols = exact.quantize(z, q1, prior, level)
    sections = exact.encode_groups(symbols, prior, level, groups)
    assert len(sections) == groups
    decoded = exact.decode_groups(sections, prior, level)
    kept = groups * GROUP_CHANNELS
    assert torch.equal(decoded[:kept], symbols[:kept]) and not decoded[kept:].any()
    y = exact.reconstruct(q1, prior, decoded, level, kept)
    expected = q1 + prior.mean
    expected[:kept] += symbols[:kept].double() * exact.steps[level][:kept, None, None].double()
    assert torch.equal(y, expected)
    # the refined latents are within half a step of the target in the refined channels
    error = (z.double() * 2**frac - y)[:kept].abs() / exact.steps[level][:kept, None, None]
    assert float(error.max()) <= 0.5 + 1e-9


def test_conditioned_exact_decoder_follows_its_float_twin() -> None:
    from raqcodec.exact import ExactDecoder, calibrate_act_frac_bits, decoder_weight_bits
    from raqcodec.nn.autoencoder import Decoder
    from raqcodec.nn.config import ModelConfig

    torch.manual_seed(5)
    decoder = Decoder(ModelConfig(decoder_conditions=4)).eval()
    with torch.no_grad():
        decoder.level_bias.weight.normal_(0, 0.2)  # type: ignore[union-attr]
        decoder.group_bias.weight.normal_(0, 0.2)  # type: ignore[union-attr]
    z = torch.randn(1, 64, 6, 7) * 0.3
    frac = calibrate_act_frac_bits(decoder, z)
    exact = ExactDecoder(decoder, frac, decoder_weight_bits(decoder))
    latents = torch.round(z[0].double() * 2**frac)
    outputs = []
    for level, groups in ((0, 0), (3, 8), (4, 2)):
        with torch.no_grad():
            float_pixels = decoder(latents[None].float() / 2**frac, torch.tensor([level]), torch.tensor([groups]))
        expected = (float_pixels[0].clamp(0, 1) * 255).round()
        got = exact.decode_latents(latents, level, groups).double()
        assert float((got - expected).abs().max()) <= 1.0
        outputs.append(got)
    assert not torch.equal(outputs[0], outputs[1])  # the condition changes the image
    with pytest.raises(ValueError, match="out of range"):
        exact.decode_latents(latents, 5, 0)
