"""The residual stage (format 3): exact integer reconstruction, section coding, bounds, contexts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raqcodec.model.residual import (
    ACTIVITY_CLASSES,
    BASIS_BITS,
    COEFFICIENTS,
    GROUPS,
    LEVELS,
    MAX_SYMBOL,
    RD_LAGRANGIAN,
    STEP_BITS,
    Coded,
    ResidualError,
    ResidualStage,
    activity,
    coefficients_in,
    freeze,
    from_blocks,
    group_columns,
    layer_caps_tensor,
    pad_to_blocks,
    to_blocks,
)
from raqcodec.ratecontrol.residual import squared_difference


@pytest.fixture(scope="module")
def stage() -> ResidualStage:
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(COEFFICIENTS, COEFFICIENTS)))
    scales = np.exp(rng.uniform(-1, 4, size=(ACTIVITY_CLASSES, COEFFICIENTS)))
    return ResidualStage(freeze(q.T, scales))


@pytest.fixture(scope="module")
def layered(stage: ResidualStage) -> ResidualStage:
    """The same stage with layer caps: for a level difference d, table index 2 d (nonzero) or d (zero)."""
    tensors = freeze(np.eye(COEFFICIENTS), np.ones((ACTIVITY_CLASSES, COEFFICIENTS)))
    tensors = {k: v for k, v in tensors.items() if k != "residual.basis"}
    caps = np.stack([np.arange(LEVELS), 2 * np.arange(LEVELS)]).clip(max=stage.tables.levels - 1)
    return ResidualStage(
        {"residual.basis": torch.from_numpy(stage.basis.numpy().astype(np.int32)), **tensors, **layer_caps_tensor(caps)}
    )


def _image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_blocks_round_trip_and_padding() -> None:
    img = _image(20, 28, 1)
    padded = pad_to_blocks(img)
    assert padded.shape == (24, 32, 3) and np.array_equal(padded[:20, :28], img)
    assert np.array_equal(padded[23], padded[19]) and np.array_equal(padded[:, 31], padded[:, 27])
    assert np.array_equal(from_blocks(to_blocks(padded), 24, 32), padded)


def test_reconstruction_is_the_integer_formula(stage: ResidualStage) -> None:
    base = pad_to_blocks(_image(24, 40, 2))
    rng = np.random.default_rng(3)
    symbols = rng.integers(-MAX_SYMBOL, MAX_SYMBOL + 1, (15, COEFFICIENTS))
    level = 0  # the largest step: the largest products the bound allows
    got = stage.reconstruct(base, symbols, level)
    # reference in Python integers (object arrays): no float anywhere
    values = symbols.astype(object) * int(stage.steps[level])
    basis = stage.basis.numpy().astype(np.int64).astype(object)
    residual = values.dot(basis)
    shift = BASIS_BITS + STEP_BITS
    pixels = (residual + (1 << (shift - 1))) // (1 << shift)
    expected = np.clip(base.astype(object) + from_blocks(pixels, 24, 40), 0, 255).astype(np.uint8)
    assert np.array_equal(got, expected)


def test_four_layers_at_the_bound_are_the_integer_formula(stage: ResidualStage) -> None:
    base = pad_to_blocks(_image(24, 40, 4))
    rng = np.random.default_rng(5)
    coded = Coded.nothing(15)
    for level in range(4):  # the four largest steps: the largest sums the format allows
        symbols = rng.choice([-MAX_SYMBOL, MAX_SYMBOL], (15, COEFFICIENTS))
        coded = coded.add(symbols, level, GROUPS, int(stage.steps[level]))
    assert np.abs(coded.values).max() < 1 << 24
    got = stage.reconstruct_values(base, coded.values)
    basis = stage.basis.numpy().astype(np.int64).astype(object)
    residual = coded.values.astype(object).dot(basis)
    shift = BASIS_BITS + STEP_BITS
    pixels = (residual + (1 << (shift - 1))) // (1 << shift)
    expected = np.clip(base.astype(object) + from_blocks(pixels, 24, 40), 0, 255).astype(np.uint8)
    assert np.array_equal(got, expected)
    with pytest.raises(ResidualError, match="out of range"):
        stage.reconstruct_values(base, np.full((15, COEFFICIENTS), 1 << 24))


def test_later_layers_use_capped_tables_and_round_trip(layered: ResidualStage) -> None:
    rng = np.random.default_rng(6)
    classes = rng.integers(0, ACTIVITY_CLASSES, 30)
    coefficients = rng.laplace(0, 20, (30, COEFFICIENTS))
    first = layered.quantize(coefficients, 4, classes)
    coded = Coded.nothing(30).add(first, 4, 3, int(layered.steps[4]))  # three groups coded
    tables = layered.tables_for(classes, 9, coded)
    uncapped = layered.tables_for(classes, 9)
    covered = slice(0, coefficients_in(3))
    nonzero = first[:, covered] != 0
    expected = np.minimum(uncapped[:, covered], np.where(nonzero, 10, 5))  # caps of difference 5
    assert np.array_equal(tables[:, covered], expected)
    assert np.array_equal(tables[:, coefficients_in(3) :], uncapped[:, coefficients_in(3) :])
    rest = coefficients - coded.values * 2.0**-STEP_BITS
    second = layered.quantize(rest, 9, classes, coded=coded)
    sections = layered.encode_groups(first, classes, 4, 3) + layered.encode_groups(second, classes, 9, 5, coded)
    decoded, (got_first, got_second) = layered.decode_layers(sections, [(4, 3), (9, 5)], classes)
    assert np.array_equal(got_first[:, covered], first[:, covered]) and not got_first[:, covered.stop :].any()
    assert np.array_equal(got_second[:, : coefficients_in(5)], second[:, : coefficients_in(5)])
    assert np.array_equal(decoded.values, coded.add(second, 9, 5, int(layered.steps[9])).values)
    with pytest.raises(ResidualError, match="not finer"):
        layered.tables_for(classes, 4, coded)


def test_group_by_group_quantization_is_the_whole_layer_s(layered: ResidualStage) -> None:
    """Rate control quantizes a layer group by group and stops at the first that does not fit: each
    group's symbols and bits must be what quantizing the whole layer gives, later layers included."""
    rng = np.random.default_rng(8)
    classes = rng.integers(0, ACTIVITY_CLASSES, 25)
    coefficients = rng.laplace(0, 20, (25, COEFFICIENTS))
    first = layered.quantize(coefficients, 4, classes)
    coded = Coded.nothing(25).add(first, 4, 6, int(layered.steps[4]))
    rest = coefficients - coded.values * 2.0**-STEP_BITS
    for values, level, earlier in ((coefficients, 4, None), (rest, 11, coded)):
        for lagrangian in (RD_LAGRANGIAN, 4 * RD_LAGRANGIAN):
            whole = layered.quantize(values, level, classes, lagrangian, earlier)
            bits = layered.group_bits(whole, classes, level, earlier)
            for g in range(GROUPS):
                symbols, group_bits = layered.quantize_group(values, g, level, classes, lagrangian, earlier)
                assert np.array_equal(symbols, whole[:, group_columns(g)])
                assert group_bits == pytest.approx(bits[g], rel=1e-12)


