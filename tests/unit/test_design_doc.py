"""docs/design.md names what the code defines: every CRD field, phase, condition type,
Job environment variable and metric. The code is the truth; this test says when the page
has fallen behind it (add the new name to the page)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from f1backfill.builders.job import build_job
from f1backfill.constants import ConditionType, Phase
from f1backfill.controller.metrics import OperatorMetrics
from f1backfill.worker.metrics import WorkerMetrics
from tests.support.backfills import backfill, settings

ROOT = Path(__file__).resolve().parents[2]
DESIGN = (ROOT / "docs" / "design.md").read_text()
CRD = yaml.safe_load((ROOT / "crds" / "yachtbackfill.yaml").read_text())
SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]


def fields(schema: dict, prefix: str = "") -> list[str]:
    """Dotted paths of a schema's properties (array items as `name[]`)."""
    paths = []
    for name, prop in (schema.get("properties") or {}).items():
        path = f"{prefix}{name}"
        paths.append(path)
        if prop.get("type") == "array" and prop.get("items", {}).get("properties"):
            paths += fields(prop["items"], f"{path}[].")
        elif prop.get("properties"):
            paths += fields(prop, f"{path}.")
    return paths


def documented(name: str) -> bool:
    """`name` in code style, alone or leading (`drift.enabled` documents `drift`, and
    `startedAt` / `completedAt` both names)."""
    return re.search(rf"`{re.escape(name)}[`\s/.\[]", DESIGN) is not None


@pytest.mark.parametrize("path", fields(SCHEMA["spec"]))
def test_every_spec_field_is_documented(path: str) -> None:
    leaf = path.rsplit(".", 1)[-1]
    assert documented(path) or documented(leaf) or f".{leaf}`" in DESIGN, path


@pytest.mark.parametrize("path", [p for p in fields(SCHEMA["status"])
                                  if not p.startswith(("kopf", "conditions[]"))])
def test_every_status_field_is_documented(path: str) -> None:
    leaf = path.rsplit(".", 1)[-1]
    assert documented(path) or documented(leaf) or f".{leaf}`" in DESIGN, path


@pytest.mark.parametrize("name", [p.value for p in Phase] + [c.value for c in ConditionType])
def test_every_phase_and_condition_type_is_documented(name: str) -> None:
    assert f"| `{name}` |" in DESIGN, name


def test_every_variable_of_the_job_is_documented() -> None:
    job = build_job(backfill("lady-marina", "fleet", spec={"embedding": {"provider": "openai"}}),
                    1, settings(openai_base_url="https://llm.example.com/v1"))
    names = [e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]]
    assert "OPENAI_API_KEY" in names and "OPENAI_BASE_URL" in names
    assert [n for n in names if f"`{n}`" not in DESIGN] == []


def _metric_names(registry) -> set[str]:
    return {metric.name for metric in registry.collect()}


@pytest.mark.parametrize("metrics", [OperatorMetrics, WorkerMetrics], ids=lambda m: m.__name__)
def test_every_metric_is_documented(metrics) -> None:
    names = _metric_names(metrics().registry)
    assert names
    # Counters are collected under their name without the _total suffix.
    missing = [n for n in sorted(names) if not documented(n) and not documented(f"{n}_total")]
    assert missing == []
