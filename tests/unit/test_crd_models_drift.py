"""The Python models (f1backfill.api) and the CRD's schema must not drift apart.

Fields, types, required fields, defaults and enums are compared directly. The CRD alone
validates bounds, lengths, list sizes and patterns; its bounds and defaults must be the
ones defaults.py holds for the settings and the models, and every value it admits at its
edges must read through the models (which do not check them again). What the models
refuse is what the schema cannot say: a value of the wrong type, which the API server
would not have stored, and a resource request above its limit.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable, Iterator
from datetime import datetime
from enum import StrEnum
from typing import Any

import pytest

from f1backfill import defaults
from f1backfill.api import BackfillSpec, BackfillStatus, to_camel
from f1backfill.errors import SpecError
from f1sandbox.crd import (
    Invalid,
    admit,
    apply_defaults,
    crd_version,
    is_int_or_string,
    load_yaml_documents,
    node_at,
    walk,
)
from tests.support.crd_cases import (
    CRD,
    EXAMPLE_STATUS,
    INVALID_SPECS,
    MINIMAL_SPEC,
    SAMPLES_DIR,
    SCHEMA,
    VALID_YACHT_ID,
    make_cr,
)

SPEC_SCHEMA = SCHEMA["properties"]["spec"]
STATUS_SCHEMA = SCHEMA["properties"]["status"]
# kopf's own bookkeeping: in the CRD so it is not pruned, deliberately not modelled.
NOT_MODELLED = {"status.kopf"}

ROOTS: dict[str, tuple[type, dict[str, Any]]] = {
    "spec": (BackfillSpec, SPEC_SCHEMA),
    "status": (BackfillStatus, STATUS_SCHEMA),
}


# --- The models' shape, read from their type hints ------------------------------------------


def _without_none(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = tuple(a for a in typing.get_args(hint) if a is not type(None))
        if len(args) == 1:
            return args[0]
        return typing.Union[args]  # noqa: UP007 - rebuilding a union from its parts
    return hint


def _describe_hint(hint: Any) -> tuple[Any, ...]:
    """A model field's type in the CRD's vocabulary."""
    hint = _without_none(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        assert set(typing.get_args(hint)) == {str, int}, hint
        return ("int-or-string",)
    if typing.get_origin(hint) is tuple:
        item, ellipsis = typing.get_args(hint)
        assert ellipsis is Ellipsis, hint
        return ("array", _describe_hint(item))
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        return ("string", tuple(member.value for member in hint))
    if hint is datetime:
        return ("string", "date-time")
    if dataclasses.is_dataclass(hint):
        return ("object",)
    return ({bool: "boolean", int: "integer", float: "number", str: "string"}[hint],)


def _describe_node(node: dict[str, Any]) -> tuple[Any, ...]:
    """A CRD schema node's type in the same vocabulary."""
    if is_int_or_string(node):
        return ("int-or-string",)
    kind = node["type"]
    if kind == "array":
        return ("array", _describe_node(node["items"]))
    if kind == "string" and "enum" in node:
        return ("string", tuple(node["enum"]))
    if kind == "string" and node.get("format") == "date-time":
        return ("string", "date-time")
    return (kind,)


def _model_of(hint: Any) -> type | None:
    """The dataclass a field holds (directly or as tuple items), if any."""
    hint = _without_none(hint)
    if typing.get_origin(hint) is tuple:
        hint = typing.get_args(hint)[0]
    return hint if dataclasses.is_dataclass(hint) else None


