"""The worker pool: ordered results, lazy consumption, errors where they belong, single-threaded workers,
a working pool after fork. (That coding does not depend on it: test_context.)"""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch

from raqcodec.entropy import workers


def test_results_come_back_in_order_whatever_finishes_first() -> None:
    def task(i: int) -> int:
        time.sleep(0.002 * (5 - i % 5))  # early tasks finish last
        return i

    assert list(workers.ordered_map((lambda i=i: task(i) for i in range(20)), workers=3)) == list(range(20))


def test_tasks_run_on_single_threaded_workers_and_leave_the_caller_alone() -> None:
    before = torch.get_num_threads()
    seen = list(
        workers.ordered_map([lambda: (threading.current_thread().name, torch.get_num_threads())] * 4, workers=2)
    )
    assert all(name.startswith("raqcodec") and threads == 1 for name, threads in seen)
    assert torch.get_num_threads() == before


def test_one_worker_runs_inline() -> None:
    names = list(workers.ordered_map([lambda: threading.current_thread().name] * 3, workers=1))
    assert names == [threading.current_thread().name] * 3


def test_tasks_are_taken_lazily() -> None:
    taken = []

    def tasks():
        for i in range(100):
            taken.append(i)
            yield lambda i=i: i

    results = workers.ordered_map(tasks(), workers=2)
    assert next(results) == 0
    assert len(taken) <= workers.LOOKAHEAD * 2 + 1  # bounded look-ahead, not the whole stream
    results.close()


def test_an_error_is_raised_in_place_and_later_tasks_are_cancelled() -> None:
    ran = []

    def task(i: int) -> int:
        if i == 3:
            raise ValueError("task 3 failed")
        time.sleep(0.01)
        ran.append(i)
        return i

    got = []
    with pytest.raises(ValueError, match="task 3 failed"):
        for value in workers.ordered_map((lambda i=i: task(i) for i in range(50)), workers=2):
            got.append(value)
    assert got == [0, 1, 2]
    time.sleep(0.1)
    assert max(ran) < 3 + workers.LOOKAHEAD * 2 + 1  # nothing beyond the look-ahead window ever started


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_a_working_pool() -> None:
    assert list(workers.ordered_map([lambda: 1] * 4, workers=2)) == [1] * 4  # the parent has a pool now
    pid = os.fork()
    if pid == 0:  # child: a stale pool would wait forever here
        try:
            ok = list(workers.ordered_map([lambda: 2] * 4, workers=2)) == [2] * 4
        finally:
            os._exit(0 if ok else 1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    pytest.fail("the forked child hung on the pool")
