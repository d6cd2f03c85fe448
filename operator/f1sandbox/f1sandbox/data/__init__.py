"""The CRDs and the sample YachtBackfills the sandbox runs with, as package data.

Copies of the repository's crds/*.yaml and manifests/samples/*.yaml (the one source of
each) under a "generated" header, written by scripts/sync_chart.py (`make manifests`);
tests/unit/test_chart_sync.py fails when a copy differs from its source. Package data
rather than paths into a source checkout, so that the demo and `f1sandbox seed` work the
same from an installed wheel (the chart's demo image).
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

import yaml

CRDS: Traversable = files(__name__) / "crds"
SAMPLES: Traversable = files(__name__) / "samples"


def yaml_files(folder: Traversable) -> list[Traversable]:
    """The YAML files of a folder (of the package or of the file system), by name."""
    return sorted((f for f in folder.iterdir() if f.name.endswith(".yaml")), key=lambda f: f.name)


def documents(folder: Traversable) -> list[dict[str, Any]]:
    """Every YAML document of every YAML file in `folder`, in file order."""
    return [doc for f in yaml_files(folder) for doc in yaml.safe_load_all(f.read_text()) if doc]
