"""The product's YachtBackfill CRD as the tests read it, and the cases they check it with.

The CRD and the samples are read from their sources (crds/, manifests/samples/), not from
the sandbox's packaged copies; the validator that applies them is f1sandbox.crd. The
specs here must be refused alike by the CRD (through the API server) and by
`BackfillSpec.from_dict`; `EXAMPLE_STATUS` is a status with every field set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from f1backfill.constants import API_VERSION, KIND
from f1sandbox.crd import load_yaml_documents, openapi_schema

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "yachtbackfill.yaml"
PEERING_CRD_PATH = ROOT / "crds" / "kopf-peering.yaml"
SAMPLES_DIR = ROOT / "manifests" / "samples"

(CRD,) = load_yaml_documents(CRD_PATH)
# The schema of a whole YachtBackfill object.
SCHEMA: dict[str, Any] = openapi_schema(CRD)


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
