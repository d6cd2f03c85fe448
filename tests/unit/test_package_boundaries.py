"""What may import what: the product never imports the sandbox, the sandbox's leaf modules
never import the product, and the product's unit tests never start the emulator.

Read from the source (imports of every module, also inside functions), nothing is run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ROOT / "operator" / "f1backfill"
SANDBOX = ROOT / "operator" / "f1sandbox" / "f1sandbox"


def imported(path: Path) -> set[str]:
    """The modules a file imports by absolute name (a relative import stays in its own
    package, so it cannot cross between the two)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module)
    return names


def modules(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


@pytest.mark.parametrize("path", modules(PRODUCT), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_product_never_imports_the_sandbox(path: Path) -> None:
    assert not {n for n in imported(path) if n.split(".")[0] == "f1sandbox"}


@pytest.mark.parametrize(
    "name", ["crd.py", "merge.py", "fake_openai.py", "jobrunner.py", "localdb.py"]
)
def test_the_sandboxs_tools_stand_without_the_product(name: str) -> None:
    # The demo and `seed` run the product; the rest of the sandbox does not need it. The
    # validator above all: it is the tests' reading of the CRD, independent of the models.
    assert not {n for n in imported(SANDBOX / name) if n.split(".")[0] == "f1backfill"}


@pytest.mark.parametrize("path", modules(SANDBOX / "kubeapi"),
                         ids=lambda p: p.relative_to(SANDBOX).as_posix())
def test_the_emulator_stands_without_the_product(path: Path) -> None:
    assert not {n for n in imported(path) if n.split(".")[0] == "f1backfill"}


@pytest.mark.parametrize("path", modules(ROOT / "tests" / "unit"), ids=lambda p: p.name)
def test_unit_tests_do_not_import_the_emulator_or_the_job_runner(path: Path) -> None:
    assert not {n for n in imported(path)
                if n.startswith(("f1sandbox.kubeapi", "f1sandbox.jobrunner"))}
