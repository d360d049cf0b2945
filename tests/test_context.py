"""Tests for the context model coder: coding order, exact integer frequencies, rANS agreement, corruption."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from context_reference import reference_frequencies
from rans_reference import rans_encode

from raqcodec.entropy import context as C
from raqcodec.entropy import context_coding as CC
from raqcodec.entropy.scan import (
    MEAN_SLOTS,
    NUM_PASSES,
    SLOT_OFFSETS,
    context_slots,
    pass_map,
    pass_strides,
)
from raqcodec.entropy.schedule import DEFAULT_SCHEDULE, Schedule
from raqcodec.errors import ContextError
from raqcodec.nn.context import ContextConfig, ContextNet
from raqcodec.train.context import freeze

D = 8  # latent dimension of the test codebooks


def make_context(
    seed: int = 0, components: int = 2, spread: float = 0.3, schedule: Schedule = DEFAULT_SCHEDULE
) -> C.ContextModel:
    torch.manual_seed(seed)
    net = ContextNet(ContextConfig(latent_dim=D, hidden=16, proj_dim=4, components=components))
    with torch.no_grad():  # a non-trivial head, so the mixtures differ from position to position
        net.head.weight.normal_(0, spread)
        net.pass_bias.normal_(0, 0.5)
    return C.ContextModel(freeze(net), codebook_bits=16).with_schedule(schedule)


def make_codebook(size: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(-60000, 60000, (size, D)))


def smooth_grid(h: int, w: int, size: int, seed: int = 0) -> np.ndarray:
    """Indices with spatial structure (runs and repeats), as VQ grids of photos have."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, size, (h // 4 + 1, w // 4 + 1))
    grid = np.kron(coarse, np.ones((4, 4), np.int64))[:h, :w]
    noise = rng.random((h, w)) < 0.2
    grid[noise] = rng.integers(0, size, int(noise.sum()))
    return grid


# Both ways of computing the rows: the C kernel (where it was built) and the torch path it reproduces.
KERNEL_BUILT = C._kernel is not None
_ROW_PATHS = [
    pytest.param(Schedule(kernel=False), id="torch"),
    pytest.param(
        Schedule(kernel=True),
        id="kernel",
        marks=pytest.mark.skipif(not KERNEL_BUILT, reason="C kernel not built (no compiler)"),
    ),
]


@pytest.fixture(params=_ROW_PATHS)
def row_path(request: pytest.FixtureRequest) -> Schedule:
    """The schedule that picks one way of computing the rows."""
    return request.param


# ---------------------------------------------------------------- coding order


@pytest.mark.parametrize("h,w", [(1, 1), (1, 7), (5, 1), (9, 13), (16, 16), (33, 20)])
def test_pass_map_covers_every_position_once(h: int, w: int) -> None:
    passes = pass_map(h, w)
    assert passes.shape == (h, w)
    assert passes.min() >= 0 and passes.max() < NUM_PASSES
    assert passes[0, 0] == 0  # the coarse lattice starts at the origin
    assert len(pass_strides()) == NUM_PASSES


def test_context_uses_only_decoded_neighbours() -> None:
    h, w = 21, 18
    passes = pass_map(h, w)
    grid = np.arange(h * w).reshape(h, w)  # each index names its own position
    ys, xs = np.divmod(np.arange(h * w), w)
    slots = context_slots(grid, passes, ys, xs, missing=-1)
    assert slots.shape == (h * w, len(SLOT_OFFSETS))
    for i in range(h * w):
        known = slots[i][slots[i] >= 0]
        assert (passes.ravel()[known] < passes[ys[i], xs[i]]).all()
    # the last pass sees all four direct neighbours of an inner position
    y, x = 5, 6
    assert passes[y, x] == NUM_PASSES - 1 or passes[y, x] == NUM_PASSES - 2
    assert (slots[y * w + x][:MEAN_SLOTS] >= 0).sum() >= 4


# ---------------------------------------------------------------- frequencies


