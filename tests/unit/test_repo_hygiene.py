"""The repository as a newcomer meets it: `make help` names every target, and .gitignore
ignores nothing that is tracked."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_make_help_lists_every_target_with_one_line() -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    phony = set()
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line.startswith(".PHONY:"):
            phony |= set(line.split(":", 1)[1].split())
    result = subprocess.run(["make", "--no-print-directory", "-s", "help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    listed = {}
    for line in result.stdout.splitlines()[1:]:
        match = re.fullmatch(r"  (\S+) +(\S.*)", line)
        assert match, line
        listed[match[1]] = match[2]
    assert set(listed) == phony
    assert {"demo", "test", "help"} <= set(listed)


def test_gitignore_ignores_no_tracked_file() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run(["git", "ls-files", "-ci", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "", f"tracked yet ignored:\n{result.stdout}"
