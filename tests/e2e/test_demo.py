"""The README's main command: `f1sandbox demo` (what `make demo` runs) finishes green."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_the_demo_backfills_the_sample_fleet_through_the_operator():
    demo = subprocess.run([str(Path(sys.executable).with_name("f1sandbox")), "demo",
                           "--timeout", "180"], capture_output=True, text=True, timeout=240)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "Admission order: aurora-borealis -> blue-horizon -> lady-marina -> " \
           "serenity-of-the-seas" in demo.stdout
    assert "4 Jobs" in demo.stdout
    assert "8 dead letters" in demo.stdout
    # One round of the feedback loop: learned, re-admitted (Job 2), ranked higher.
    assert "added 1 term" in demo.stdout
    assert "Re-embedded by Job 2 of aurora-borealis" in demo.stdout