@pytest.mark.parametrize("size", [2, 5, 64, 300])
def test_frequencies_are_valid_integer_tables(size: int) -> None:
    ctx, book = make_context(), make_codebook(size)
    grid = smooth_grid(12, 10, size)
    passes = pass_map(*grid.shape)
    ys, xs = np.divmod(np.arange(grid.size), grid.shape[1])
    freq = ctx.frequencies(book, context_slots(grid, passes, ys, xs, size), passes[ys, xs])
    assert freq.dtype == torch.int64 and freq.shape == (grid.size, size)
    assert (freq >= 1).all()
    assert (freq.sum(1) == 1 << C.PRECISION).all()


@pytest.mark.parametrize("components", [1, 2, 3])
@pytest.mark.parametrize("sharpness", [-64, 0, 64])
def test_frequencies_match_a_plain_implementation(components: int, sharpness: int, row_path: Schedule) -> None:
    """The optimised evaluation gives exactly the integers of the docstring's formula, computed plainly."""
    for size, spread in ((7, 2.0), (64, 0.3), (300, 1.0)):
        ctx = make_context(seed=size, components=components, spread=spread, schedule=row_path)
        book = make_codebook(size, seed=size)
        grid = smooth_grid(17, 23, size, seed=size)
        passes = pass_map(17, 23)
        ys, xs = np.divmod(np.arange(17 * 23), 23)
        slots = context_slots(grid, passes, ys, xs, size)
        ours = ctx.frequencies(book, slots, passes[ys, xs], sharpness)
        assert torch.equal(ours, reference_frequencies(ctx, book, slots, passes[ys, xs], sharpness))


def test_frequencies_do_not_depend_on_thread_count() -> None:
    ctx, book = make_context(), make_codebook(200)
    grid = smooth_grid(40, 40, 200)
    passes = pass_map(*grid.shape)
    ys, xs = np.divmod(np.arange(grid.size), grid.shape[1])
    slots = context_slots(grid, passes, ys, xs, 200)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ctx.frequencies(book, slots, passes[ys, xs])
        torch.set_num_threads(max(2, threads))
        many = ctx.frequencies(book, slots, passes[ys, xs])
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)


def test_context_changes_the_distribution() -> None:
    """Not an order-0 model in disguise: neighbours move the probability mass."""
    ctx, book = make_context(), make_codebook(32)
    passes = pass_map(8, 8)
    ys, xs = np.array([3, 3]), np.array([3, 3])
    a = ctx.frequencies(book, context_slots(np.full((8, 8), 1), passes, ys, xs, 32), passes[ys, xs])
    b = ctx.frequencies(book, context_slots(np.full((8, 8), 30), passes, ys, xs, 32), passes[ys, xs])
    assert not torch.equal(a[0], b[0])


# ---------------------------------------------------------------- rANS


@pytest.mark.parametrize("size,h,w", [(3, 7, 9), (64, 16, 12), (500, 9, 11)])
def test_payload_matches_reference_rans(size: int, h: int, w: int) -> None:
    """Independent check that constriction codes with exactly our integer frequencies."""
    ctx, book = make_context(), make_codebook(size)
    grid = smooth_grid(h, w, size)
    passes = pass_map(h, w)
    symbols, tables = [], []
    for positions in CC._passes(h, w):
        ys, xs = np.divmod(positions, w)
        freq = ctx.frequencies(book, context_slots(grid, passes, ys, xs, size), passes[ys, xs]).numpy()
        symbols += grid[ys, xs].tolist()
        tables += list(freq)
    words = np.array(rans_encode(symbols, tables, C.PRECISION), dtype=np.uint32)
    assert CC.encode_grid(ctx, book, grid, sharpness=0) == b"\0" + words.astype(">u4").tobytes()


@pytest.mark.parametrize("size,h,w", [(2, 1, 1), (2, 3, 50), (16, 24, 32), (256, 20, 20), (1024, 8, 9)])
def test_roundtrip(size: int, h: int, w: int, row_path: Schedule) -> None:
    ctx, book = make_context(schedule=row_path), make_codebook(size)
    grid = smooth_grid(h, w, size, seed=size)
    payload = CC.encode_grid(ctx, book, grid)
    assert np.array_equal(CC.decode_grid(ctx, book, payload, h, w), grid)
    sharpness = int.from_bytes(payload[:1], "big", signed=True)
    assert sharpness in CC.SHARPNESS_CANDIDATES
    bits = CC.ideal_bits(ctx, book, grid, sharpness)
    assert bits <= 8 * (len(payload) - 1) <= bits + 64


