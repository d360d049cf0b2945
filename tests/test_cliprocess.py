"""benchmarks/cliprocess.py: a CLI process's peak memory is its own, not its parent's."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

CLIPROCESS = Path(__file__).resolve().parent.parent / "benchmarks" / "cliprocess.py"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's")
def test_peak_is_the_child_own_not_the_parents(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("cliprocess", CLIPROCESS)
    assert spec is not None and spec.loader is not None
    cliprocess = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "cliprocess", cliprocess)  # dataclasses look their module up there
    spec.loader.exec_module(cliprocess)
    ballast = np.ones(700 * 2**20, np.uint8)  # the parent's peak now exceeds 700 MiB
    run = cliprocess.run_cli(["models"])  # a light command: well under that on its own
    assert "raq-photo" in run.stdout
    assert 20 < run.peak_rss_mib < 600
    assert ballast.sum() == ballast.size
    with pytest.raises(SystemExit, match="failed"):
        cliprocess.run_cli(["decode", "no-such-file.raq"])
