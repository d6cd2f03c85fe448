"""bench/job_gap.py runs end to end at a tiny size and prints its one JSON line, every part
of every gap measured (the figures themselves are docs/benchmarks.md's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_job_gap_measures_every_part_of_each_gap():
    result = subprocess.run(
        [sys.executable, "bench/job_gap.py", "--yachts", "3", "--rows", "20",
         "--timeout", "120"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
        text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = result.stdout.splitlines()
    figures = json.loads(line)
    assert figures["all_succeeded"] and figures["jobs"] == 3
    assert len(figures["pairs"]) == 2
    for pair in figures["pairs"]:
        parts = [pair[name] for name in figures["parts_seconds"]]
        assert all(part > -0.05 for part in parts), pair  # in order, within clock steps
        assert abs(sum(parts) - pair["gap"]) < 0.01, pair  # the parts make up the gap