def test_roundtrip_in_small_steps() -> None:
    """Passes split into many evaluation steps code the same stream."""
    ctx, book = make_context(), make_codebook(40)
    grid = smooth_grid(30, 30, 40)
    whole = CC.encode_grid(ctx, book, grid)
    small = ctx.with_schedule(Schedule(chunk_elements=40 * 2 * 7))  # 7 positions per step
    assert CC.encode_grid(small, book, grid) == whole
    assert np.array_equal(CC.decode_grid(small, book, whole, 30, 30), grid)


# ---------------------------------------------------------------- corruption and identity


@pytest.mark.parametrize("n", [0, 1, 63, 64, 127, 128, 384, 1536, 6144, 100_000])
@pytest.mark.parametrize("size,workers", [(1024, 2), (1024, 1), (16, 2), (300, 3)])
def test_tasks_cover_a_pass_in_order_in_even_shares(n: int, size: int, workers: int) -> None:
    tasks = CC._tasks(n, size, 3, workers)
    parts = [part for task in tasks for part in task]
    if n == 0:
        assert tasks == []
        return
    assert [p.start for p in parts] == [0] + [p.stop for p in parts[:-1]] and parts[-1].stop == n
    assert all(part.stop > part.start for part in parts)
    assert all((part.stop - part.start) * 3 * size <= max(DEFAULT_SCHEDULE.chunk_elements, 3 * size) for part in parts)
    lengths = [task[-1].stop - task[0].start for task in tasks]
    assert max(lengths) - min(lengths) <= 1
    if n >= workers * DEFAULT_SCHEDULE.min_shared_task:
        assert len(tasks) >= workers  # every worker gets a share


@pytest.mark.parametrize("workers", [2, 3])
def test_coding_is_the_same_inline_and_on_the_worker_pool(workers: int) -> None:
    plain, book, grid = make_context(components=3), make_codebook(40), smooth_grid(45, 38, 40)
    runs = {}
    for n in (1, workers):
        # many tasks per pass, so the pool really interleaves them; parts of 5 positions
        ctx = plain.with_schedule(Schedule(task_positions=16, chunk_elements=3 * 40 * 5, workers=n))
        data = CC.encode_grid(ctx, book, grid)  # sharpness searched: ideal_bits on the pool too
        runs[n] = (data, CC.estimated_bits(ctx, book, grid, 16), CC.decode_grid(ctx, book, data, *grid.shape))
    assert runs[1][0] == runs[workers][0] and runs[1][1] == runs[workers][1]
    assert np.array_equal(runs[1][2], grid) and np.array_equal(runs[workers][2], grid)


def test_corrupt_payloads_raise_context_error() -> None:
    ctx, book = make_context(), make_codebook(64)
    grid = smooth_grid(16, 16, 64)
    payload = CC.encode_grid(ctx, book, grid)
    with pytest.raises(ContextError, match="1 \\+ a multiple of 4"):
        CC.decode_grid(ctx, book, payload[:-1], 16, 16)
    with pytest.raises(ContextError, match="1 \\+ a multiple of 4"):
        CC.decode_grid(ctx, book, b"", 16, 16)
    for bad in (payload[:-4], payload + b"\0\0\0\1", payload[:1], bytes([payload[0] ^ 0x20]) + payload[1:]):
        try:
            out = CC.decode_grid(ctx, book, bad, 16, 16)
        except ContextError as exc:
            assert "corrupt index section" in str(exc)
        else:
            assert out.shape == (16, 16) and out.min() >= 0 and out.max() < 64
    rng = np.random.default_rng(1)
    for _ in range(30):
        damaged = bytearray(payload)
        damaged[int(rng.integers(len(damaged)))] ^= 1 << int(rng.integers(8))
        try:
            out = CC.decode_grid(ctx, book, bytes(damaged), 16, 16)
        except ContextError:
            continue
        assert out.min() >= 0 and out.max() < 64


