"""``meta.k8s.io/v1`` Table responses, which is what ``kubectl get`` prints.

A CRD's ``additionalPrinterColumns`` are evaluated with a small JSONPath subset
(``.a.b``, ``[N]``, ``[-1:]``, ``[*]``, ``[?(@.k=="v")]``). As on a real server, a CRD
without printer columns shows NAME and AGE, and one with them shows NAME plus its columns
(so AGE only when the CRD declares it, as DESIGN's CRD does).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from typing import Any

from .registry import ResourceDef

_TOKEN_RE = re.compile(r"\.([A-Za-z0-9_$-]+)|\[([^\]]*)\]")
_FILTER_RE = re.compile(r'^\?\(@\.([A-Za-z0-9_.]+)\s*==\s*["\']?(.*?)["\']?\)$')


def jsonpath(obj: Any, path: str) -> list[Any]:
    """Every value ``path`` selects in ``obj`` (none when a step is missing)."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    if path.startswith("$"):
        path = path[1:]
    current = [obj]
    for match in _TOKEN_RE.finditer(path):
        key, index = match.groups()
        following: list[Any] = []
        for value in current:
            if key is not None:
                if isinstance(value, dict) and key in value:
                    following.append(value[key])
            elif isinstance(value, list):
                following.extend(_index(value, index))
        current = following
    return current


def _index(values: list[Any], index: str) -> list[Any]:
    index = index.strip()
    if index == "*":
        return list(values)
    if filt := _FILTER_RE.match(index):
        field, expected = filt.groups()
        found = []
        for item in values:
            got = jsonpath(item, "." + field)
            if got and str(got[0]) == expected:
                found.append(item)
        return found
    if ":" in index:
        start_text, _, end_text = index.partition(":")
        start = int(start_text) if start_text.strip() else None
        end = int(end_text) if end_text.strip() else None
        return values[start:end]
    try:
        return [values[int(index)]]
    except (ValueError, IndexError):
        return []


def parse_time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """Kubernetes' ``duration.HumanDuration``, as kubectl shows ages."""
    seconds = int(max(seconds, 0))
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        rest = seconds % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 192:
        rest = hours % 24
        return f"{days}d{rest}h" if rest else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    return f"{days // 365}y"


def _age(obj: dict[str, Any]) -> str:
    created = parse_time(obj.get("metadata", {}).get("creationTimestamp"))
    if created is None:
        return "<unknown>"
    return human_duration((dt.datetime.now(dt.UTC) - created).total_seconds())


def _cell(value: Any, column: dict[str, Any]) -> Any:
    kind = column.get("type", "string")
    if value is None:
        return None
    if kind == "date":
        created = parse_time(str(value))
        if created is None:
            return str(value)
        return human_duration((dt.datetime.now(dt.UTC) - created).total_seconds())
    if kind == "integer" and isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if kind == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return value
    if kind == "boolean" and isinstance(value, bool):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value) if kind == "string" else value


def _job_status(obj: dict[str, Any]) -> str:
    conditions = obj.get("status", {}).get("conditions") or []
    for wanted in ("Failed", "Complete", "Suspended"):
        if any(c.get("type") == wanted and c.get("status") == "True" for c in conditions):
            return wanted
    return "Running" if obj.get("status", {}).get("active") else "Pending"


def _job_completions(obj: dict[str, Any]) -> str:
    completions = obj.get("spec", {}).get("completions", 1)
    return f"{obj.get('status', {}).get('succeeded', 0)}/{completions}"


def _job_duration(obj: dict[str, Any]) -> str:
    started = parse_time(obj.get("status", {}).get("startTime"))
    if started is None:
        return ""
    finished = parse_time(obj.get("status", {}).get("completionTime"))
    end = finished or dt.datetime.now(dt.UTC)
    return human_duration((end - started).total_seconds())


Column = tuple[dict[str, Any], Callable[[dict[str, Any]], Any]]

_NAME = {
    "name": "Name",
    "type": "string",
    "format": "name",
    "priority": 0,
    "description": "Name must be unique within a namespace.",
}
_AGE_DEF = {
    "name": "Age",
    "type": "string",
    "format": "",
    "priority": 0,
    "description": "CreationTimestamp of the object.",
}

_BUILTIN_COLUMNS: dict[str, list[Column]] = {
    "jobs": [
        (
            {
                "name": "Status",
                "type": "string",
                "format": "",
                "priority": 0,
                "description": "Status of the job.",
            },
            _job_status,
        ),
        (
            {
                "name": "Completions",
                "type": "string",
                "format": "",
                "priority": 0,
                "description": "Succeeded/desired completions.",
            },
            _job_completions,
        ),
        (
            {
                "name": "Duration",
                "type": "string",
                "format": "",
                "priority": 0,
                "description": "How long the job ran.",
            },
            _job_duration,
        ),
    ],
    "namespaces": [
        (
            {
                "name": "Status",
                "type": "string",
                "format": "",
                "priority": 0,
                "description": "Phase of the namespace.",
            },
            lambda obj: obj.get("status", {}).get("phase", ""),
        ),
    ],
}


def _columns(resource: ResourceDef, version: str) -> list[Column]:
    printer = resource.printer_columns.get(version) or []
    if printer:
        columns: list[Column] = [(_NAME, lambda obj: obj["metadata"]["name"])]
        for column in printer:
            definition = {
                "name": column["name"],
                "type": column.get("type", "string"),
                "format": column.get("format", ""),
                "description": column.get("description", ""),
                "priority": column.get("priority", 0),
            }
            path = column.get("jsonPath", "")

            def evaluate(obj: dict[str, Any], path: str = path, column: dict = column) -> Any:
                found = jsonpath(obj, path)
                return _cell(found[0], column) if found else None

            columns.append((definition, evaluate))
        return columns
    extra = (
        [] if resource.group and resource.crd_name else _BUILTIN_COLUMNS.get(resource.plural, [])
    )
    return [(_NAME, lambda obj: obj["metadata"]["name"]), *extra, (_AGE_DEF, _age)]


def render_table(
    resource: ResourceDef,
    version: str,
    objects: list[dict[str, Any]],
    *,
    resource_version: str,
    include_object: str = "Metadata",
    table_version: str = "v1",
    continue_token: str | None = None,
) -> dict[str, Any]:
    columns = _columns(resource, version)
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": [fn(obj) for _, fn in columns]}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": f"meta.k8s.io/{table_version}",
                "metadata": obj.get("metadata", {}),
            }
        rows.append(row)
    metadata: dict[str, Any] = {"resourceVersion": resource_version}
    if continue_token:
        metadata["continue"] = continue_token
    return {
        "kind": "Table",
        "apiVersion": f"meta.k8s.io/{table_version}",
        "metadata": metadata,
        "columnDefinitions": [definition for definition, _ in columns],
        "rows": rows,
    }
