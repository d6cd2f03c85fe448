"""f1sandbox.crd, the one reading of a CRD schema that the emulator and the tests share:
what it prunes, defaults and refuses, in the API server's words.

The product's CRD is checked with it in test_crd_schema.py; here a small schema pins the
validator's own choices, where a hand-written emulation could easily drift from the server.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from f1sandbox.crd import CrdSchema, Invalid, admit, structural_violations, unknown_fields

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "required": ["id"],
            "properties": {
                "id": {
                    "type": "string",
                    "format": "uuid",
                    "x-kubernetes-validations": [{"rule": "self == oldSelf"}],
                },
                "name": {"type": "string", "maxLength": 4},
                "size": {"type": "integer", "minimum": 0, "exclusiveMinimum": True},
                "when": {"type": "string", "format": "date-time"},
                "note": {"type": "string", "nullable": True},
                "tags": {
                    "type": "array",
                    "maxItems": 2,
                    "x-kubernetes-list-type": "set",
                    "items": {"type": "string"},
                },
                "limits": {
                    "type": "object",
                    "default": {},
                    "properties": {"rpm": {"type": "integer", "default": 60}},
                },
            },
        },
        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    },
}
ID = "28191ed2-7cc7-43b2-a48a-c13674cfbc1c"


def cr(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Thing",
        "metadata": {"name": "a", "namespace": "n", "uid": "u", "labels": {"x": "y"}},
        "spec": {"id": ID, **spec},
    }


def errors(obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    with pytest.raises(Invalid) as caught:
        admit(SCHEMA, obj, old=old)
    return caught.value.errors


def test_the_schema_is_structural() -> None:
    assert structural_violations(SCHEMA) == []


def test_admitting_in_place_prunes_drops_nulls_defaults_and_keeps_metadata() -> None:
    obj = cr(unknown=1, note=None, size=None)
    obj["status"] = {"anything": {"goes": True}}
    obj["extra"] = "top-level unknown"
    assert CrdSchema(SCHEMA).admit_in_place(obj) == []
    assert obj["spec"] == {"id": ID, "note": None, "limits": {"rpm": 60}}
    assert obj["metadata"] == cr()["metadata"]  # the server's own fields are not pruned
    assert obj["status"] == {"anything": {"goes": True}}
    assert "extra" not in obj


def test_admit_leaves_its_input_alone_and_refuses_unknown_fields_when_strict() -> None:
    obj = cr(unknown=1)
    before = copy.deepcopy(obj)
    assert errors(obj) == ['unknown field "spec.unknown"']
    assert obj == before
    assert "unknown" not in admit(SCHEMA, obj, strict=False)["spec"]
    assert unknown_fields(SCHEMA, obj) == ["spec.unknown"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": 5}, 'spec.name: Invalid value: "integer": spec.name in body must be of type '
                      'string: "integer"'),
        ({"name": "toolong"}, "spec.name: Too long: may not be more than 4 bytes"),
        ({"size": 0}, "spec.size: Invalid value: 0: spec.size in body should be greater than 0"),
        ({"tags": ["a", "a"]}, 'spec.tags[1]: Duplicate value: "a"'),
        ({"tags": ["a", "b", "c"]}, "spec.tags: Too many: 3: must have at most 2 items"),
        ({"id": "not-a-uuid"}, 'spec.id: Invalid value: "not-a-uuid": spec.id in body must be '
                               'of type uuid: "not-a-uuid"'),
        ({"when": "2025-01-31 12:00:00Z"}, 'spec.when: Invalid value: "2025-01-31 12:00:00Z": '
                                           'spec.when in body must be of type date-time: '
                                           '"2025-01-31 12:00:00Z"'),
        ({"when": "2025-01-31T12:00:00"}, "spec.when: Invalid value"),
        ({"when": "2025-02-30T12:00:00Z"}, "spec.when: Invalid value"),
    ],
    ids=["type", "too-long-in-bytes", "exclusive-minimum", "duplicate-in-a-set", "too-many",
         "uuid", "date-time-without-t", "date-time-without-zone", "no-such-day"],
)
def test_refusals_read_like_the_api_server(spec: dict[str, Any], message: str) -> None:
    (error,) = errors(cr(**spec))
    assert error.startswith(message), error


@pytest.mark.parametrize(
    "value", [ID.upper(), ID.replace("-", ""), "2025-01-31T12:00:00.5+01:00"], ids=repr
)
def test_formats_accept_what_kube_openapi_accepts(value: str) -> None:
    field = "when" if "T" in value else "id"
    admit(SCHEMA, cr(**{field: value}))


def test_the_transition_rule_compares_with_the_stored_object() -> None:
    old = admit(SCHEMA, cr())
    changed = cr(id="39b56a0c-1b21-42d9-9e83-06942af2d386")
    assert errors(changed, old=old) == ['spec.id: Invalid value: "string": failed rule: '
                                        "self == oldSelf"]
    admit(SCHEMA, changed)  # a create has no old object: the rule does not run
    admit(SCHEMA, cr(name="new"), old=old)


def test_causes_carry_the_reasons_of_a_422_status() -> None:
    obj = cr(name="toolong", tags=["a", "a"])
    del obj["spec"]["id"]
    causes = CrdSchema(SCHEMA).admit_in_place(obj)
    assert {(c["field"], c["reason"]) for c in causes} == {
        ("spec.id", "FieldValueRequired"),
        ("spec.name", "FieldValueTooLong"),
        ("spec.tags[1]", "FieldValueDuplicate"),
    }