def test_checksum_names_the_model() -> None:
    torch.manual_seed(0)
    net = ContextNet(ContextConfig(latent_dim=D, hidden=16, proj_dim=4, components=2))
    tensors = freeze(net)
    assert C.checksum(tensors) == C.checksum({k: v.clone() for k, v in tensors.items()})
    changed = dict(tensors)
    changed["context.hidden_bias"] = tensors["context.hidden_bias"] + 1
    assert C.checksum(changed) != C.checksum(tensors)
    assert C.ContextModel(tensors, 16).checksum == C.checksum(tensors)


def test_incomplete_tensors_are_rejected() -> None:
    torch.manual_seed(0)
    tensors = freeze(ContextNet(ContextConfig(latent_dim=D, hidden=16, proj_dim=4, components=2)))
    del tensors["context.exp_lut"]
    with pytest.raises(ValueError, match="incomplete"):
        C.ContextModel(tensors, 16)


def test_chosen_frequencies_match_the_full_rows(row_path: Schedule) -> None:
    ctx, book = make_context(schedule=row_path), make_codebook(50)
    grid = smooth_grid(20, 20, 50)
    passes = pass_map(20, 20)
    ys, xs = np.divmod(np.arange(400), 20)
    slots = context_slots(grid, passes, ys, xs, 50)
    full = ctx.frequencies(book, slots, passes[ys, xs])
    mix = ctx.mixtures(book, slots, passes[ys, xs])
    chosen = ctx.chosen_frequencies(mix, grid[ys, xs])
    assert torch.equal(chosen, full[torch.arange(400), torch.from_numpy(grid[ys, xs])])
    # the remainder-bearing (argmax) entries are covered too
    top = full.argmax(1).numpy()
    assert torch.equal(ctx.chosen_frequencies(mix, top), full.max(1).values)


