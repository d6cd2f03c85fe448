"""Label and field selectors in the syntax of the Kubernetes API query parameters."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from .errors import ApiError

Predicate = Callable[[Mapping[str, Any]], bool]

_SET_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s+(in|notin)\s*\((.*)\)\s*$")
_EQ_RE = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(==|=|!=)\s*([A-Za-z0-9_.-]*)\s*$")
_EXISTS_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*$")


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside parentheses: ``a in (x,y),b`` has two terms."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part for part in parts if part.strip()]


def _label_term(term: str) -> Predicate:
    if match := _SET_RE.match(term):
        negated, key, op, values_text = match.groups()
        if negated:
            raise ApiError(400, f"unable to parse requirement: {term!r}")
        values = {value.strip() for value in values_text.split(",") if value.strip()}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if match := _EQ_RE.match(term):
        key, op, value = match.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if match := _EXISTS_RE.match(term):
        negated, key = match.groups()
        if negated:
            return lambda labels: key not in labels
        return lambda labels: key in labels
    raise ApiError(400, f"unable to parse requirement: {term!r}")


def label_selector(text: str | None) -> Predicate | None:
    """Compile ``labelSelector`` into a predicate over an object; None when there is none."""
    if not text:
        return None
    terms = [_label_term(term) for term in _split_top_level(text)]

    def matches(obj: Mapping[str, Any]) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(term(labels) for term in terms)

    return matches


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return ""
        value = value.get(part)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def field_selector(text: str | None) -> Predicate | None:
    """Compile ``fieldSelector``: ``=``, ``==`` and ``!=`` on dotted paths, comma-joined.

    The real server accepts only a per-resource list of fields (metadata.name and
    metadata.namespace everywhere, a few more for pods, events, secrets); here any
    simple path works, which is a superset.
    """
    if not text:
        return None
    checks: list[tuple[str, bool, str]] = []
    for term in _split_top_level(text):
        match = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*?)\s*$", term)
        if not match:
            raise ApiError(400, f"invalid field selector: {term!r}")
        path, op, value = match.groups()
        checks.append((path, op == "!=", value))

    def matches(obj: Mapping[str, Any]) -> bool:
        return all((_field_value(obj, path) == value) != negated for path, negated, value in checks)

    return matches


def combine(*predicates: Predicate | None) -> Predicate | None:
    active = [predicate for predicate in predicates if predicate is not None]
    if not active:
        return None
    if len(active) == 1:
        return active[0]
    return lambda obj: all(predicate(obj) for predicate in active)
