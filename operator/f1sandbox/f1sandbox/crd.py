"""A CRD's structural ``openAPIV3Schema`` applied as the Kubernetes API server applies it.

One validator serves the API emulator (``f1sandbox.kubeapi``: every create and update of a
custom resource) and the tests (the product's CRD, its samples, what the operator writes),
so the two cannot disagree about what the server would store or refuse.

What the server does with a custom resource on create and update, in order:

1. fields the schema does not declare are pruned (kept under
   ``x-kubernetes-preserve-unknown-fields``); with strict field validation, ``kubectl
   apply``'s default, they are refused instead                       -> ``unknown_fields``
2. nulls of fields that are not ``nullable`` are dropped, then ``default`` values are
   filled in, inside defaulted objects too                           -> ``apply_defaults``
3. the object is validated: types, enums, bounds, lengths, patterns, formats, item and
   property counts, ``x-kubernetes-list-type`` set/map uniqueness, and on update the
   ``x-kubernetes-validations`` transition rule ``self == oldSelf``  -> ``validate``

``admit`` runs all three and raises ``Invalid``; ``CrdSchema.admit_in_place`` does the
same in place and returns the causes the emulator puts into its 422 ``Status``.

Validation is delegated to ``jsonschema`` (Draft 2020-12) after translating the
Kubernetes dialect (``x-kubernetes-int-or-string``, ``nullable``, OpenAPI 3.0's boolean
``exclusiveMinimum``/``exclusiveMaximum``, the ``uuid`` and ``date-time`` formats as
kube-openapi checks them). Messages use the server's wording (``field.Error``), e.g.
``spec.priority: Invalid value: 2000: spec.priority in body should be less than or equal
to 1000``. CEL is not evaluated except ``self == oldSelf``; ``unevaluated_rules`` lists
any other rule so a test can insist a CRD has none. ``structural_violations`` checks the
rules an ``apiextensions.k8s.io/v1`` schema must follow.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import yaml

Cause = dict[str, str]  # {"reason", "field", "message"}: a Status cause

# The object's own fields: never pruned, never in a CRD's schema's way.
_ROOT_FIELDS = ("apiVersion", "kind", "metadata")
_INT_OR_STRING_ANY_OF = [{"type": "integer"}, {"type": "string"}]
_TRANSITION_RULES = ("self==oldSelf", "oldSelf==self")
# Keywords the API server refuses in a structural schema.
_FORBIDDEN_KEYWORDS = (
    "$ref",
    "$schema",
    "additionalItems",
    "patternProperties",
    "dependencies",
    "definitions",
    "id",
)


class Invalid(Exception):
    """The API server would refuse the object; ``errors`` are its messages."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


# --- Loading -------------------------------------------------------------------------------


def load_yaml_documents(path: str | Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(Path(path).read_text()) if doc is not None]


def crd_version(crd: dict[str, Any], version: str | None = None) -> dict[str, Any]:
    """A CRD's entry in ``spec.versions``: ``version``, else the storage version."""
    versions = crd["spec"]["versions"]
    if version is None:
        return next(v for v in versions if v.get("storage"))
    return next(v for v in versions if v["name"] == version)


def openapi_schema(crd: dict[str, Any], version: str | None = None) -> dict[str, Any]:
    """The version's ``openAPIV3Schema``: the schema of a whole object."""
    return crd_version(crd, version)["schema"]["openAPIV3Schema"]


