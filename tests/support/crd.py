"""The YachtBackfill CRD, and enough of the API server's handling of it for unit tests.

What the API server does with a custom resource on create/update, in order, and the
function here that emulates it:

1. prune fields the schema does not declare (`kubectl apply` refuses them by default:
   strict field validation)                                         -> `unknown_fields`
2. apply the schema's defaults                                      -> `apply_defaults`
3. validate against the OpenAPI v3 schema, list types and
   `x-kubernetes-validations` transition rules                      -> `validate`

`admit(schema, obj, old=None)` runs all three and raises `Invalid` with the API server's
messages, e.g. `spec.priority: Invalid value: 2000: spec.priority in body should be less
than or equal to 1000`.

Validation is delegated to `jsonschema` (Draft 2020-12) after translating the Kubernetes
dialect: `x-kubernetes-int-or-string`, `nullable`, and the `uuid` / `date-time` formats
as Kubernetes checks them. CEL is not evaluated except the one rule the CRD uses,
`self == oldSelf`; any other rule fails loudly so the emulation is extended with it.
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

from f1backfill.api.fields import json_type

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = REPO_ROOT / "crds" / "yachtbackfill.yaml"
PEERING_CRD_PATH = REPO_ROOT / "crds" / "kopf-peering.yaml"
SAMPLES_DIR = REPO_ROOT / "manifests" / "samples"

API_VERSION = "f1cortex.io/v1alpha1"
KIND = "YachtBackfill"

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
_INT_OR_STRING_ANY_OF = [{"type": "integer"}, {"type": "string"}]
_K8S_UUID = re.compile(
    r"^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$", re.IGNORECASE
)


class Invalid(Exception):
    """The API server would refuse the object; `errors` are its messages."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


# --- Loading -----------------------------------------------------------------------------


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    with path.open() as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


def load_crd(path: Path = CRD_PATH) -> dict[str, Any]:
    (crd,) = load_yaml_documents(path)
    return crd


def crd_version(crd: dict[str, Any] | None = None, version: str = "v1alpha1") -> dict[str, Any]:
    crd = crd if crd is not None else load_crd()
    return next(v for v in crd["spec"]["versions"] if v["name"] == version)


def openapi_schema(crd: dict[str, Any] | None = None, version: str = "v1alpha1") -> dict[str, Any]:
    """The version's `openAPIV3Schema`: the schema of a whole YachtBackfill object."""
    return crd_version(crd, version)["schema"]["openAPIV3Schema"]


def make_cr(
    spec: dict[str, Any], *, name: str = "test-backfill", namespace: str = "fleet"
) -> dict[str, Any]:
    """A YachtBackfill manifest around `spec`."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


# --- Walking the schema --------------------------------------------------------------------


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every node of a schema with its path; array items are `path[]`."""
    yield path, schema
    for key, prop in schema.get("properties", {}).items():
        yield from walk(prop, join(path, key))
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


def node_at(schema: dict[str, Any], path: str) -> dict[str, Any] | None:
    """The schema node at a dotted path (`spec.drift.sources[].table`), or None."""
    node: dict[str, Any] | None = schema
    for part in filter(None, re.split(r"\.|(?=\[\])", path)):
        if node is None:
            return None
        node = node.get("items") if part == "[]" else node.get("properties", {}).get(part)
    return node


def is_int_or_string(node: dict[str, Any]) -> bool:
    return bool(node.get("x-kubernetes-int-or-string"))


# --- 1. Pruning: fields the schema does not declare ------------------------------------------


def _preserves_unknown(node: dict[str, Any]) -> bool:
    return bool(node.get("x-kubernetes-preserve-unknown-fields")) or isinstance(
        node.get("additionalProperties"), dict | bool
    )


