"""The benchmark harness runs (tiny configuration), so `make bench` cannot rot unnoticed.

No figure is asserted here: performance claims come from `make bench`, as ratios.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_benchmarks_quick_run() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "| tblog TinybirdLoggingHandler |" in out
    assert "| tblog TinybirdLoggingHandler | 100.0% |" in out  # every event arrives at exit
    assert "all arrived" in out and "| NO |" not in out