def model_fields(cls: type, path: str) -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """(CRD path, field, type hint) of every field of a model, nested ones included."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        is_list = typing.get_origin(_without_none(hint)) is tuple
        field_path = f"{path}.{to_camel(field.name)}"
        yield field_path, field, hint
        nested = _model_of(hint)
        if nested is not None:
            yield from model_fields(nested, f"{field_path}[]" if is_list else field_path)


def crd_fields(root: str) -> dict[str, dict[str, Any]]:
    _, schema = ROOTS[root]
    return {
        path: node
        for path, node in walk(schema, root)
        if path != root
        and not path.endswith("[]")
        and not any(path == p or path.startswith(f"{p}.") for p in NOT_MODELLED)
    }


# --- Fields and types ------------------------------------------------------------------------


@pytest.mark.parametrize("root", ROOTS)
def test_every_crd_field_is_modelled_and_every_model_field_is_in_the_crd(root: str) -> None:
    cls, _ = ROOTS[root]
    modelled = {path for path, _, _ in model_fields(cls, root)}
    in_crd = set(crd_fields(root))
    assert sorted(in_crd - modelled) == [], "in the CRD, not in the models"
    assert sorted(modelled - in_crd) == [], "in the models, not in the CRD"


@pytest.mark.parametrize("root", ROOTS)
def test_field_types_correspond(root: str) -> None:
    cls, _ = ROOTS[root]
    nodes = crd_fields(root)
    mismatches = [
        (path, _describe_hint(hint), _describe_node(nodes[path]))
        for path, _, hint in model_fields(cls, root)
        if _describe_hint(hint) != _describe_node(nodes[path])
    ]
    assert mismatches == []


@pytest.mark.parametrize("root", ROOTS)
def test_required_fields_are_the_fields_without_a_default(root: str) -> None:
    cls, schema = ROOTS[root]

    def check(model: type, node: dict[str, Any], path: str) -> Iterator[str]:
        without_default = {
            to_camel(f.name)
            for f in dataclasses.fields(model)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        if without_default != set(node.get("required", [])):
            yield f"{path}: model {sorted(without_default)} CRD {node.get('required', [])}"
        hints = typing.get_type_hints(model)
        for f in dataclasses.fields(model):
            nested = _model_of(hints[f.name])
            if nested is not None:
                child = node["properties"][to_camel(f.name)]
                child = child.get("items", child) if child["type"] == "array" else child
                yield from check(nested, child, f"{path}.{to_camel(f.name)}")

    assert list(check(cls, schema, root)) == []


@pytest.mark.parametrize("root", ROOTS)
def test_enums_are_equal(root: str) -> None:
    cls, _ = ROOTS[root]
    nodes = crd_fields(root)
    for path, _, hint in model_fields(cls, root):
        enum = _without_none(hint)
        if isinstance(enum, type) and issubclass(enum, StrEnum):
            assert [m.value for m in enum] == nodes[path]["enum"], path
        else:
            assert "enum" not in nodes[path], f"{path} has an enum in the CRD only"


def test_spec_object_nodes_have_no_free_form_fields() -> None:
    # Every spec field is typed: nothing free-form the models would have to ignore.
    for path, node in walk(SPEC_SCHEMA, "spec"):
        if node.get("type") == "object":
            assert "properties" in node, path
            assert not node.get("x-kubernetes-preserve-unknown-fields"), path


# --- Defaults ----------------------------------------------------------------------------------


def test_defaults_of_a_minimal_spec_are_equal() -> None:
    by_api_server = admit(SCHEMA, make_cr(MINIMAL_SPEC))["spec"]
    by_models = BackfillSpec.from_dict(MINIMAL_SPEC).to_dict()
    assert by_models == by_api_server


@pytest.mark.parametrize(
    "partial",
    [
        {"embedding": {}},
        {"embedding": {"provider": "hash"}},
        {"rateLimit": {"tokensPerMinute": 200000}},
        {"drift": {"autoRequeue": True}},
        {"drift": {"sources": [{"objectType": "equipment", "table": "pms_equipment"}]}},
        {"drift": {"sources": []}},
        {"resources": {"limits": {"memory": "1Gi"}}},
        {"skipObjectTypes": ["email"]},
    ],
    ids=repr,
)
def test_defaults_of_partial_objects_are_equal(partial: dict[str, Any]) -> None:
    spec = {**MINIMAL_SPEC, **partial}
    by_api_server = admit(SCHEMA, make_cr(spec))["spec"]
    assert BackfillSpec.from_dict(spec).to_dict() == by_api_server


@pytest.mark.parametrize("path", sorted(SAMPLES_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_sample_reads_the_same_through_the_models(path: Any) -> None:
    for document in load_yaml_documents(path):
        by_api_server = admit(SCHEMA, document)["spec"]
        assert BackfillSpec.from_dict(document["spec"]).to_dict() == by_api_server
        # What the models write, the API server takes unchanged.
        assert apply_defaults(SCHEMA, make_cr(by_api_server))["spec"] == by_api_server


def test_every_crd_default_is_a_model_default() -> None:
    # A default as the API server applies it: with its own fields' defaults filled in.
    defaults = {
        path: apply_defaults(node, node["default"])
        for path, node in crd_fields("spec").items()
        if "default" in node
    }
    assert defaults, "the CRD has no defaults?"
    model_dump = BackfillSpec.from_dict(MINIMAL_SPEC).to_dict()
    for path, default in defaults.items():
        if "[]" in path:
            continue  # list items' defaults: covered by the partial-object cases above
        value: Any = model_dump
        for part in path.split(".")[1:]:
            value = value[part]
        assert value == default, path


# --- Behaviour at the edges: bounds, lengths, sizes, patterns -------------------------------------

# Strings to probe patterns with: identifiers, SQL, UUIDs, quantities, condition vocabulary.
PATTERN_PROBES = [
    "work_order",
    "pms_work_orders",
    "_private",
    "Work_Order",
    "work order",
    "work-order",
    "1st_type",
    "ends_",
    "x",
    "",
    "pms_work_orders; DROP TABLE search_index",
    'id"',
    "public.pms_work_orders",
    VALID_YACHT_ID,
    VALID_YACHT_ID.upper(),
    VALID_YACHT_ID.replace("-", ""),
    "512Mi",
    "500m",
    "1",
    "0.5",
    ".5",
    "1e3",
    "-1",
    "+1",
    "512 Mi",
    "1Gb",
    "Running",
    "DLQGrowing",
    "f1cortex.io/Drift",
    "JobStarted",
    "Job Started",
    "reason:detail",
    "trailing:",
]


def _example(node: dict[str, Any]) -> Any:
    """A small valid value for a schema node."""
    if "enum" in node:
        return node["enum"][0]
    if is_int_or_string(node):
        return "1"
    kind = node["type"]
    if kind == "object":
        return {key: _example(node["properties"][key]) for key in node.get("required", [])}
    if kind == "array":
        return []
    if kind == "boolean":
        return True
    if kind == "integer":
        return node.get("minimum", 1)
    if kind == "number":
        return node.get("minimum", 0.5)
    if node.get("format") == "date-time":
        return "2025-01-31T12:00:00Z"
    if "pattern" in node:
        return next(p for p in PATTERN_PROBES if _crd_accepts_string(node, p))
    return "x" * max(node.get("minLength", 1), 1)


def _crd_accepts_string(node: dict[str, Any], value: str) -> bool:
    return (
        re.search(node["pattern"], value) is not None
        and len(value) <= node.get("maxLength", len(value))
        and len(value) >= node.get("minLength", 0)
    )


def _document(root: str, path: str, value: Any) -> tuple[dict[str, Any], str]:
    """A whole CR whose `path` (e.g. `spec.drift.sources[].table`) holds `value`, valid
    elsewhere; and the path the API server names for it (`spec.drift.sources[0].table`)."""
    cr = make_cr(dict(MINIMAL_SPEC))
    if path.startswith("spec.resources.requests."):
        # The one rule the models add to the CRD's: a request may not exceed its limit
        # (test_api_models covers it). Limits out of reach keep it out of these probes.
        cr["spec"]["resources"] = {"limits": {"memory": "1E", "cpu": "1E"}}
    cr.setdefault(root, {})
    _, schema = ROOTS[root]
    container: Any = cr[root]
    node = schema
    named = root
    parts = path.split(".")[1:]
    for index, part in enumerate(parts):
        key, is_item = part.removesuffix("[]"), part.endswith("[]")
        node = node["properties"][key]
        last = index == len(parts) - 1
        if is_item:
            item = value if last else _example(node["items"])
            container[key] = [item]
            container, node, named = item, node["items"], f"{named}.{key}[0]"
        elif last:
            container[key] = value
            named = f"{named}.{key}"
        else:
            container = container.setdefault(key, {})
            named = f"{named}.{key}"
    return cr, named


def _crd_decision(cr: dict[str, Any]) -> list[str]:
    try:
        admit(SCHEMA, cr)
    except Invalid as invalid:
        return invalid.errors
    return []


def _model_decision(root: str, cr: dict[str, Any]) -> SpecError | None:
    cls, _ = ROOTS[root]
    parse: Callable[[Any], Any] = cls.from_dict
    try:
        parse(cr[root])
    except SpecError as error:
        return error
    return None


def _probe(root: str, path: str, value: Any) -> None:
    """What the CRD admits at `path`, the models read as it is; what it refuses never
    reaches them (the API server stores no such object), so it is not asked of them."""
    cr, _ = _document(root, path, value)
    if _crd_decision(cr):
        return
    model_error = _model_decision(root, cr)
    assert model_error is None, f"{path}={value!r}: the CRD admits it, the models refuse it"


def _leaf_nodes(root: str) -> list[tuple[str, dict[str, Any]]]:
    _, schema = ROOTS[root]
    return [
        (path, node)
        for path, node in walk(schema, root)
        if not any(path.startswith(p) for p in NOT_MODELLED)
    ]


def _bound_cases() -> Iterator[Any]:
    for root in ROOTS:
        for path, node in _leaf_nodes(root):
            step = 1 if node.get("type") == "integer" else 0.001
            for keyword, outside in (("minimum", -step), ("maximum", step)):
                if keyword in node:
                    bound = node[keyword]
                    yield pytest.param(root, path, bound, True, id=f"{path}={bound}")
                    yield pytest.param(
                        root, path, bound + outside, False, id=f"{path}={bound + outside}"
                    )


@pytest.mark.parametrize(("root", "path", "value", "valid"), list(_bound_cases()))
def test_values_at_the_crds_bounds_read_through_the_models(root: str, path: str, value: Any,
                                                          valid: bool) -> None:
    cr, _ = _document(root, path, value)
    assert (_crd_decision(cr) == []) is valid
    _probe(root, path, value)


def _length_cases() -> Iterator[Any]:
    for root in ROOTS:
        for path, node in _leaf_nodes(root):
            if node.get("type") == "string" and "maxLength" in node:
                limit = node["maxLength"]
                for length in (limit, limit + 1):
                    yield pytest.param(root, path, "a" * length, id=f"{path}:len={length}")
            if node.get("type") == "string" and "minLength" in node:
                shorter = node["minLength"] - 1
                yield pytest.param(root, path, "a" * shorter, id=f"{path}:len={shorter}")


@pytest.mark.parametrize(("root", "path", "value"), list(_length_cases()))
def test_strings_at_the_crds_lengths_read_through_the_models(root: str, path: str,
                                                            value: str) -> None:
    _probe(root, path, value)


def _distinct_items(node: dict[str, Any], count: int) -> list[Any]:
    items = node["items"]
    if items["type"] == "string":
        return [f"t{i}" for i in range(count)]
    result = []
    for i in range(count):
        item = _example(items)
        for key in node.get("x-kubernetes-list-map-keys", []):
            item[key] = f"T{i}"
        result.append(item)
    return result


def _size_cases() -> Iterator[Any]:
    for root in ROOTS:
        for path, node in _leaf_nodes(root):
            if node.get("type") == "array" and "maxItems" in node:
                limit = node["maxItems"]
                for count in (limit, limit + 1):
                    yield pytest.param(
                        root,
                        path,
                        _distinct_items(node, count),
                        count <= limit,
                        id=f"{path}:items={count}",
                    )


@pytest.mark.parametrize(("root", "path", "items", "valid"), list(_size_cases()))
def test_lists_at_the_crds_sizes_read_through_the_models(root: str, path: str, items: list,
                                                        valid: bool) -> None:
    cr, _ = _document(root, path, items)
    assert (_crd_decision(cr) == []) is valid
    _probe(root, path, items)


def _pattern_cases() -> Iterator[Any]:
    for root in ROOTS:
        for path, node in _leaf_nodes(root):
            if "pattern" in node:
                for probe in PATTERN_PROBES:
                    yield pytest.param(root, path, probe, id=f"{path}={probe!r}")


@pytest.mark.parametrize(("root", "path", "value"), list(_pattern_cases()))
def test_strings_the_crds_patterns_admit_read_through_the_models(root: str, path: str,
                                                                value: str) -> None:
    _probe(root, path, value)


@pytest.mark.parametrize(
    ("value", "crd_accepts", "models_accept"),
    [
        (0, True, True),
        (1, True, True),
        (512, True, True),
        (None, True, True),
        (1.5, False, False),
        (True, False, False),
        # The schema cannot bound the integer form; the models refuse what the Job would be
        # refused for, naming the field.
        (-1, True, False),
    ],
    ids=repr,
)
def test_integer_quantities_are_read_alike(
    value: Any, crd_accepts: bool, models_accept: bool
) -> None:
    for path in ("spec.resources.limits.memory", "spec.resources.requests.cpu"):
        cr, named = _document("spec", path, value)
        assert (_crd_decision(cr) == []) is crd_accepts
        model_error = _model_decision("spec", cr)
        if models_accept:
            assert model_error is None
        else:
            assert model_error is not None and model_error.field == named


# Where the CRD has a bound, defaults.py has it too (and the settings take it from there).
BOUNDS = {
    "spec.batchSize": defaults.BATCH_SIZE,
    "spec.batchSleepSeconds": defaults.BATCH_SLEEP_SECONDS,
    "spec.maxEmbeddingChars": defaults.MAX_EMBEDDING_CHARS,
    "spec.maxAttempts": defaults.MAX_ATTEMPTS,
    "spec.priority": defaults.PRIORITY,
    "spec.embedding.dimensions": defaults.EMBEDDING_DIMENSIONS,
    "spec.rateLimit.requestsPerMinute": defaults.REQUESTS_PER_MINUTE,
    "spec.rateLimit.tokensPerMinute": defaults.TOKENS_PER_MINUTE,
    "spec.drift.toleranceMinutes": defaults.DRIFT_TOLERANCE_MINUTES,
}


def test_every_bounded_spec_number_has_its_home_in_defaults() -> None:
    bounded = {path for path, node in crd_fields("spec").items()
               if node.get("type") in ("integer", "number")
               and ("minimum" in node or "maximum" in node)}
    assert bounded == set(BOUNDS)


@pytest.mark.parametrize("path", sorted(BOUNDS))
def test_the_crds_bounds_and_defaults_are_the_ones_in_defaults(path: str) -> None:
    node, bound = crd_fields("spec")[path], BOUNDS[path]
    assert (node.get("minimum"), node.get("maximum")) == (bound.minimum, bound.maximum)
    if path == "spec.priority":  # no default: the tier decides
        assert "default" not in node
    else:
        assert node["default"] == bound.default


def test_the_models_do_not_check_again_what_the_api_server_validated() -> None:
    # Past the API server this cannot be stored; if it were, the models read it as it is
    # rather than fail the backfill for a rule the CRD owns.
    spec = BackfillSpec.from_dict({**MINIMAL_SPEC, "batchSize": 5000, "priority": -3,
                                   "skipObjectTypes": ["no spaces allowed", "x"]})
    assert (spec.batch_size, spec.priority, spec.skip_object_types) == (
        5000, -3, ("no spaces allowed", "x"))


TYPE_ERRORS = [c for c in INVALID_SPECS if "must be of type" in c[3]]


@pytest.mark.parametrize(("spec", "field"), [c[1:3] for c in TYPE_ERRORS],
                         ids=[c[0] for c in TYPE_ERRORS])
def test_a_value_of_the_wrong_type_is_refused_alike_naming_the_same_field(
    spec: dict[str, Any], field: str
) -> None:
    with pytest.raises(Invalid) as by_api_server:
        admit(SCHEMA, make_cr(spec))
    assert any(e.startswith(f"{field}: ") for e in by_api_server.value.errors)
    with pytest.raises(SpecError) as by_models:
        BackfillSpec.from_dict(spec)
    assert by_models.value.field == field


# --- Status round trip and printer columns --------------------------------------------------


def test_a_status_written_by_the_models_is_valid_and_reads_back_the_same() -> None:
    status = BackfillStatus.from_dict(EXAMPLE_STATUS)
    written = status.to_dict()
    assert written == EXAMPLE_STATUS
    cr = make_cr(MINIMAL_SPEC)
    cr["status"] = written
    admit(SCHEMA, cr)


@pytest.mark.parametrize(
    "column", crd_version(CRD)["additionalPrinterColumns"], ids=lambda c: c["name"]
)
def test_printer_columns_point_at_fields_that_exist(column: dict[str, Any]) -> None:
    path = column["jsonPath"].removeprefix(".")
    if path == "metadata.creationTimestamp":
        assert column["type"] == "date"
        return
    node = node_at(SCHEMA, path)
    assert node is not None, f"{column['name']}: {path} is not in the schema"
    expected = "date" if node.get("format") == "date-time" else node["type"]
    assert column["type"] == expected, column
    # and the models carry it
    root = path.split(".")[0]
    cls, _ = ROOTS[root]
    assert path in {p for p, _, _ in model_fields(cls, root)}
