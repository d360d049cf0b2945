"""raqcodec.pool, the one pool of worker processes behind batch runs and ``rd``: results in the order of the
calls, set-up once per worker with one torch thread, a worker that dies fails its one task and is replaced,
a failed set-up is one line, and no process outlives the pool (an error stops the workers at once)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from raqcodec import interrupts
from raqcodec.errors import ImageError, WorkerStartError
from raqcodec.interrupts import Interrupted
from raqcodec.pool import STOP_TIMEOUT_S, Call, WorkerPool

# -- tasks: module level, so that spawned workers can import them ---------------------------------------------

_set_up: dict[str, Any] = {"count": 0, "folder": None}


def set_up(folder: str | None = None) -> None:
    _set_up["count"] += 1
    _set_up["folder"] = folder
    if folder is not None:
        Path(folder, f"init-{os.getpid()}").touch()


def failing_set_up() -> None:
    raise ImageError("the model cannot be used here")


def slow_echo(i: int, seconds: float) -> int:
    time.sleep(seconds)
    return i


def where(i: int) -> tuple[int, int, int]:
    """(the task, this process, how many times it was set up)."""
    time.sleep(0.05)
    return i, os.getpid(), _set_up["count"]


def threads() -> int:
    import torch

    return torch.get_num_threads()


def dies_on(i: int, doomed: int, signum: int | None) -> int:
    """Task ``doomed`` kills its own worker with ``signum`` (out of memory, say) or exits with status 3; the
    others take a moment."""
    if i == doomed:
        if signum is None:
            os._exit(3)
        os.kill(os.getpid(), signum)
        time.sleep(30)
    time.sleep(0.05)
    return i


def raises_on(i: int, bad: int) -> int:
    if i == bad:
        time.sleep(0.5)  # the other worker has its task by then
        raise ValueError(f"task {i} failed")
    time.sleep(30)  # would still be running: the pool must stop it
    return i


def no_tick() -> None:
    pass


def worker_pids(pool: WorkerPool) -> list[int]:
    return [w.process.pid for w in pool.workers]


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


# -- tests ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 3])
def test_map_returns_results_in_the_order_of_the_calls(size: int) -> None:
    calls = [(i, 0.01 * (8 - i)) for i in range(8)]  # the first ones finish last
    ticks = []
    with WorkerPool(size, set_up, torch_threads=None) as pool:
        results = pool.map(slow_echo, calls, lambda: ticks.append(1), lambda how: -1)
        again = pool.map(slow_echo, calls[:2], no_tick, lambda how: -1)  # the same workers, a second batch
    assert results == list(range(8)) and again == [0, 1]
    assert len(ticks) == 8


def test_run_reports_each_result_as_it_comes() -> None:
    seen: list[int] = []
    with WorkerPool(2, set_up, torch_threads=None) as pool:
        calls: list[Call] = [(slow_echo, (0, 1.0)), (slow_echo, (1, 0.0)), (slow_echo, (2, 0.0))]
        pool.run(calls, lambda i, v: seen.append(v), lambda i, how: None)
    assert seen[0] != 0 and sorted(seen) == [0, 1, 2]  # not held back until the slow first one is done


def test_workers_are_set_up_once_each_with_one_torch_thread(tmp_path: Path) -> None:
    with WorkerPool(2, set_up, (str(tmp_path),)) as pool:
        results = pool.map(where, [(i,) for i in range(10)], no_tick, lambda how: None)
        counts = pool.map(threads, [()] * 4, no_tick, lambda how: None)
    pids = {pid for _, pid, _ in results}
    assert [i for i, _, _ in results] == list(range(10))
    assert len(pids) == 2 and os.getpid() not in pids
    assert all(count == 1 for _, _, count in results)  # set up once, not per task
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"init-{pid}" for pid in pids)
    assert counts == [1, 1, 1, 1]


def test_one_worker_is_this_process() -> None:
    before = _set_up["count"]
    with WorkerPool(1, set_up) as pool:
        results = pool.map(where, [(0,), (1,)], no_tick, lambda how: None)
        assert pool.workers == []
    assert [pid for _, pid, _ in results] == [os.getpid()] * 2
    assert _set_up["count"] == before + 1


@pytest.mark.parametrize(("signum", "how"), [(signal.SIGKILL, "signal SIGKILL"), (None, "exit code 3")])
def test_a_worker_that_dies_fails_its_task_only_and_is_replaced(tmp_path: Path, signum: int | None, how: str) -> None:
    done: dict[int, Any] = {}
    died: dict[int, str] = {}
    swept: list[tuple[Call, int]] = []
    calls: list[Call] = [(dies_on, (i, 3, signum)) for i in range(8)]
    sweep = lambda call, pid: swept.append((call, pid))
    with WorkerPool(2, set_up, (str(tmp_path),), cleanup=sweep, torch_threads=None) as pool:
        first = set(worker_pids(pool))
        pool.run(calls, done.__setitem__, died.__setitem__)
        later = set(worker_pids(pool))
    assert died == {3: how}
    assert done == {i: i for i in range(8) if i != 3}
    assert len(later - first) == 1 and len(first - later) == 1  # the dead one was replaced
    (dead,) = first - later
    assert swept == [(calls[3], dead)]  # what it may have left is swept up
    assert len(list(tmp_path.iterdir())) == 3  # the replacement was set up too
    assert gone(dead)


def test_map_gives_the_lost_row_for_a_dead_worker() -> None:
    with WorkerPool(2, set_up, torch_threads=None) as pool:
        rows = pool.map(dies_on, [(i, 1, signal.SIGKILL) for i in range(4)], no_tick, lambda how: {"error": how})
    assert rows == [0, {"error": "signal SIGKILL"}, 2, 3]


def test_a_worker_killed_by_sigterm_stops_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(interrupts._unwinding, "signum", 0)
    with pytest.raises(Interrupted) as caught:
        with WorkerPool(2, set_up, torch_threads=None) as pool:
            pids = worker_pids(pool)
            pool.run([(dies_on, (i, 0, signal.SIGTERM)) for i in range(6)], lambda i, v: None, lambda i, h: None)
    assert caught.value.signum == signal.SIGTERM
    assert all(gone(pid) for pid in pids)


@pytest.mark.parametrize("size", [1, 2])
def test_a_failed_set_up_is_one_line(size: int) -> None:
    with pytest.raises(WorkerStartError, match="^the model cannot be used here$"):
        with WorkerPool(size, failing_set_up, torch_threads=None) as pool:
            pool.map(slow_echo, [(i, 0.0) for i in range(4)], no_tick, lambda how: None)
    assert not multiprocessing.active_children()


def test_no_worker_outlives_the_pool() -> None:
    with WorkerPool(3, set_up, torch_threads=None) as pool:
        pids = worker_pids(pool)
        assert len(pids) == 3 and not any(gone(pid) for pid in pids)
        pool.map(slow_echo, [(0, 0.0)], no_tick, lambda how: None)  # two of them never get a task
    assert all(gone(pid) for pid in pids)
    assert not multiprocessing.active_children()


def test_an_exception_in_a_task_is_raised_here_and_stops_the_workers() -> None:
    started = time.monotonic()
    with pytest.raises(ValueError, match="task 0 failed"):
        with WorkerPool(2, set_up, torch_threads=None) as pool:
            pids = worker_pids(pool)
            pool.map(raises_on, [(i, 0) for i in range(4)], no_tick, lambda how: None)
    assert time.monotonic() - started < STOP_TIMEOUT_S - 2  # the busy worker was stopped, not waited for
    assert all(gone(pid) for pid in pids)
    assert not multiprocessing.active_children()


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_workers_die_with_their_parent_even_by_sigkill() -> None:
    script = (
        "import sys, time\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_pool import no_tick, set_up, slow_echo, worker_pids\n"
        "from raqcodec.pool import WorkerPool\n"
        "if __name__ == '__main__':\n"
        "    with WorkerPool(2, set_up, torch_threads=None) as pool:\n"
        "        print(*worker_pids(pool), flush=True)\n"
        "        pool.map(slow_echo, [(0, 60), (1, 60)], no_tick, lambda how: None)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pids = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(pids) == 2 and not any(gone(pid) for pid in pids)
        time.sleep(1)  # both busy with a long task: nothing else would end them
    finally:
        parent.kill()  # SIGKILL: no clean-up of its own
        parent.wait()
    deadline = time.monotonic() + 10
    while not all(gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(gone(pid) for pid in pids)
