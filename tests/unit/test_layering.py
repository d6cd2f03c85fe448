"""The package's layers, read from the source with `ast` (no module is imported):

- `f1backfill.db` imports nothing of the package outside `db` and the leaf modules
  (`errors`, `constants`, `defaults`, `memory`: each imports nothing of the package);
- `f1backfill.api` imports nothing of the package outside `api` and those leaf modules;
- the pure modules (`builders/`, `admission.py`) reach no I/O library, neither directly nor
  through a module of the package, its parent packages' `__init__` included.

Every import counts, wherever it stands in a file (a function-level import is a dependency
too). A failure names the offending import, and for the pure modules the chain that leads
to it.
"""

from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest

SOURCE_ROOT = Path(__file__).resolve().parents[2] / "operator"
PACKAGE = "f1backfill"
LEAVES = ("f1backfill.errors", "f1backfill.constants", "f1backfill.defaults",
          "f1backfill.memory")
IO_LIBRARIES = frozenset(
    {"psycopg2", "kubernetes", "kopf", "openai", "aiohttp", "urllib3", "requests", "redis"})
PURE = ("f1backfill.builders", "f1backfill.admission")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, dotted
    target: str  # the imported module, dotted: "f1backfill.db.figures", "psycopg2.sql"
    line: int

    def __str__(self) -> str:
        return f"{self.source} imports {self.target} (line {self.line})"


def find_modules(root: Path) -> dict[str, Path]:
    """Every module of the package below `root`, by dotted name (a package by its name)."""
    modules = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imports_of(name: str, modules: dict[str, Path]) -> list[Import]:
    path = modules[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [Import(name, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            submodules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
            found += [Import(name, target, node.lineno) for target in submodules]
            if len(submodules) < len(node.names):  # names defined in `base` itself
                found.append(Import(name, base, node.lineno))
    return found


def within(target: str, prefixes: tuple[str, ...]) -> bool:
    return any(target == p or target.startswith(p + ".") for p in prefixes)


def foreign_imports(name: str, modules: dict[str, Path], allowed: tuple[str, ...]
                    ) -> list[Import]:
    """The package's modules that `name` imports from outside `allowed`."""
    return [i for i in imports_of(name, modules)
            if within(i.target, (PACKAGE,)) and not within(i.target, allowed)]


def io_chains(name: str, modules: dict[str, Path]) -> list[list[Import]]:
    """Each I/O library `name` reaches, with the chain of imports that leads there."""
    chains = []
    reached: dict[str, list[Import]] = {name: []}
    todo = deque([name])
    while todo:
        current = todo.popleft()
        steps = imports_of(current, modules)
        # Importing a module runs its parent packages' __init__ first.
        parent = current.rpartition(".")[0]
        if parent in modules:
            steps.append(Import(current, parent, 0))
        for step in steps:
            if step.target.split(".")[0] in IO_LIBRARIES:
                chains.append(reached[current] + [step])
                continue
            module = step.target
            while module not in modules and "." in module:  # an attribute of a module
                module = module.rpartition(".")[0]
            if module in modules and module not in reached:
                reached[module] = reached[current] + [step]
                todo.append(module)
    return chains


def describe(chain: list[Import]) -> str:
    return " -> ".join(
        f"{i.source} is in package {i.target}" if i.line == 0 else str(i) for i in chain)


MODULES = find_modules(SOURCE_ROOT)


def names_under(*prefixes: str) -> list[str]:
    return [name for name in MODULES if within(name, prefixes)]


def test_the_layers_are_found():
    assert "f1backfill.db.figures" in names_under("f1backfill.db")
    assert "f1backfill.api.spec" in names_under("f1backfill.api")
    assert "f1backfill.builders.status" in names_under(*PURE)


@pytest.mark.parametrize(("layer", "name"), [
    (layer, name) for layer in ("f1backfill.db", "f1backfill.api") for name in names_under(layer)])
def test_db_and_api_import_only_themselves_and_the_leaf_modules(layer, name):
    foreign = foreign_imports(name, MODULES, (layer, *LEAVES))
    assert not foreign, (
        f"{layer} may import only {layer} and the leaf modules {LEAVES}:\n"
        + "\n".join(map(str, foreign)))


@pytest.mark.parametrize("name", LEAVES)
def test_the_leaf_modules_import_nothing_of_the_package(name):
    foreign = foreign_imports(name, MODULES, ())
    assert not foreign, "\n".join(map(str, foreign))


@pytest.mark.parametrize("name", names_under(*PURE))
def test_pure_modules_reach_no_io_library(name):
    chains = io_chains(name, MODULES)
    assert not chains, (
        f"{name} must stay pure, but reaches an I/O library:\n"
        + "\n".join(map(describe, chains)))


# --- The checks themselves, on a made-up package ------------------------------------------


def write(root: Path, files: dict[str, str]) -> dict[str, Path]:
    for relative, text in files.items():
        path = root / PACKAGE / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return find_modules(root)


def test_a_db_module_importing_upwards_is_named_with_its_line(tmp_path):
    modules = write(tmp_path, {
        "__init__.py": "", "errors.py": "", "builders/__init__.py": "",
        "builders/status.py": "", "db/__init__.py": "",
        "db/fleet.py": "from ..errors import ConfigError\n"
                       "from . import query\n"
                       "def replay():\n"
                       "    from ..builders.status import YachtFigures\n",
    })
    (found,) = foreign_imports("f1backfill.db.fleet", modules, ("f1backfill.db", *LEAVES))
    assert str(found) == "f1backfill.db.fleet imports f1backfill.builders.status (line 4)"


def test_an_io_library_behind_a_package_init_is_found_with_its_chain(tmp_path):
    modules = write(tmp_path, {
        "__init__.py": "", "builders/__init__.py": "",
        "builders/status.py": "from ..db.figures import YachtFigures\n",
        "db/__init__.py": "import re\nimport psycopg2.extras\n",
        "db/figures.py": "from dataclasses import dataclass\n",
    })
    (chain,) = io_chains("f1backfill.builders.status", modules)
    assert describe(chain) == (
        "f1backfill.builders.status imports f1backfill.db.figures (line 1) -> "
        "f1backfill.db.figures is in package f1backfill.db -> "
        "f1backfill.db imports psycopg2.extras (line 2)")


def test_a_pure_module_without_io_passes(tmp_path):
    modules = write(tmp_path, {
        "__init__.py": "", "constants.py": "from enum import StrEnum\n",
        "admission.py": "from .constants import Phase\nfrom . import constants\n",
    })
    assert io_chains("f1backfill.admission", modules) == []
