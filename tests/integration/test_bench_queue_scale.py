"""bench/queue_scale.py runs end to end at a tiny size and prints its one JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_queue_scale_compares_the_workers_rows_per_second_at_two_queue_sizes():
    result = subprocess.run(
        [sys.executable, "bench/queue_scale.py", "--sizes", "300,1300", "--rows", "300",
         "--yachts", "5", "--runs", "1", "--timeout", "120"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
        text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = result.stdout.splitlines()
    figures = json.loads(line)
    assert figures["targets"]["all_rows_embedded"]["met"], figures
    assert figures["sizes"]["1300"]["queued_with_the_yachts"] == 1300
    assert figures["ratio_largest_over_smallest"] is not None
    assert "embedding_jobs_claim" in figures["sizes"]["1300"]["claim_plan"]