# --- Walking a schema ----------------------------------------------------------------------


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every node of a schema with its path; array items are ``path[]``, map values
    ``path{}``."""
    yield path, schema
    for key, prop in (schema.get("properties") or {}).items():
        yield from walk(prop, join(path, key))
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


def node_at(schema: dict[str, Any], path: str) -> dict[str, Any] | None:
    """The node at a dotted path (``spec.drift.sources[].table``), or None."""
    node: dict[str, Any] | None = schema
    for part in filter(None, re.split(r"\.|(?=\[\])", path)):
        if node is None:
            return None
        node = node.get("items") if part == "[]" else (node.get("properties") or {}).get(part)
    return node


def is_int_or_string(node: dict[str, Any]) -> bool:
    return bool(node.get("x-kubernetes-int-or-string"))


def _field_schema(node: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The schema of an object's field ``key``; None when the schema does not declare it."""
    declared = (node.get("properties") or {}).get(key)
    if declared is None and isinstance(node.get("additionalProperties"), dict):
        return node["additionalProperties"]
    return declared


def _keeps_unknown(node: dict[str, Any]) -> bool:
    return bool(node.get("x-kubernetes-preserve-unknown-fields")) or (
        node.get("additionalProperties") is True
    )


# --- 1. Unknown fields, pruning and nulls --------------------------------------------------


def unknown_fields(schema: dict[str, Any], obj: Any, path: str = "") -> list[str]:
    """Paths of the fields the API server would prune (and ``kubectl apply`` refuse)."""
    found: list[str] = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            if path == "" and key in _ROOT_FIELDS:
                continue
            sub = _field_schema(schema, key)
            if sub is not None:
                found += unknown_fields(sub, value, join(path, key))
            elif not _keeps_unknown(schema):
                found.append(join(path, key))
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(obj):
            found += unknown_fields(schema["items"], item, join(path, index))
    return found


def _drop(schema: dict[str, Any], obj: Any, *, unknown: bool, root: bool = True) -> None:
    """Drop, in place, the nulls of declared fields that are not ``nullable`` and, with
    ``unknown``, the fields the schema does not declare (pruning)."""
    if isinstance(obj, dict):
        for key in list(obj):
            if root and key in _ROOT_FIELDS:
                continue  # the server's own fields (metadata has its own rules)
            sub = _field_schema(schema, key)
            if sub is None:
                if unknown and not _keeps_unknown(schema):
                    del obj[key]
            elif obj[key] is None and not sub.get("nullable"):
                del obj[key]
            else:
                _drop(sub, obj[key], unknown=unknown, root=False)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for item in obj:
            _drop(schema["items"], item, unknown=unknown, root=False)


# --- 2. Defaulting -------------------------------------------------------------------------


def _default(schema: dict[str, Any], obj: Any) -> None:
    """Fill in defaults in place. A missing field with a default gets a copy of it, and
    defaulting then descends into every field, the defaulted ones included: an object
    defaulted to ``{}`` gets its own fields' defaults, and so do a defaulted list's items."""
    if isinstance(obj, dict):
        for key, prop in (schema.get("properties") or {}).items():
            if key not in obj and "default" in prop:
                obj[key] = copy.deepcopy(prop["default"])
        for key, value in obj.items():
            sub = _field_schema(schema, key)
            if sub is not None:
                _default(sub, value)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for item in obj:
            _default(schema["items"], item)


def apply_defaults(schema: dict[str, Any], obj: Any) -> Any:
    """A copy of ``obj`` with nulls dropped and the schema's defaults applied (unknown
    fields are left for ``unknown_fields`` to report)."""
    obj = copy.deepcopy(obj)
    _drop(schema, obj, unknown=False)
    _default(schema, obj)
    return obj


# --- 3. Validation -------------------------------------------------------------------------


