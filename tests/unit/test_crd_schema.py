"""The YachtBackfill CRD: names, structural schema, defaults, and what it refuses."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from f1backfill import constants
from f1sandbox.crd import (
    Invalid,
    admit,
    apply_defaults,
    crd_version,
    load_yaml_documents,
    structural_violations,
    unevaluated_rules,
    unknown_fields,
    validate,
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

SAMPLES = sorted(SAMPLES_DIR.glob("*.yaml"))


def admitted_spec(spec: dict[str, Any]) -> dict[str, Any]:
    return admit(SCHEMA, make_cr(spec))["spec"]


def errors_of(spec: dict[str, Any]) -> list[str]:
    with pytest.raises(Invalid) as caught:
        admit(SCHEMA, make_cr(spec))
    return caught.value.errors


# --- Names ------------------------------------------------------------------------------------


def test_crd_names_match_the_design_and_the_constants() -> None:
    crd = CRD
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == constants.CRD_NAME == "yachtbackfills.f1cortex.io"
    spec = crd["spec"]
    assert spec["group"] == constants.GROUP
    assert spec["scope"] == "Namespaced"
    names = spec["names"]
    assert names["kind"] == constants.KIND == "YachtBackfill"
    assert names["plural"] == constants.PLURAL == "yachtbackfills"
    assert names["singular"] == constants.SINGULAR == "yachtbackfill"
    assert names["shortNames"] == [constants.SHORT_NAME] == ["yb"]
    assert names["categories"] == [constants.CATEGORY] == ["f1cortex"]


def test_one_version_served_and_stored_with_a_status_subresource() -> None:
    (version,) = CRD["spec"]["versions"]
    assert version["name"] == constants.VERSION == "v1alpha1"
    assert version["served"] is True
    assert version["storage"] is True
    assert version["subresources"] == {"status": {}}


def test_printer_columns_are_exactly_the_designed_ones() -> None:
    columns = [
        (c["name"], c["type"], c["jsonPath"]) for c in crd_version(CRD)["additionalPrinterColumns"]
    ]
    assert columns == [
        ("Yacht", "string", ".spec.yachtName"),
        ("Priority", "integer", ".status.effectivePriority"),
        ("Phase", "string", ".status.phase"),
        ("Progress", "number", ".status.progress.percent"),
        ("DLQ", "integer", ".status.dlq.unresolved"),
        ("Queue", "integer", ".status.queuePosition"),
        ("ETA", "string", ".status.eta"),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]
    progress = next(
        c for c in crd_version(CRD)["additionalPrinterColumns"] if c["name"] == "Progress"
    )
    assert "percent" in progress["description"].lower()


# --- Structural schema --------------------------------------------------------------------------


def test_schema_is_structural_with_valid_pruned_defaults() -> None:
    assert structural_violations(SCHEMA) == []


def test_every_cel_rule_is_one_the_validator_evaluates() -> None:
    # f1sandbox.crd evaluates `self == oldSelf` only: a CR these tests (and the emulator)
    # admit must not be one a real server refuses for a rule nobody evaluated.
    assert unevaluated_rules(SCHEMA) == []


def test_only_status_kopf_keeps_unknown_fields() -> None:
    preserving = [
        path for path, node in walk(SCHEMA) if node.get("x-kubernetes-preserve-unknown-fields")
    ]
    assert preserving == ["status.kopf"]
    assert [path for path, node in walk(SCHEMA) if "additionalProperties" in node] == []


def test_kopf_progress_in_status_survives_pruning_but_handler_results_do_not() -> None:
    cr = make_cr(MINIMAL_SPEC)
    cr["status"] = {
        "kopf": {"progress": {"admit": {"started": "2025-01-31T12:00:00.000000", "retries": 1}}},
        "admit": {"message": "a kopf handler's return value"},
    }
    assert unknown_fields(SCHEMA, cr) == ["status.admit"]


def test_every_spec_field_is_documented_for_kubectl_explain() -> None:
    undocumented = [
        path
        for path, node in walk(SCHEMA["properties"]["spec"], "spec")
        if "description" not in node and not path.endswith("[]")
    ]
    assert undocumented == []


def test_yacht_id_is_required_and_immutable() -> None:
    spec = SCHEMA["properties"]["spec"]
    assert spec["required"] == ["yachtId"]
    assert SCHEMA["required"] == ["spec"]
    assert spec["properties"]["yachtId"]["format"] == "uuid"
    assert spec["properties"]["yachtId"]["x-kubernetes-validations"] == [
        {"rule": "self == oldSelf", "message": "yachtId is immutable"}
    ]


# --- Samples ------------------------------------------------------------------------------------


def test_there_is_a_sample_per_tier_and_a_full_one() -> None:
    names = {path.name for path in SAMPLES}
    assert {
        "yachtbackfill-enterprise.yaml",
        "yachtbackfill-premium.yaml",
        "yachtbackfill-standard.yaml",
        "yachtbackfill-full.yaml",
    } <= names
    tiers = {load_yaml_documents(path)[0]["spec"].get("tier") for path in SAMPLES}
    assert {"enterprise", "premium", "standard"} <= tiers


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_every_sample_is_admitted(path: Path) -> None:
    documents = load_yaml_documents(path)
    assert documents, f"{path.name} is empty"
    assert path.read_text().startswith("#"), f"{path.name} needs a comment header"
    for document in documents:
        assert document["apiVersion"] == constants.API_VERSION
        assert document["kind"] == constants.KIND
        admit(SCHEMA, document)


def test_the_full_sample_sets_every_spec_field() -> None:
    (full,) = load_yaml_documents(SAMPLES_DIR / "yachtbackfill-full.yaml")
    spec_schema = SCHEMA["properties"]["spec"]

    def unset(schema: dict[str, Any], value: Any, path: str) -> list[str]:
        missing = []
        for key, prop in schema.get("properties", {}).items():
            if key not in value:
                missing.append(f"{path}.{key}")
            elif prop.get("type") == "object":
                missing += unset(prop, value[key], f"{path}.{key}")
        return missing

    assert unset(spec_schema, full["spec"], "spec") == []


def test_sample_yacht_ids_and_names_are_distinct() -> None:
    documents = [load_yaml_documents(path)[0] for path in SAMPLES]
    ids = [d["spec"]["yachtId"] for d in documents]
    names = [d["metadata"]["name"] for d in documents]
    assert len(set(ids)) == len(ids)
    assert len(set(names)) == len(names)


# --- Defaults -----------------------------------------------------------------------------------


def test_defaults_applied_match_the_design() -> None:
    assert admitted_spec(MINIMAL_SPEC) == {
        "yachtId": VALID_YACHT_ID,
        "tier": "standard",
        "suspend": False,
        "mode": "Once",
        "batchSize": 100,
        "batchSleepSeconds": 0.1,
        "maxEmbeddingChars": 24000,
        "skipObjectTypes": [],
        "maxAttempts": 5,
        "embedding": {"model": "text-embedding-3-small", "dimensions": 1536},
        "rateLimit": {"requestsPerMinute": 3000, "tokensPerMinute": 1000000},
        "drift": {
            "enabled": True,
            "toleranceMinutes": 10,
            "autoRequeue": False,
            "sources": [
                {
                    "objectType": "work_order",
                    "table": "pms_work_orders",
                    "idColumn": "id",
                    "updatedAtColumn": "updated_at",
                }
            ],
        },
    }


def test_no_default_for_priority_provider_or_resources() -> None:
    spec = admitted_spec(MINIMAL_SPEC)
    assert "priority" not in spec  # the tier decides
    assert "provider" not in spec["embedding"]  # the operator's configuration decides
    assert "resources" not in spec  # the operator's 512Mi / 500m


def test_defaults_fill_partial_objects_without_overriding_given_values() -> None:
    spec = admitted_spec(
        {
            **MINIMAL_SPEC,
            "embedding": {"provider": "hash", "dimensions": 384},
            "drift": {"sources": [{"objectType": "equipment", "table": "pms_equipment"}]},
        }
    )
    assert spec["embedding"] == {
        "provider": "hash",
        "model": "text-embedding-3-small",
        "dimensions": 384,
    }
    assert spec["drift"]["enabled"] is True
    assert spec["drift"]["sources"] == [
        {
            "objectType": "equipment",
            "table": "pms_equipment",
            "idColumn": "id",
            "updatedAtColumn": "updated_at",
        }
    ]


def test_an_empty_source_list_is_kept_empty() -> None:
    assert admitted_spec({**MINIMAL_SPEC, "drift": {"sources": []}})["drift"]["sources"] == []


def test_nulls_are_dropped_then_defaulted() -> None:
    spec = admitted_spec({**MINIMAL_SPEC, "batchSize": None, "priority": None})
    assert spec["batchSize"] == 100
    assert "priority" not in spec


def test_apply_defaults_does_not_modify_its_input() -> None:
    cr = make_cr(dict(MINIMAL_SPEC))
    before = copy.deepcopy(cr)
    apply_defaults(SCHEMA, cr)
    assert cr == before


# --- Refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "field", "words"), [c[1:] for c in INVALID_SPECS], ids=[c[0] for c in INVALID_SPECS]
)
def test_invalid_spec_is_refused_naming_the_field(spec: dict, field: str, words: str) -> None:
    errors = errors_of(spec)
    assert any(e.startswith(f"{field}: ") and words in e for e in errors), errors


def test_refusal_message_reads_like_the_api_server() -> None:
    assert errors_of({**MINIMAL_SPEC, "priority": 2000}) == [
        "spec.priority: Invalid value: 2000: spec.priority in body should be less than or "
        "equal to 1000"
    ]
    assert errors_of({**MINIMAL_SPEC, "tier": "gold"}) == [
        'spec.tier: Unsupported value: "gold": supported values: "enterprise", "premium", '
        '"standard"'
    ]


def test_a_cr_without_spec_is_refused() -> None:
    cr = make_cr(MINIMAL_SPEC)
    del cr["spec"]
    with pytest.raises(Invalid) as caught:
        admit(SCHEMA, cr)
    assert caught.value.errors == ["spec: Required value"]


def test_unknown_fields_are_refused_like_kubectl_strict_field_validation() -> None:
    errors = errors_of({**MINIMAL_SPEC, "batchsize": 10, "drift": {"tolerance": 5}})
    assert errors == ['unknown field "spec.batchsize"', 'unknown field "spec.drift.tolerance"']


@pytest.mark.parametrize(
    "value", [1, "1", "1.5", "512Mi", "1Gi", "500m", "0.5", "2e3", "100k"], ids=str
)
def test_resources_accept_quantities(value: Any) -> None:
    admitted_spec({**MINIMAL_SPEC, "resources": {"limits": {"cpu": value, "memory": value}}})


@pytest.mark.parametrize("value", ["512 Mi", "512MB", "lots", "-1", "1.2.3", ""], ids=repr)
def test_resources_refuse_what_is_not_a_quantity(value: str) -> None:
    errors = errors_of({**MINIMAL_SPEC, "resources": {"requests": {"memory": value}}})
    assert [e.split(":")[0] for e in errors] == ["spec.resources.requests.memory"]


def test_batch_size_bounds_are_inclusive() -> None:
    assert admitted_spec({**MINIMAL_SPEC, "batchSize": 1})["batchSize"] == 1
    assert admitted_spec({**MINIMAL_SPEC, "batchSize": 2048})["batchSize"] == 2048


def test_priority_bounds_are_inclusive() -> None:
    assert admitted_spec({**MINIMAL_SPEC, "priority": 0})["priority"] == 0
    assert admitted_spec({**MINIMAL_SPEC, "priority": 1000})["priority"] == 1000


# --- Updates ------------------------------------------------------------------------------------


def test_changing_yacht_id_is_refused_on_update() -> None:
    old = admit(SCHEMA, make_cr(MINIMAL_SPEC))
    new = copy.deepcopy(old)
    new["spec"]["yachtId"] = "39b56a0c-1b21-42d9-9e83-06942af2d386"
    with pytest.raises(Invalid) as caught:
        admit(SCHEMA, new, old=old)
    assert caught.value.errors == ['spec.yachtId: Invalid value: "string": yachtId is immutable']


def test_other_fields_may_change_on_update() -> None:
    old = admit(SCHEMA, make_cr(MINIMAL_SPEC))
    new = copy.deepcopy(old)
    new["spec"].update(priority=900, suspend=True, yachtName="M/Y Renamed")
    assert admit(SCHEMA, new, old=old)["spec"]["priority"] == 900


# --- Status -------------------------------------------------------------------------------------


def test_a_full_status_is_valid() -> None:
    cr = make_cr(MINIMAL_SPEC)
    cr["status"] = EXAMPLE_STATUS
    assert validate(SCHEMA, apply_defaults(SCHEMA, cr)) == []


@pytest.mark.parametrize(
    ("status", "field"),
    [
        ({"phase": "Done"}, "status.phase"),
        ({"progress": {"percent": 101}}, "status.progress.percent"),
        ({"startedAt": "yesterday"}, "status.startedAt"),
        ({"conditions": [{"type": "Running", "status": "Yes"}]}, "status.conditions[0].status"),
        (
            {
                "conditions": [
                    {**EXAMPLE_STATUS["conditions"][0]},
                    {**EXAMPLE_STATUS["conditions"][0], "status": "False"},
                ]
            },
            "status.conditions[1]",
        ),
    ],
    ids=["phase", "percent", "date-time", "condition-status", "condition-type-twice"],
)
def test_invalid_status_is_refused(status: dict[str, Any], field: str) -> None:
    cr = make_cr(MINIMAL_SPEC)
    cr["status"] = status
    errors = validate(SCHEMA, apply_defaults(SCHEMA, cr))
    assert any(e.startswith(f"{field}: ") for e in errors), errors
