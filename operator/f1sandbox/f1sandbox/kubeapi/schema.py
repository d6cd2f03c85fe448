"""The parts of a CRD's structural ``openAPIV3Schema`` that the API server enforces.

In the server's order: unknown fields are pruned (unless
``x-kubernetes-preserve-unknown-fields``), nulls of non-nullable fields are dropped,
``default`` values are filled in, then the object is validated: type, enum, bounds,
lengths, pattern, required, ``format: uuid|date-time``, item counts, and the one CEL
transition rule that expresses immutability (``self == oldSelf``). Other CEL rules,
``anyOf``/``oneOf``/``not`` are not evaluated (see the package docstring).
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

_FORMATS = {
    "uuid": re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$"),
    "date-time": re.compile(
        r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
    ),
}
_ROOT_KEYS = {"apiVersion", "kind", "metadata"}
_IMMUTABLE_RULES = {"self == oldSelf", "oldSelf == self"}


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str | bool) or value is None else str(value)


def _type_ok(value: Any, schema: dict[str, Any]) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, int | str) and not isinstance(value, bool)
    expected = schema.get("type")
    if expected is None:
        return True
    if expected == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if expected == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    kinds = {"string": str, "boolean": bool, "object": dict, "array": list}
    return isinstance(value, kinds.get(expected, object))


class _Walker:
    def __init__(self) -> None:
        self.causes: list[dict[str, str]] = []

    def fail(self, path: str, message: str, reason: str = "FieldValueInvalid") -> None:
        self.causes.append({"reason": reason, "field": path, "message": message})

    def walk(self, value: Any, schema: dict[str, Any], path: str, old: Any) -> Any:
        """Prune and default ``value`` in place where it is a container; validate it."""
        if not _type_ok(value, schema):
            kind = schema.get("type", "int-or-string")
            self.fail(
                path,
                f"Invalid value: {_show(value)}: {path} in body must be of type "
                f"{kind}: {_show(type(value).__name__)}",
            )
            return value
        if isinstance(value, dict):
            self._object(value, schema, path, old if isinstance(old, dict) else None)
        elif isinstance(value, list):
            self._array(value, schema, path)
        self._scalar_checks(value, schema, path)
        self._rules(value, schema, path, old)
        return value

    def _object(
        self, value: dict[str, Any], schema: dict[str, Any], path: str, old: dict | None
    ) -> None:
        properties: dict[str, Any] = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
        for key in list(value):
            if path == "" and key in _ROOT_KEYS:
                continue
            sub = properties.get(key)
            if sub is None and isinstance(additional, dict):
                sub = additional
            if sub is None:
                if not preserve and additional is not True:
                    del value[key]  # pruned, as the server does with unknown fields
                continue
            if value[key] is None and not sub.get("nullable"):
                del value[key]
        for key, sub in properties.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
        for key in schema.get("required") or []:
            if key not in value:
                self.fail(_join(path, key), "Required value", "FieldValueRequired")
        for key in list(value):
            if path == "" and key in _ROOT_KEYS:
                continue
            sub = properties.get(key)
            if sub is None and isinstance(additional, dict):
                sub = additional
            if sub is not None and value[key] is not None:
                self.walk(value[key], sub, _join(path, key), (old or {}).get(key))
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            self.fail(
                path,
                f"Too many: {len(value)}: must have at most {schema['maxProperties']} items",
                "FieldValueTooMany",
            )
        if "minProperties" in schema and len(value) < schema["minProperties"]:
            self.fail(
                path,
                f"Invalid value: {len(value)}: {path} in body should have at "
                f"least {schema['minProperties']} properties",
            )

    def _array(self, value: list[Any], schema: dict[str, Any], path: str) -> None:
        items = schema.get("items")
        if isinstance(items, dict):
            for index, item in enumerate(value):
                if item is not None:
                    self.walk(item, items, f"{path}[{index}]", None)
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            self.fail(
                path,
                f"Too many: {len(value)}: must have at most {schema['maxItems']} items",
                "FieldValueTooMany",
            )
        if "minItems" in schema and len(value) < schema["minItems"]:
            self.fail(
                path,
                f"Invalid value: {len(value)}: {path} in body should have at "
                f"least {schema['minItems']} items",
            )
        if schema.get("x-kubernetes-list-type") == "set" and len(
            {json.dumps(v, sort_keys=True) for v in value}
        ) != len(value):
            self.fail(path, "Duplicate value", "FieldValueDuplicate")

    def _scalar_checks(self, value: Any, schema: dict[str, Any], path: str) -> None:
        if "enum" in schema and value not in schema["enum"]:
            supported = ", ".join(_show(v) for v in schema["enum"])
            self.fail(
                path,
                f"Unsupported value: {_show(value)}: supported values: {supported}",
                "FieldValueNotSupported",
            )
        if isinstance(value, int | float) and not isinstance(value, bool):
            low, high = schema.get("minimum"), schema.get("maximum")
            exclusive_low = bool(schema.get("exclusiveMinimum"))
            exclusive_high = bool(schema.get("exclusiveMaximum"))
            if low is not None and (value < low or (exclusive_low and value == low)):
                relation = (
                    "greater than" if schema.get("exclusiveMinimum") else "greater than or equal to"
                )
                self.fail(
                    path, f"Invalid value: {value}: {path} in body should be {relation} {low}"
                )
            if high is not None and (value > high or (exclusive_high and value == high)):
                relation = (
                    "less than" if schema.get("exclusiveMaximum") else "less than or equal to"
                )
                self.fail(
                    path, f"Invalid value: {value}: {path} in body should be {relation} {high}"
                )
        if isinstance(value, str):
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                self.fail(
                    path,
                    f"Too long: may not be more than {schema['maxLength']} bytes",
                    "FieldValueTooLong",
                )
            if "minLength" in schema and len(value) < schema["minLength"]:
                self.fail(
                    path,
                    f"Invalid value: {_show(value)}: {path} in body should be at "
                    f"least {schema['minLength']} chars long",
                )
            if "pattern" in schema and not re.search(schema["pattern"], value):
                self.fail(
                    path,
                    f"Invalid value: {_show(value)}: {path} in body should match "
                    f"'{schema['pattern']}'",
                )
            fmt = _FORMATS.get(schema.get("format", ""))
            if fmt is not None and not fmt.match(value):
                self.fail(
                    path,
                    f"Invalid value: {_show(value)}: {path} in body must be of type "
                    f"{schema['format']}: {_show(value)}",
                )

    def _rules(self, value: Any, schema: dict[str, Any], path: str, old: Any) -> None:
        for rule in schema.get("x-kubernetes-validations") or []:
            text = " ".join(str(rule.get("rule", "")).split())
            if text in _IMMUTABLE_RULES and old is not None and value != old:
                message = rule.get("message") or f"failed rule: {text}"
                self.fail(path, f"Invalid value: {_show_short(value)}: {message}")


def _show_short(value: Any) -> str:
    return _show(value) if not isinstance(value, dict | list) else f'"{type(value).__name__}"'


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def apply_schema(
    obj: dict[str, Any], schema: dict[str, Any] | None, old: dict[str, Any] | None = None
) -> list[dict[str, str]]:
    """Prune, default and validate ``obj`` in place; return the causes of any failure."""
    if not schema:
        return []
    walker = _Walker()
    walker.walk(obj, schema, "", old)
    return walker.causes