def to_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The Kubernetes OpenAPI v3 dialect as plain JSON Schema (Draft 2020-12)."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties"):
            out[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = to_json_schema(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [to_json_schema(sub) for sub in value]
        elif key in ("default", "exclusiveMinimum", "exclusiveMaximum"):
            continue  # defaults are applied, not validated; OpenAPI 3.0 flags: below
        else:
            out[key] = value
    # OpenAPI 3.0 (and Kubernetes) make exclusiveMinimum a flag on minimum; JSON Schema
    # 2020-12 makes it the bound itself.
    for flag, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if schema.get(flag) and bound in schema:
            out[flag] = out.pop(bound)
    if is_int_or_string(schema) and "anyOf" not in schema and "type" not in schema:
        out["anyOf"] = copy.deepcopy(_INT_OR_STRING_ANY_OF)
    if schema.get("nullable") and "type" in schema:
        out["type"] = [schema["type"], "null"]
    return out


# The formats as kube-openapi's strfmt checks them: a UUID in any case, hyphens optional;
# a date-time with a "T" and a time zone.
_UUID = re.compile(r"^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$", re.I)
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_formats = jsonschema.FormatChecker(formats=())


@_formats.checks("uuid")
def _is_uuid(value: object) -> bool:
    return not isinstance(value, str) or bool(_UUID.match(value))


@_formats.checks("date-time")
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not _DATE_TIME.match(value):
        return False
    try:
        datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        return False  # e.g. February 30th, or 25 o'clock
    return True


def json_type(value: Any) -> str:
    """The JSON type name of a decoded value, as the API server names it in errors."""
    if value is None:
        return "null"
    kinds = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"))
    kinds += ((list, "array"),)
    return next((name for kind, name in kinds if isinstance(value, kind)), "object")


def _show(value: Any) -> str:
    return json.dumps(value)


def _cause(path: str, message: str, reason: str = "FieldValueInvalid") -> Cause:
    return {"reason": reason, "field": path, "message": message}


def _causes(error: jsonschema.ValidationError) -> list[Cause]:
    """A jsonschema error in the API server's words (its field.ErrorList)."""
    path = "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path
    ).lstrip(".")
    value, rule, kind = error.instance, error.validator_value, error.validator
    invalid = f"Invalid value: {_show(value)}: {path} in body"
    if kind == "required":
        return [
            _cause(join(path, key), "Required value", "FieldValueRequired")
            for key in rule
            if key not in value
        ]
    if kind == "type" or (kind == "anyOf" and rule == _INT_OR_STRING_ANY_OF):
        expected = "integer or string" if kind == "anyOf" else rule
        if isinstance(expected, list):
            expected = ",".join(t for t in expected if t != "null")
        got = json_type(value)
        return [
            _cause(
                path,
                f'Invalid value: "{got}": {path} in body must be of type {expected}: "{got}"',
                "FieldValueTypeInvalid",
            )
        ]
    if kind == "enum":
        supported = ", ".join(_show(v) for v in rule)
        message = f"Unsupported value: {_show(value)}: supported values: {supported}"
        return [_cause(path, message, "FieldValueNotSupported")]
    simple = {
        "minimum": f"{invalid} should be greater than or equal to {rule}",
        "maximum": f"{invalid} should be less than or equal to {rule}",
        "exclusiveMinimum": f"{invalid} should be greater than {rule}",
        "exclusiveMaximum": f"{invalid} should be less than {rule}",
        "multipleOf": f"{invalid} should be a multiple of {rule}",
        "pattern": f"{invalid} should match '{rule}'",
        "format": f"{invalid} must be of type {rule}: {_show(value)}",
        "minLength": f"{invalid} should be at least {rule} chars long",
        "minItems": f"Invalid value: {_len(value)}: {path} in body should have at least "
        f"{rule} items",
        "minProperties": f"Invalid value: {_len(value)}: {path} in body should have at least "
        f"{rule} properties",
    }
    if kind in simple:
        return [_cause(path, simple[kind])]
    if kind == "maxLength":
        # Kubernetes 1.32 and later count bytes ("may not be longer than N" before).
        return [_cause(path, f"Too long: may not be more than {rule} bytes", "FieldValueTooLong")]
    if kind in ("maxItems", "maxProperties"):
        message = f"Too many: {len(value)}: must have at most {rule} items"
        return [_cause(path, message, "FieldValueTooMany")]
    return [_cause(path, f"Invalid value: {_show(value)}: {error.message}")]


def _len(value: Any) -> int:
    return len(value) if isinstance(value, list | dict | str) else 0


def _list_type_causes(schema: dict[str, Any], obj: Any, path: str = "") -> list[Cause]:
    """``x-kubernetes-list-type`` set / map: no duplicate items / keys."""
    causes: list[Cause] = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            sub = _field_schema(schema, key)
            if sub is not None:
                causes += _list_type_causes(sub, value, join(path, key))
    elif isinstance(obj, list):
        list_type = schema.get("x-kubernetes-list-type")
        items = schema.get("items")
        seen: list[Any] = []
        for index, item in enumerate(obj):
            if list_type == "set":
                identity = item
            elif list_type == "map" and isinstance(item, dict):
                identity = {k: item.get(k) for k in schema.get("x-kubernetes-list-map-keys", [])}
            else:
                identity = None
            if identity is not None:
                if identity in seen:
                    message = f"Duplicate value: {_show(identity)}"
                    causes.append(_cause(join(path, index), message, "FieldValueDuplicate"))
                seen.append(identity)
            if isinstance(items, dict):
                causes += _list_type_causes(items, item, join(path, index))
    return causes


def _rule_text(validation: dict[str, Any]) -> str:
    return "".join(str(validation.get("rule", "")).split())


def unevaluated_rules(schema: dict[str, Any]) -> list[str]:
    """``path: rule`` of every CEL rule this validator does not evaluate."""
    return [
        f"{path or '<root>'}: {validation.get('rule')}"
        for path, node in walk(schema)
        for validation in node.get("x-kubernetes-validations") or []
        if _rule_text(validation) not in _TRANSITION_RULES
    ]


_MISSING = object()


def _transition_causes(schema: dict[str, Any], new: Any, old: Any, path: str = "") -> list[Cause]:
    """``self == oldSelf`` where both the new and the stored object have the field (the
    server runs transition rules only then)."""
    causes: list[Cause] = []
    for validation in schema.get("x-kubernetes-validations") or []:
        if _rule_text(validation) not in _TRANSITION_RULES:
            continue
        if old is not _MISSING and new is not _MISSING and new != old:
            message = validation.get("message") or f"failed rule: {validation['rule']}"
            # CEL errors name the value's type, not the value.
            causes.append(_cause(path, f'Invalid value: "{json_type(new)}": {message}'))
    if isinstance(new, dict) and isinstance(old, dict):
        for key, prop in (schema.get("properties") or {}).items():
            causes += _transition_causes(
                prop, new.get(key, _MISSING), old.get(key, _MISSING), join(path, key)
            )
    return causes


def _unique(causes: list[Cause]) -> list[Cause]:
    seen: set[tuple[str, str]] = set()
    kept = []
    for cause in causes:
        key = (cause["field"], cause["message"])
        if key not in seen:
            seen.add(key)
            kept.append(cause)
    return kept


class CrdSchema:
    """One version's ``openAPIV3Schema``, compiled once (the emulator keeps one per CRD
    version; building the jsonschema validator is the costly part)."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self._validator = jsonschema.Draft202012Validator(
            to_json_schema(schema), format_checker=_formats
        )

    def unknown_fields(self, obj: Any) -> list[str]:
        return unknown_fields(self.schema, obj)

    def validate(self, obj: Any, old: Any = None) -> list[Cause]:
        """The causes of a refusal of ``obj`` (already pruned and defaulted); [] when valid.
        ``old`` is the stored object of an update, for the transition rules."""
        errors = sorted(
            self._validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path]
        )
        causes = [cause for error in errors for cause in _causes(error)]
        causes += _list_type_causes(self.schema, obj)
        if old is not None:
            causes += _transition_causes(self.schema, obj, old)
        return _unique(causes)

    def admit_in_place(self, obj: dict[str, Any], old: Any = None) -> list[Cause]:
        """Prune, drop nulls and default ``obj`` in place, then validate it: what the API
        server stores, and the causes of its 422 when it refuses."""
        _drop(self.schema, obj, unknown=True)
        _default(self.schema, obj)
        return self.validate(obj, old)


def message(cause: Cause) -> str:
    """A cause as the API server prints it: ``field: message``."""
    return f"{cause['field']}: {cause['message']}" if cause["field"] else cause["message"]


def validate(
    schema: dict[str, Any], obj: Any, *, old: Any = None, strict: bool = True
) -> list[str]:
    """The API server's messages for ``obj`` (already defaulted); [] when valid. ``strict``
    reports the fields the schema does not declare, as ``kubectl apply`` does by default."""
    unknown = [f'unknown field "{p}"' for p in unknown_fields(schema, obj)] if strict else []
    return unknown + [message(c) for c in CrdSchema(schema).validate(obj, old)]


def admit(
    schema: dict[str, Any], obj: Any, *, old: Any = None, strict: bool = True
) -> dict[str, Any]:
    """What the API server stores for a create (or an update, given ``old``): the object
    pruned and defaulted. Raises ``Invalid`` with the messages the server returns."""
    unknown = [f'unknown field "{p}"' for p in unknown_fields(schema, obj)] if strict else []
    stored = copy.deepcopy(obj)
    causes = CrdSchema(schema).admit_in_place(stored, old)
    errors = unknown + [message(c) for c in causes]
    if errors:
        raise Invalid(errors)
    return stored


# --- Structural schema rules ---------------------------------------------------------------


def structural_violations(schema: dict[str, Any]) -> list[str]:
    """Where ``schema`` breaks the API server's rules for a structural schema (the rules an
    ``apiextensions.k8s.io/v1`` CRD must follow), including valid, pruned defaults."""
    problems: list[str] = []
    for path, node in walk(schema):
        where = path or "<root>"
        for keyword in _FORBIDDEN_KEYWORDS:
            if keyword in node:
                problems.append(f"{where}: {keyword} is not allowed")
        if node.get("uniqueItems"):
            problems.append(f"{where}: uniqueItems cannot be true (use x-kubernetes-list-type)")
        if is_int_or_string(node):
            if "type" in node or node.get("anyOf", _INT_OR_STRING_ANY_OF) != _INT_OR_STRING_ANY_OF:
                problems.append(f"{where}: int-or-string must be anyOf [integer, string], no type")
        else:
            if not node.get("type"):
                problems.append(f"{where}: type must be set")
            for keyword in ("anyOf", "allOf", "oneOf", "not"):
                if keyword in node:
                    problems.append(f"{where}: {keyword} outside int-or-string is not supported")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{where}: properties and additionalProperties are exclusive")
        if node.get("type") == "array" and not isinstance(node.get("items"), dict):
            problems.append(f"{where}: an array needs an items schema")
        list_type = node.get("x-kubernetes-list-type")
        if list_type == "set" and node.get("items", {}).get("type") in ("object", "array"):
            problems.append(f"{where}: a set's items must be scalars")
        if list_type == "map":
            items = node.get("items", {})
            for key in node.get("x-kubernetes-list-map-keys", []):
                if key not in items.get("required", []) and "default" not in items.get(
                    "properties", {}
                ).get(key, {"default": None}):
                    problems.append(f"{where}: map key {key} must be required or defaulted")
        if "default" in node:
            default = node["default"]
            if unknown_fields(node, default):
                problems.append(f"{where}: default has unknown fields")
            errors = validate(node, apply_defaults(node, default), strict=False)
            problems += [f"{where}: default is invalid: {e}" for e in errors]
    metadata = (schema.get("properties") or {}).get("metadata")
    if metadata is not None and set(metadata) - {"type"}:
        problems.append("metadata: only `type: object` may be specified")
    return problems