@pytest.mark.skipif(not KERNEL_BUILT, reason="C kernel not built (no compiler)")
@pytest.mark.parametrize("components", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("size", [1, 2, 5, 64, 1024])
def test_kernel_rows_are_the_torch_rows_bit_for_bit(components: int, size: int) -> None:
    """Wide and sharp mixtures, repeated codewords (tied weights: the remainder goes to the first), every
    component count (pairs plus a single one): the kernel's rows and chosen frequencies are the torch path's."""
    for spread in (0.05, 1.0, 4.0):
        ctx = make_context(seed=size + components, components=components, spread=spread)
        book = make_codebook(size, seed=size)
        if size > 2:
            book[size // 2 :] = book[: size - size // 2].clone()  # ties
        grid = smooth_grid(19, 21, size, seed=size)
        passes = pass_map(*grid.shape)
        ys, xs = np.divmod(np.arange(grid.size), grid.shape[1])
        mix = ctx.mixtures(book, context_slots(grid, passes, ys, xs, size), passes[ys, xs], 32)
        rows = {}
        for name, schedule in (("kernel", Schedule(kernel=True)), ("torch", Schedule(kernel=False))):
            ctx = ctx.with_schedule(schedule)
            rows[name] = (
                ctx.coding_weights(mix),
                ctx._rows(mix, 1),
                ctx.chosen_frequencies(mix, grid[ys, xs]),
                ctx.chosen_frequencies(mix, ctx._rows(mix, 1).argmax(1)),
            )
        for ours, theirs in zip(rows["kernel"], rows["torch"]):
            assert np.array_equal(np.asarray(ours), np.asarray(theirs))


@pytest.mark.parametrize("size", [2, 64, 1024])
def test_distances_rescaled_to_another_sharpness_are_the_same_bits(row_path: Schedule, size: int) -> None:
    """The sharpness search scores several sharpnesses on one network output: the distances it rescales
    (and the frequencies from them) are those of mixtures computed at each sharpness, bit for bit, including
    sharpnesses that push the log precision into its clamps."""
    for spread in (0.05, 4.0):
        ctx = make_context(seed=size, spread=spread, schedule=row_path)
        book = make_codebook(size, seed=size + 1)
        grid = smooth_grid(17, 23, size, seed=size)
        passes = pass_map(*grid.shape)
        ys, xs = np.divmod(np.arange(grid.size), grid.shape[1])
        slots = context_slots(grid, passes, ys, xs, size)
        mix = ctx.mixtures(book, slots, passes[ys, xs], 16)
        unscaled = ctx.unscaled_distances(mix)
        for sharpness in (-1000, -32, 0, 16, 64, 1000):
            direct = ctx.mixtures(book, slots, passes[ys, xs], sharpness)
            rescaled = ctx.distances_at(mix, sharpness, unscaled)
            assert torch.equal(rescaled, ctx._distances(direct))
            assert torch.equal(
                ctx.chosen_frequencies(mix, grid[ys, xs], rescaled), ctx.chosen_frequencies(direct, grid[ys, xs])
            )
    sampled = CC._pass_bits(ctx, book, grid, [-32, 0, 48], 3)
    for n, sharpness in enumerate((-32, 0, 48)):
        assert sum(bits[n] for bits, _, _ in sampled) == CC.ideal_bits(ctx, book, grid, sharpness, 3)


@pytest.mark.skipif(not KERNEL_BUILT, reason="C kernel not built (no compiler)")
def test_kernel_checks_its_buffers() -> None:
    kernel = C._kernel
    x, offset, lut = np.zeros((2, 3, 4)), np.zeros((2, 3)), np.ones(10, np.int64)
    out = np.empty((2, 4))
    kernel.coding_weights(x, offset, lut, out, 2, 3, 4, 9, 100, 16)  # consistent: accepted
    assert (out >= 0).all()
    with pytest.raises(ValueError, match="lengths"):
        kernel.coding_weights(x, offset, lut, out, 3, 3, 4, 9, 100, 16)
    with pytest.raises(ValueError, match="output"):
        kernel.coding_weights(x, offset, lut, np.empty((2, 3)), 2, 3, 4, 9, 100, 16)
    with pytest.raises(ValueError, match="range"):
        kernel.coding_weights(x, offset, -lut, out, 2, 3, 4, 9, 100, 16)
    with pytest.raises(ValueError, match="chosen index"):
        kernel.chosen_frequencies(x, offset, lut, np.array([0, 4]), np.empty(2, np.int64), 2, 3, 4, 9, 100)
    with pytest.raises(TypeError, match="read-write"):
        kernel.coding_weights(x, offset, lut, np.empty((4, 2)).T, 2, 3, 4, 9, 100, 16)  # not contiguous
    with pytest.raises(ValueError, match="contiguous"):
        kernel.coding_weights(np.zeros((2, 3, 8))[:, :, ::2], offset, lut, out, 2, 3, 4, 9, 100, 16)


def test_sharpness_is_chosen_by_the_encoder_and_changes_the_model() -> None:
    ctx, book = make_context(), make_codebook(64)
    grid = smooth_grid(24, 24, 64)
    sizes = {s: len(CC.encode_grid(ctx, book, grid, sharpness=s)) for s in (-64, 0, 64)}
    assert len(set(sizes.values())) > 1  # the byte matters
    for s in (-64, 0, 64):
        section = CC.encode_grid(ctx, book, grid, sharpness=s)
        assert section[0] == s % 256
        assert np.array_equal(CC.decode_grid(ctx, book, section, 24, 24), grid)
    with pytest.raises(ValueError, match="signed byte"):
        CC.encode_grid(ctx, book, grid, sharpness=200)
    best = CC.best_sharpness(ctx, book, grid)
    sampled = {s: CC.ideal_bits(ctx, book, grid, s, CC.SHARPNESS_SAMPLE) for s in CC.SHARPNESS_CANDIDATES}
    assert sampled[best] == min(sampled.values())


def test_a_payload_too_small_for_the_declared_grid_is_rejected_early() -> None:
    """A header that declares a larger image than the payload codes: decoding stops once the indices
    decoded so far carry more information than the payload holds, long before the whole grid."""
    ctx, book = make_context(), make_codebook(64)
    grid = smooth_grid(16, 16, 64)
    payload = CC.encode_grid(ctx, book, grid)
    calls = []
    original = ctx.scaled_weights

    def counted(mix: C.Mixtures) -> torch.Tensor:
        calls.append(len(mix.rows))
        return original(mix)

    ctx.scaled_weights = counted  # type: ignore[method-assign]
    with pytest.raises(ContextError, match="payload holds"):
        CC.decode_grid(ctx, book, payload, 400, 400)
    assert sum(calls) < 400 * 400 // 4  # stopped in the early (coarse) passes