def test_a_stage_without_caps_codes_one_layer(stage: ResidualStage) -> None:
    coded = Coded.nothing(2).add(np.ones((2, COEFFICIENTS), dtype=np.int64), 3, 1, int(stage.steps[3]))
    with pytest.raises(ResidualError, match="one layer"):
        stage.tables_for(np.zeros(2, dtype=np.int64), 6, coded)


def test_rd_quantization_never_costs_more_than_the_dead_zone(stage: ResidualStage) -> None:
    rng = np.random.default_rng(7)
    classes = rng.integers(0, ACTIVITY_CLASSES, 40)
    coefficients = rng.laplace(0, 15, (40, COEFFICIENTS))
    for level in (0, 8, 16):
        step = stage.steps[level] * 2.0**-STEP_BITS
        tables = stage.tables_for(classes, level)

        def cost(symbols: np.ndarray, step: float = step, tables: np.ndarray = tables) -> float:
            error = (np.abs(coefficients) / step - np.abs(symbols)) ** 2
            return float(np.sum(error + RD_LAGRANGIAN * stage.tables.symbol_bits(symbols, tables)))

        chosen = stage.quantize(coefficients, level, classes)
        assert cost(chosen) <= cost(stage.quantize(coefficients, level)) + 1e-6
        assert np.all((chosen == 0) | (np.sign(chosen) == np.sign(coefficients)))


def test_sections_round_trip_and_trim(stage: ResidualStage) -> None:
    base = pad_to_blocks(_image(32, 48, 4))
    target = pad_to_blocks(_image(32, 48, 5))
    classes = stage.classes(base)
    coefficients = stage.coefficients(target, base)
    level = 14
    symbols = stage.quantize(coefficients, level)
    sections = stage.encode_groups(symbols, classes, level, GROUPS)
    assert np.array_equal(stage.decode_groups(sections, classes, level), symbols)
    kept = stage.decode_groups(sections[:3], classes, level)
    assert np.array_equal(kept[:, : coefficients_in(3)], symbols[:, : coefficients_in(3)])
    assert not kept[:, coefficients_in(3) :].any()
    # estimates follow the real sizes
    estimated = stage.group_bits(symbols, classes, level)
    real = np.array([8 * len(s) for s in sections])
    assert np.all(np.abs(real - estimated) <= 64)


def test_quantization_error_is_the_pixel_error(stage: ResidualStage) -> None:
    base = pad_to_blocks(_image(16, 16, 6))
    target = np.clip(base.astype(int) + np.random.default_rng(7).integers(-20, 21, base.shape), 0, 255).astype(np.uint8)
    coefficients = stage.coefficients(target, base)
    level = 20
    symbols = stage.quantize(coefficients, level)
    predicted = stage.squared_error(coefficients, symbols, level, GROUPS)
    decoded = stage.reconstruct(base, symbols, level).astype(float)
    actual = float(np.sum((decoded - target) ** 2))
    assert abs(actual - predicted) <= 0.15 * predicted + 0.25 * target.size  # rounding to integers only