def unknown_fields(schema: dict[str, Any], obj: Any, path: str = "") -> list[str]:
    """Paths of fields the API server would prune (and `kubectl apply` refuse)."""
    found: list[str] = []
    if isinstance(obj, dict) and schema.get("type") == "object":
        props = schema.get("properties", {})
        for key, value in obj.items():
            if path == "" and key in ("apiVersion", "kind", "metadata"):
                continue  # the API server's own fields, never pruned
            if key in props:
                found += unknown_fields(props[key], value, join(path, key))
            elif isinstance(schema.get("additionalProperties"), dict):
                found += unknown_fields(schema["additionalProperties"], value, join(path, key))
            elif not _preserves_unknown(schema):
                found.append(join(path, key))
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(obj):
            found += unknown_fields(schema["items"], item, join(path, index))
    return found


def _drop_nulls(schema: dict[str, Any], obj: Any) -> Any:
    """The API server drops nulls of non-nullable fields before defaulting."""
    if isinstance(obj, dict):
        props = schema.get("properties", {})
        out = {}
        for key, value in obj.items():
            prop = props.get(key, {})
            if value is None and not prop.get("nullable"):
                continue
            out[key] = _drop_nulls(prop, value)
        return out
    if isinstance(obj, list):
        return [_drop_nulls(schema.get("items") or {}, item) for item in obj]
    return obj


# --- 2. Defaulting -------------------------------------------------------------------------


def apply_defaults(schema: dict[str, Any], obj: Any) -> Any:
    """`obj` (a copy) with the schema's defaults applied, as the API server applies them.

    A missing field with a default gets a copy of it, and defaulting then descends into
    every field, the defaulted ones included: an object defaulted to `{}` gets its own
    fields' defaults, and so do the items of a defaulted list.
    """
    obj = copy.deepcopy(_drop_nulls(schema, obj))
    _default_in_place(schema, obj)
    return obj


def _default_in_place(schema: dict[str, Any], obj: Any) -> None:
    if isinstance(obj, dict):
        props = schema.get("properties", {})
        for key, prop in props.items():
            if key not in obj and "default" in prop:
                obj[key] = copy.deepcopy(prop["default"])
        for key, value in obj.items():
            if key in props:
                _default_in_place(props[key], value)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for item in obj:
            _default_in_place(schema["items"], item)


# --- 3. Validation -------------------------------------------------------------------------


