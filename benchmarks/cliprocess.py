"""One `raqcodec` CLI invocation in a fresh process, with its wall time and its own peak memory.

Peak memory is the process's VmHWM (the high-water mark of its resident memory since exec), read by the
process itself on exit. Not ``ru_maxrss``: Linux carries the parent's peak into a child's ru_maxrss
across fork + exec, so a benchmark that once held large arrays, or an encode run before a decode from
the same parent, would inflate every later figure. Elsewhere than Linux, ru_maxrss is all there is.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass

_WRAPPER = """
import atexit, resource, runpy, sys

def report_peak():  # an atexit handler: raqcodec ends with os._exit after running them
    try:
        with open("/proc/self/status") as status:
            peak = int(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux; macOS reports bytes
    print("PEAK_KB", peak, file=sys.stderr, flush=True)

atexit.register(report_peak)
sys.argv = ["raqcodec"] + sys.argv[1:]
runpy.run_module("raqcodec", run_name="__main__", alter_sys=True)
"""


@dataclass(frozen=True)
class CliRun:
    seconds: float
    peak_rss_mib: float
    stdout: str


def run_cli(args: list[str]) -> CliRun:
    """Run ``raqcodec ARGS``; raises SystemExit with its stderr if it fails."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, *args], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"raqcodec {' '.join(args)} failed:\n{proc.stderr}")
    peak_kb = int(proc.stderr.rsplit("PEAK_KB", 1)[1].split()[0])
    return CliRun(seconds=seconds, peak_rss_mib=peak_kb / 1024, stdout=proc.stdout)
