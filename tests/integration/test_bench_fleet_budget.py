"""bench/fleet_budget.py, run tiny: a few rows per yacht, the back-to-back and the shared
scenario at 20 ms. The full run takes minutes (docs/benchmarks.md); this one says that the
script still runs end to end and prints its one JSON line with every figure and target."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_fleet_budget_benchmark_runs_tiny() -> None:
    result = subprocess.run(
        [sys.executable, "bench/fleet_budget.py", "--scenario", "fleet-20ms",
         "--scenario", "shared-20ms", "--fleet-yachts", "3", "--shared-yachts", "3",
         "--max-concurrent-jobs", "2", "--scale", "0.03", "--statement-samples", "20",
         "--timeout", "120"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = result.stdout.splitlines()
    report = json.loads(line)
    assert report["benchmark"] == "fleet_budget"
    assert set(report["scenarios"]) == {"fleet-20ms", "shared-20ms"}
    for scenario in report["scenarios"].values():
        assert scenario["limits"]["start_empty"] is True
        assert scenario["exit_codes"] == [0]
        assert scenario["rows_embedded"] == scenario["rows"]
        assert set(scenario["targets"]) == {"all_rows_embedded", "ceiling_utilisation",
                                            "rate_limited_share", "requests_per_row",
                                            "worker_peak_rss_mib"}
        assert scenario["worker_peak_rss_mib"] > 0
    assert report["scenarios"]["fleet-20ms"]["gaps_seconds"]["between_jobs"] == 2
    assert report["shared_bucket_statement"]["statements"] == 20