def test_corrupt_sections_and_symbol_bound(stage: ResidualStage) -> None:
    base = pad_to_blocks(_image(16, 16, 8))
    classes = stage.classes(base)
    symbols = np.zeros((4, COEFFICIENTS), dtype=np.int64)
    symbols[0, 0] = MAX_SYMBOL + 1
    with pytest.raises(ValueError, match="within"):
        stage.encode_groups(symbols, classes, 3, 1)
    good = stage.encode_groups(np.zeros((4, COEFFICIENTS), dtype=np.int64), classes, 3, 1)
    with pytest.raises(ResidualError, match="corrupt"):
        stage.decode_groups([good[0][:-1]], classes, 3)
    # a stream whose escape decodes beyond the bound is refused, not reconstructed
    big = np.zeros((4, COEFFICIENTS), dtype=np.int64)
    big[1, 0] = MAX_SYMBOL
    section = stage.tables.encode(
        (big[:, : coefficients_in(1)] * 2).T, stage.tables_for(classes, 3)[:, : coefficients_in(1)].T
    )
    with pytest.raises(ResidualError, match="beyond"):
        stage.decode_groups([section], classes, 3)


def test_activity_is_integer_and_classes_are_monotone(stage: ResidualStage) -> None:
    flat = np.full((8, 16, 3), 100, dtype=np.uint8)
    assert activity(flat).tolist() == [0, 0]
    ramp = np.tile((np.arange(16, dtype=np.uint8) * 3)[None, :, None], (8, 1, 3))
    a = activity(ramp)
    assert a.dtype.kind == "i" and a[0] == 8 * 8 * 9 and a[1] == 8 * 7 * 9  # the last column repeats
    steps = [
        int(stage.classes(np.tile((np.arange(8, dtype=np.uint8) * k)[None, :, None], (8, 1, 3)))[0])
        for k in range(0, 32, 2)
    ]
    assert steps == sorted(steps) and steps[0] == 0 and steps[-1] > steps[1]


def test_a_sample_of_blocks_is_those_blocks_of_the_whole(stage: ResidualStage, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    for h, w in ((24, 40), (8, 8), (64, 48)):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        image[: h // 2] = image[: h // 2] // 32 * 32  # flat runs too, and detail across block edges
        blocks = (h // 8) * (w // 8)
        for which in (np.arange(0, blocks, 3), np.array([blocks - 1, 0]), np.arange(blocks)):
            assert np.array_equal(to_blocks(image, which), to_blocks(image)[which])
            assert np.array_equal(activity(image, which), activity(image)[which])  # edge blocks included
            assert np.array_equal(stage.classes(image, which), stage.classes(image)[which])
    other = rng.integers(0, 256, image.shape, dtype=np.uint8)
    exact = int(np.sum((image.astype(np.int64) - other) ** 2))
    assert squared_difference(image, other) == exact and squared_difference(image, image) == 0
    monkeypatch.setattr("raqcodec.ratecontrol.residual.SQUARED_DIFFERENCE_ROWS", 5)  # stripes, a short last one
    assert squared_difference(image, other) == exact


def test_model_tensors_are_checked() -> None:
    tensors = freeze(np.eye(COEFFICIENTS), np.ones((ACTIVITY_CLASSES, COEFFICIENTS)))
    bad = dict(tensors)
    bad["residual.steps"] = torch.zeros_like(tensors["residual.steps"])
    with pytest.raises(ValueError, match="out of range"):
        ResidualStage(bad)
    missing = {k: v for k, v in tensors.items() if k != "residual.basis"}
    with pytest.raises(ValueError, match="incomplete"):
        ResidualStage(missing)
    for caps in (np.zeros((2, LEVELS - 1)), np.full((2, LEVELS), -1), np.full((2, LEVELS), 10_000)):
        with pytest.raises(ValueError, match="out of range|wrong shapes"):
            ResidualStage({**tensors, **layer_caps_tensor(caps)})


def test_rate_control_on_a_block_sample_stays_within_budget_and_close(stage: ResidualStage) -> None:
    from conftest import smooth_image

    from raqcodec.ratecontrol.residual import BaseCandidate, search

    target = smooth_image(192, 256, seed=3)  # 768 blocks
    rng = np.random.default_rng(4)
    base = np.clip(target.astype(np.int64) + rng.integers(-12, 13, target.shape), 0, 255).astype(np.uint8)
    candidate = BaseCandidate(4, np.zeros(48 * 64, dtype=np.int32), 8.0 * 600, b"i" * 600)
    for budget in (1500, 4000, 12000):
        choices = [
            search(stage, target, [candidate], budget, lambda i, s: b"", lambda i, s: base, lambda i, s: base, False, n)
            for n in (None, 192)
        ]
        full, sampled = choices
        assert full is not None and sampled is not None
        assert sampled.bytes() <= budget and full.bytes() <= budget
        assert sampled.layers, "the sample found a coding that fits"
        assert sampled.error <= 1.1 * full.error  # the sample's choice is nearly as close
