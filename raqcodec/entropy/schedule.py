"""How the context model's work is cut up and shared out: a value passed in, not module globals.

Nothing here changes a bit of any section: the context model's arithmetic is exact and per position, so
any cut of a pass into blocks, parts and tasks, any number of workers and either row path (the C kernel
or torch) codes the same symbols in the same order with the same frequencies. The sampling sizes steer
only the encoder's size estimates (a real encode confirms every size rate control picks), never what a
decoder computes. Tests pass small schedules to exercise the cuts; the codec uses ``DEFAULT_SCHEDULE``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    # positions x components x K per evaluation step (bounds memory)
    chunk_elements: int = 1 << 20
    # Positions per run of the network: its intermediates take ~9 KB a position, so ~80 MB whatever the
    # grid (a pass of an 8000x6000 image would otherwise hold 750,000 positions and 5 GB). Blocks of 2^13
    # are also faster than whole passes (measured on a 6 MP grid: 2.0 s against 4.4 s), the intermediates
    # staying in cache.
    block_positions: int = 1 << 13
    # Positions per task of the worker pool: the network runs about as fast per position on 1024 as on
    # 8192 (3.5 against 3.0 us, one thread) and much slower on 256 (5.9 us), while the passes of a 768x512
    # image (384 to 6144 positions) still split into tasks for every worker.
    task_positions: int = 1 << 10
    min_shared_task: int = 1 << 6  # passes smaller than this per worker are not worth sharing out
    workers: int | None = None  # threads of the pool (``workers.ordered_map``); None: torch's thread count
    kernel: bool = True  # compute rows with the C kernel where it was built (False: the torch path)
    # Positions one sampled evaluation scores at most: about a 1 MP image's worth for rate control's size
    # estimates, a quarter of that for each sharpness candidate (the candidates are compared on the same
    # positions, so their differences need fewer). Both run many times on the same grid; on a 48 MP image,
    # scoring every position made an encode take an hour.
    sampled_positions: int = 1 << 16
    sharpness_positions: int = 1 << 14


DEFAULT_SCHEDULE = Schedule()