def to_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The Kubernetes OpenAPI v3 dialect as plain JSON Schema."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties"):
            out[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = to_json_schema(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [to_json_schema(sub) for sub in value]
        elif key == "default":
            continue  # applied by `apply_defaults`, not validated here
        else:
            out[key] = value
    if is_int_or_string(schema) and "anyOf" not in schema and "type" not in schema:
        out["anyOf"] = copy.deepcopy(_INT_OR_STRING_ANY_OF)
    if schema.get("nullable") and "type" in schema:
        out["type"] = [schema["type"], "null"]
    return out


_format_checker = jsonschema.FormatChecker(formats=())


@_format_checker.checks("uuid")
def _is_uuid(value: object) -> bool:
    return not isinstance(value, str) or bool(_K8S_UUID.match(value))


@_format_checker.checks("date-time")
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    try:
        return datetime.fromisoformat(value).tzinfo is not None and "T" in value.upper()
    except ValueError:
        return False


def _json(value: Any) -> str:
    return json.dumps(value)




def _message(error: jsonschema.ValidationError) -> list[str]:
    """A jsonschema error in the API server's words (field.ErrorList)."""
    path = "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path
    ).lstrip(".")
    value = error.instance
    rule = error.validator_value
    kind = error.validator
    if kind == "required":
        return [f"{join(path, key)}: Required value" for key in rule if key not in value]
    if kind == "type":
        expected = rule if isinstance(rule, str) else ",".join(rule)
        got = json_type(value)
        return [
            f'{path}: Invalid value: "{got}": {path} in body must be of type {expected}: "{got}"'
        ]
    if kind == "anyOf" and rule == _INT_OR_STRING_ANY_OF:
        got = json_type(value)
        return [
            f'{path}: Invalid value: "{got}": {path} in body must be of type integer or string: '
            f'"{got}"'
        ]
    if kind == "enum":
        supported = ", ".join(_json(v) for v in rule)
        return [f"{path}: Unsupported value: {_json(value)}: supported values: {supported}"]
    if kind == "minimum":
        return [
            f"{path}: Invalid value: {_json(value)}: {path} in body should be greater than or "
            f"equal to {rule}"
        ]
    if kind == "maximum":
        return [
            f"{path}: Invalid value: {_json(value)}: {path} in body should be less than or "
            f"equal to {rule}"
        ]
    if kind == "pattern":
        return [f"{path}: Invalid value: {_json(value)}: {path} in body should match '{rule}'"]
    if kind == "format":
        return [
            f"{path}: Invalid value: {_json(value)}: {path} in body must be of type {rule}: "
            f"{_json(value)}"
        ]
    if kind == "maxLength":
        return [f"{path}: Too long: may not be longer than {rule}"]
    if kind == "minLength":
        return [
            f"{path}: Invalid value: {_json(value)}: {path} in body should be at least {rule} "
            "chars long"
        ]
    if kind == "maxItems":
        return [f"{path}: Too many: {len(value)}: must have at most {rule} items"]
    if kind == "minItems":
        return [
            f"{path}: Invalid value: {len(value)}: {path} in body should have at least {rule} items"
        ]
    return [f"{path}: Invalid value: {_json(value)}: {error.message}"]


def _list_type_errors(schema: dict[str, Any], obj: Any, path: str = "") -> list[str]:
    """`x-kubernetes-list-type` set / map: no duplicate items / keys."""
    errors: list[str] = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            prop = schema.get("properties", {}).get(key)
            if prop is not None:
                errors += _list_type_errors(prop, value, join(path, key))
    elif isinstance(obj, list):
        list_type = schema.get("x-kubernetes-list-type")
        seen: list[Any] = []
        for index, item in enumerate(obj):
            if list_type == "set":
                identity = item
            elif list_type == "map" and isinstance(item, dict):
                identity = {k: item.get(k) for k in schema["x-kubernetes-list-map-keys"]}
            else:
                identity = None
            if identity is not None:
                if identity in seen:
                    errors.append(f"{join(path, index)}: Duplicate value: {_json(identity)}")
                seen.append(identity)
            if isinstance(schema.get("items"), dict):
                errors += _list_type_errors(schema["items"], item, join(path, index))
    return errors


_MISSING = object()


def _transition_errors(schema: dict[str, Any], new: Any, old: Any, path: str = "") -> list[str]:
    """`x-kubernetes-validations`: only `self == oldSelf` (transition rule) is emulated."""
    errors: list[str] = []
    for validation in schema.get("x-kubernetes-validations", []):
        rule = validation["rule"].replace(" ", "")
        if rule != "self==oldSelf":
            raise NotImplementedError(f"CEL rule at {path} is not emulated: {validation['rule']}")
        # Transition rules only run on update, when the field existed before.
        if old is not _MISSING and new is not _MISSING and new != old:
            message = validation.get("message", f"failed rule: {validation['rule']}")
            errors.append(f'{path}: Invalid value: "{json_type(new)}": {message}')
    if isinstance(new, dict) and isinstance(old, dict):
        for key, prop in schema.get("properties", {}).items():
            errors += _transition_errors(
                prop, new.get(key, _MISSING), old.get(key, _MISSING), join(path, key)
            )
    return errors


def validate(
    schema: dict[str, Any], obj: Any, *, old: Any = None, strict: bool = True
) -> list[str]:
    """The API server's messages for `obj` (already defaulted); [] when valid.

    `old` is the stored object for an update (transition rules); `strict` reports fields
    the schema does not declare, as `kubectl apply` does by default.
    """
    errors: list[str] = []
    if strict:
        errors += [f'unknown field "{path}"' for path in unknown_fields(schema, obj)]
    validator = jsonschema.Draft202012Validator(
        to_json_schema(schema), format_checker=_format_checker
    )
    for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
        errors += _message(error)
    errors += _list_type_errors(schema, obj)
    if old is not None:
        errors += _transition_errors(schema, obj, old)
    return errors


def admit(
    schema: dict[str, Any], obj: Any, *, old: Any = None, strict: bool = True
) -> dict[str, Any]:
    """What the API server stores for a create (or an update, given `old`): the object
    with defaults applied. Raises `Invalid` with the messages the API server returns."""
    unknown = [f'unknown field "{path}"' for path in unknown_fields(schema, obj)] if strict else []
    defaulted = apply_defaults(schema, obj)
    errors = unknown + validate(schema, defaulted, old=old, strict=False)
    if errors:
        raise Invalid(errors)
    return defaulted


# --- Structural schema rules --------------------------------------------------------------------


def structural_violations(schema: dict[str, Any]) -> list[str]:
    """Where `schema` breaks the API server's rules for a structural schema (the rules an
    `apiextensions.k8s.io/v1` CRD must follow), including valid, pruned defaults."""
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
    metadata = schema.get("properties", {}).get("metadata")
    if metadata is not None and set(metadata) - {"type"}:
        problems.append("metadata: only `type: object` may be specified")
    return problems


# --- Shared cases ----------------------------------------------------------------------------

VALID_YACHT_ID = "28191ed2-7cc7-43b2-a48a-c13674cfbc1c"
MINIMAL_SPEC: dict[str, Any] = {"yachtId": VALID_YACHT_ID}


def _spec(**fields: Any) -> dict[str, Any]:
    return {**MINIMAL_SPEC, **fields}


def _source(**fields: Any) -> dict[str, Any]:
    return {
        "drift": {"sources": [{"objectType": "work_order", "table": "pms_work_orders", **fields}]}
    }


# Specs both the CRD (through the API server) and `BackfillSpec.from_dict` must refuse:
# (id, spec, the field the error names, words the message contains).
INVALID_SPECS: list[tuple[str, dict[str, Any], str, str]] = [
    ("missing-yacht-id", {"yachtName": "M/Y Nameless"}, "spec.yachtId", "Required value"),
    ("yacht-id-not-uuid", _spec(yachtId="aurora-borealis"), "spec.yachtId", "should match"),
    ("yacht-id-uppercase", _spec(yachtId=VALID_YACHT_ID.upper()), "spec.yachtId", "should match"),
    ("yacht-id-integer", _spec(yachtId=42), "spec.yachtId", "must be of type string"),
    ("yacht-name-too-long", _spec(yachtName="M" * 129), "spec.yachtName", "Too long"),
    ("priority-negative", _spec(priority=-1), "spec.priority", "greater than or equal to 0"),
    ("priority-1001", _spec(priority=1001), "spec.priority", "less than or equal to 1000"),
    ("priority-string", _spec(priority="high"), "spec.priority", "must be of type integer"),
    ("tier-unknown", _spec(tier="gold"), "spec.tier", "Unsupported value"),
    ("mode-unknown", _spec(mode="Forever"), "spec.mode", "Unsupported value"),
    ("mode-lowercase", _spec(mode="once"), "spec.mode", "Unsupported value"),
    ("suspend-string", _spec(suspend="yes"), "spec.suspend", "must be of type boolean"),
    ("batch-size-0", _spec(batchSize=0), "spec.batchSize", "greater than or equal to 1"),
    ("batch-size-2049", _spec(batchSize=2049), "spec.batchSize", "less than or equal to 2048"),
    ("batch-size-string", _spec(batchSize="100"), "spec.batchSize", "must be of type integer"),
    ("batch-size-fraction", _spec(batchSize=10.5), "spec.batchSize", "must be of type integer"),
    (
        "batch-sleep-negative",
        _spec(batchSleepSeconds=-0.5),
        "spec.batchSleepSeconds",
        "greater than or equal to 0",
    ),
    (
        "max-embedding-chars-0",
        _spec(maxEmbeddingChars=0),
        "spec.maxEmbeddingChars",
        "greater than or equal to 1",
    ),
    ("max-attempts-0", _spec(maxAttempts=0), "spec.maxAttempts", "greater than or equal to 1"),
    ("max-attempts-101", _spec(maxAttempts=101), "spec.maxAttempts", "less than or equal to 100"),
    (
        "skip-object-type-spaces",
        _spec(skipObjectTypes=["work order"]),
        "spec.skipObjectTypes[0]",
        "should match",
    ),
    (
        "skip-object-type-sql",
        _spec(skipObjectTypes=["email", "x'; DROP TABLE search_index; --"]),
        "spec.skipObjectTypes[1]",
        "should match",
    ),
    (
        "skip-object-type-duplicate",
        _spec(skipObjectTypes=["email", "email"]),
        "spec.skipObjectTypes[1]",
        "Duplicate value",
    ),
    (
        "skip-object-types-not-a-list",
        _spec(skipObjectTypes="email"),
        "spec.skipObjectTypes",
        "must be of type array",
    ),
    (
        "embedding-provider-unknown",
        _spec(embedding={"provider": "cohere"}),
        "spec.embedding.provider",
        "Unsupported value",
    ),
    (
        "embedding-dimensions-0",
        _spec(embedding={"dimensions": 0}),
        "spec.embedding.dimensions",
        "greater than or equal to 1",
    ),
    (
        "embedding-dimensions-4097",
        _spec(embedding={"dimensions": 4097}),
        "spec.embedding.dimensions",
        "less than or equal to 4096",
    ),
    (
        "rate-limit-rpm-0",
        _spec(rateLimit={"requestsPerMinute": 0}),
        "spec.rateLimit.requestsPerMinute",
        "greater than or equal to 1",
    ),
    (
        "drift-tolerance-negative",
        _spec(drift={"toleranceMinutes": -1}),
        "spec.drift.toleranceMinutes",
        "greater than or equal to 0",
    ),
    (
        "drift-table-unsafe",
        _spec(**_source(table="pms_work_orders; DROP TABLE search_index")),
        "spec.drift.sources[0].table",
        "should match",
    ),
    (
        "drift-table-quoted",
        _spec(**_source(table='"PMS Work Orders"')),
        "spec.drift.sources[0].table",
        "should match",
    ),
    (
        "drift-table-schema-qualified",
        _spec(**_source(table="public.pms_work_orders")),
        "spec.drift.sources[0].table",
        "should match",
    ),
    (
        "drift-column-unsafe",
        _spec(**_source(updatedAtColumn="updated_at) OR (1=1")),
        "spec.drift.sources[0].updatedAtColumn",
        "should match",
    ),
    (
        "drift-source-without-table",
        _spec(drift={"sources": [{"objectType": "work_order"}]}),
        "spec.drift.sources[0].table",
        "Required value",
    ),
    (
        "resources-memory-not-a-quantity",
        _spec(resources={"limits": {"memory": "lots"}}),
        "spec.resources.limits.memory",
        "should match",
    ),
    (
        "resources-cpu-negative",
        _spec(resources={"requests": {"cpu": "-500m"}}),
        "spec.resources.requests.cpu",
        "should match",
    ),
    (
        "resources-memory-boolean",
        _spec(resources={"limits": {"memory": True}}),
        "spec.resources.limits.memory",
        "must be of type integer or string",
    ),
]

# A status with every field set, as the operator writes it.
EXAMPLE_STATUS: dict[str, Any] = {
    "phase": "Running",
    "queuePosition": 3,
    "effectivePriority": 50,
    "jobName": "yb-lady-marina-0123456789",
    "startedAt": "2025-01-31T12:00:00Z",
    "completedAt": "2025-01-31T13:00:00Z",
    "progress": {
        "total": 5000,
        "done": 2500,
        "queued": 2400,
        "processing": 100,
        "failed": 0,
        "dlq": 0,
        "percent": 50.0,
    },
    "rate": 1200.5,
    "eta": "2m",
    "dlq": {"unresolved": 0},
    "drift": {"staleRows": 12, "lastCheckedAt": "2025-01-31T12:30:00Z"},
    "observedGeneration": 2,
    "conditions": [
        {
            "type": "Running",
            "status": "True",
            "reason": "JobRunning",
            "message": "Job yb-lady-marina-0123456789 is running",
            "lastTransitionTime": "2025-01-31T12:00:00Z",
            "observedGeneration": 2,
        }
    ],
}
