"""f1backfill.api: reading specs, effective priority, errors, status, names."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from f1backfill import constants, defaults
from f1backfill.api import (
    BackfillSpec,
    BackfillStatus,
    Condition,
    ConditionStatus,
    ConditionType,
    DlqStatus,
    DriftSource,
    DriftSpec,
    EmbeddingSpec,
    Mode,
    Phase,
    Progress,
    Provider,
    RateLimitSpec,
    Tier,
    format_time,
    job_name,
    parse_quantity,
    to_camel,
)
from f1backfill.errors import BackfillError, SpecError
from tests.support.crd_cases import INVALID_SPECS, VALID_YACHT_ID

T0 = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)


def spec(**fields: object) -> BackfillSpec:
    return BackfillSpec.from_dict({"yachtId": VALID_YACHT_ID, **fields})


# --- Defaults -----------------------------------------------------------------------------------


def test_from_dict_applies_every_default() -> None:
    s = spec()
    assert s.yacht_id == VALID_YACHT_ID
    assert s.yacht_name is None
    assert s.tier is Tier.STANDARD
    assert s.priority is None
    assert s.suspend is False
    assert s.mode is Mode.ONCE
    assert s.batch_size == 100
    assert s.batch_sleep_seconds == 0.1
    assert s.max_embedding_chars == 24000
    assert s.skip_object_types == ()
    assert s.max_attempts == 5
    assert s.embedding == EmbeddingSpec(
        provider=None, model="text-embedding-3-small", dimensions=1536
    )
    assert s.rate_limit == RateLimitSpec(requests_per_minute=3000, tokens_per_minute=1_000_000)
    assert s.drift == DriftSpec(
        enabled=True,
        tolerance_minutes=10,
        auto_requeue=False,
        sources=(
            DriftSource(
                object_type="work_order",
                table="pms_work_orders",
                id_column="id",
                updated_at_column="updated_at",
            ),
        ),
    )
    assert s.resources is None


def test_nested_objects_left_out_null_or_empty_get_their_defaults() -> None:
    for value in (None, {}):
        s = spec(embedding=value, rateLimit=value, drift=value)
        assert s.embedding == EmbeddingSpec()
        assert s.rate_limit == RateLimitSpec()
        assert s.drift == DriftSpec()


def test_partial_nested_objects_keep_what_is_given() -> None:
    s = spec(
        embedding={"provider": "hash", "dimensions": 384},
        drift={"sources": [{"objectType": "equipment", "table": "pms_equipment"}]},
    )
    assert s.embedding == EmbeddingSpec(provider=Provider.HASH, dimensions=384)
    assert s.drift.enabled is True
    assert s.drift.sources == (DriftSource(object_type="equipment", table="pms_equipment"),)


def test_every_field_is_read() -> None:
    s = spec(
        yachtName="M/Y Lady Marina",
        tier="premium",
        priority=60,
        suspend=True,
        mode="Continuous",
        batchSize=256,
        batchSleepSeconds=0,
        maxEmbeddingChars=16000,
        skipObjectTypes=["email", "crew_document"],
        maxAttempts=3,
        rateLimit={"requestsPerMinute": 1500, "tokensPerMinute": 500000},
        drift={"enabled": False, "toleranceMinutes": 0, "autoRequeue": True},
        resources={"limits": {"memory": "1Gi", "cpu": 1}},
    )
    assert (s.yacht_name, s.tier, s.priority, s.suspend, s.mode) == (
        "M/Y Lady Marina",
        Tier.PREMIUM,
        60,
        True,
        Mode.CONTINUOUS,
    )
    assert (s.batch_size, s.batch_sleep_seconds, s.max_embedding_chars, s.max_attempts) == (
        256,
        0.0,
        16000,
        3,
    )
    assert isinstance(s.batch_sleep_seconds, float)
    assert s.skip_object_types == ("email", "crew_document")
    assert s.rate_limit == RateLimitSpec(1500, 500000)
    assert (s.drift.enabled, s.drift.tolerance_minutes, s.drift.auto_requeue) == (False, 0, True)


def test_unknown_keys_are_ignored_as_the_api_server_prunes_them() -> None:
    assert spec(batchsize=5, somethingElse={"x": 1}) == spec()


def test_integral_floats_are_integers_as_in_json() -> None:
    s = spec(batchSize=250.0)
    assert s.batch_size == 250
    assert isinstance(s.batch_size, int)


def test_spec_is_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec().batch_size = 5  # type: ignore[misc]


def test_to_dict_round_trips() -> None:
    s = spec(tier="enterprise", skipObjectTypes=["email"], resources={"limits": {"cpu": 2}})
    assert BackfillSpec.from_dict(s.to_dict()) == s
    assert s.to_dict()["tier"] == "enterprise"
    assert type(s.to_dict()["tier"]) is str


# --- Effective priority ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tier", "priority"), [("enterprise", 100), ("premium", 50), ("standard", 10)]
)
def test_effective_priority_is_the_tiers(tier: str, priority: int) -> None:
    assert spec(tier=tier).effective_priority == priority


def test_effective_priority_defaults_to_standard() -> None:
    assert spec().effective_priority == 10


@pytest.mark.parametrize("override", [0, 1, 75, 1000])
@pytest.mark.parametrize("tier", ["enterprise", "premium", "standard"])
def test_priority_overrides_the_tier(tier: str, override: int) -> None:
    # 0 is a priority, not "unset".
    assert spec(tier=tier, priority=override).effective_priority == override


def test_tier_priorities_are_the_designed_ones() -> None:
    assert dict(defaults.TIER_PRIORITY) == {"enterprise": 100, "premium": 50, "standard": 10}
    assert set(defaults.TIER_PRIORITY) == {t.value for t in Tier}


# --- Errors --------------------------------------------------------------------------------


# The CRD validates bounds, lengths and patterns (tests/unit/test_crd_schema.py); the models
# refuse only what the API server would never have stored: values of the wrong type.
TYPE_ERRORS = [c for c in INVALID_SPECS if "must be of type" in c[3]]


def test_there_are_wrong_type_cases_to_read() -> None:
    assert len(TYPE_ERRORS) >= 6


@pytest.mark.parametrize(
    ("data", "field", "words"), [c[1:] for c in TYPE_ERRORS], ids=[c[0] for c in TYPE_ERRORS]
)
def test_a_value_of_the_wrong_type_raises_naming_the_field(data: dict, field: str,
                                                           words: str) -> None:
    with pytest.raises(SpecError) as caught:
        BackfillSpec.from_dict(data)
    error = caught.value
    assert error.field == field
    assert str(error).startswith(f"{field}: ")
    assert words in str(error)


def test_spec_error_is_a_value_error_and_one_of_ours() -> None:
    with pytest.raises(ValueError, match=r"^spec\.batchSize: "):
        spec(batchSize="many")
    assert issubclass(SpecError, BackfillError)


def test_error_messages_say_what_was_expected_and_what_came() -> None:
    with pytest.raises(SpecError) as caught:
        spec(batchSize="100")
    assert str(caught.value) == "spec.batchSize: must be of type integer, not string"
    with pytest.raises(SpecError) as caught:
        spec(mode="Forever")
    assert str(caught.value) == (
        'spec.mode: Unsupported value: "Forever": supported values: "Once", "Continuous"'
    )


@pytest.mark.parametrize("value", [True, False], ids=repr)
def test_booleans_are_not_integers(value: bool) -> None:
    with pytest.raises(SpecError, match="must be of type integer"):
        spec(batchSize=value)


@pytest.mark.parametrize("data", [None, "spec", ["yachtId"]], ids=repr)
def test_a_spec_that_is_not_an_object_is_refused(data: object) -> None:
    with pytest.raises(SpecError) as caught:
        BackfillSpec.from_dict(data)
    assert caught.value.field in ("spec", "spec.yachtId")


def test_errors_inside_lists_name_the_item() -> None:
    with pytest.raises(SpecError) as caught:
        spec(
            drift={
                "sources": [
                    {"objectType": "work_order", "table": "pms_work_orders"},
                    {"objectType": "equipment", "table": "pms_equipment", "idColumn": 7},
                ]
            }
        )
    assert caught.value.field == "spec.drift.sources[1].idColumn"


# --- Resources -----------------------------------------------------------------------------


def test_resources_default_to_512mi_and_500m_requests_equal_limits() -> None:
    expected = {
        "requests": {"memory": "512Mi", "cpu": "500m"},
        "limits": {"memory": "512Mi", "cpu": "500m"},
    }
    assert spec().resource_requirements() == expected
    assert spec(resources={}).resource_requirements() == expected


def test_a_request_left_out_defaults_to_its_limit() -> None:
    s = spec(resources={"limits": {"memory": "1Gi"}, "requests": {"cpu": "250m"}})
    assert s.resource_requirements() == {
        "requests": {"memory": "1Gi", "cpu": "250m"},
        "limits": {"memory": "1Gi", "cpu": "500m"},
    }


def test_a_request_above_its_limit_is_refused() -> None:
    with pytest.raises(SpecError) as caught:
        spec(resources={"requests": {"memory": "1Gi"}})
    assert caught.value.field == "spec.resources.requests.memory"
    assert "must be less than or equal to memory limit of 512Mi" in str(caught.value)
    with pytest.raises(SpecError) as caught:
        spec(resources={"requests": {"cpu": 1}, "limits": {"cpu": "800m"}})
    assert caught.value.field == "spec.resources.requests.cpu"


@pytest.mark.parametrize(
    ("quantity", "value"),
    [
        ("512Mi", Decimal(512 * 2**20)),
        ("1Gi", Decimal(2**30)),
        ("500m", Decimal("0.5")),
        ("1", Decimal(1)),
        (2, Decimal(2)),
        ("0.5", Decimal("0.5")),
        (".5", Decimal("0.5")),
        ("1k", Decimal(1000)),
        ("1M", Decimal(10**6)),
        ("1E", Decimal(10**18)),
        ("1Ei", Decimal(2**60)),
        ("2e3", Decimal(2000)),
        ("1E-3", Decimal("0.001")),
    ],
    ids=str,
)
def test_parse_quantity(quantity: str | int, value: Decimal) -> None:
    assert parse_quantity(quantity) == value


@pytest.mark.parametrize("quantity", ["", "Mi", "512 Mi", "1MB", "-1", True], ids=repr)
def test_parse_quantity_refuses_non_quantities(quantity: object) -> None:
    with pytest.raises(ValueError, match="not a quantity"):
        parse_quantity(quantity)  # type: ignore[arg-type]


# --- Naming -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("snake", "camel"),
    [
        ("yacht_id", "yachtId"),
        ("batch_sleep_seconds", "batchSleepSeconds"),
        ("tier", "tier"),
        ("dlq", "dlq"),
        ("last_transition_time", "lastTransitionTime"),
        ("updated_at_column", "updatedAtColumn"),
    ],
)
def test_to_camel(snake: str, camel: str) -> None:
    assert to_camel(snake) == camel


def test_job_name_is_deterministic_and_depends_on_every_input() -> None:
    base = job_name("fleet", "aurora-borealis", "uid-1", 1)
    assert base == job_name("fleet", "aurora-borealis", "uid-1", 1)
    assert base.startswith("yb-aurora-borealis-")
    others = {
        job_name("other", "aurora-borealis", "uid-1", 1),
        job_name("fleet", "aurora-borealis", "uid-2", 1),
        job_name("fleet", "aurora-borealis", "uid-1", 2),
    }
    assert base not in others
    assert len(others) == 3


@pytest.mark.parametrize(
    "name", ["a", "aurora-borealis", "m.y.lady.marina", "x" * 253, "a-" * 60, "..."]
)
def test_job_name_is_a_dns_label_of_at_most_63(name: str) -> None:
    result = job_name("fleet", name, "2c1d6f2e-uid", 7)
    assert len(result) <= constants.JOB_NAME_MAX_LENGTH
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", result), result
    assert "--" not in result.removeprefix("yb-")


# --- Status -------------------------------------------------------------------------------------


def test_status_to_dict_is_camel_case_and_leaves_out_unset_fields() -> None:
    status = BackfillStatus(
        phase=Phase.QUEUED,
        queue_position=2,
        effective_priority=50,
        dlq=DlqStatus(unresolved=3),
        started_at=T0,
    )
    assert status.to_dict() == {
        "phase": "Queued",
        "queuePosition": 2,
        "effectivePriority": 50,
        "startedAt": "2025-01-31T12:00:00Z",
        "dlq": {"unresolved": 3},
        "conditions": [],
    }


def test_status_to_dict_can_write_nulls_to_clear_fields_in_a_merge_patch() -> None:
    written = BackfillStatus(phase=Phase.ADMITTED).to_dict(prune_none=False)
    assert written["phase"] == "Admitted"
    assert written["queuePosition"] is None
    assert "queue_position" not in written


def test_status_round_trips() -> None:
    status = BackfillStatus(
        phase=Phase.RUNNING,
        job_name="yb-aurora-borealis-0123456789",
        progress=Progress.from_counts(total=200, done=50, queued=150),
        rate=120.0,
        eta="1m",
        conditions=(
            Condition(
                type=ConditionType.RUNNING,
                status=ConditionStatus.TRUE,
                reason="JobRunning",
                message="running",
                last_transition_time=T0,
                observed_generation=1,
            ),
        ),
    )
    assert BackfillStatus.from_dict(status.to_dict()) == status


def test_status_from_dict_ignores_kopf_bookkeeping() -> None:
    status = BackfillStatus.from_dict({"phase": "Pending", "kopf": {"progress": {}}})
    assert status == BackfillStatus(phase=Phase.PENDING)
    assert BackfillStatus.from_dict(None) == BackfillStatus()


def test_times_are_written_in_utc_with_z() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert format_time(datetime(2025, 1, 31, 14, 0, 5, 123, tzinfo=plus_two)) == (
        "2025-01-31T12:00:05Z"
    )


@pytest.mark.parametrize(
    ("total", "done", "percent"),
    [(200, 50, 25.0), (3, 1, 33.3), (3, 2, 66.7), (10, 10, 100.0), (0, 0, 100.0), (5, 9, 100.0)],
)
def test_progress_percent(total: int, done: int, percent: float) -> None:
    assert Progress.from_counts(total=total, done=done).percent == percent


def _condition(status: ConditionStatus, when: datetime, reason: str = "Why") -> Condition:
    return Condition(
        type=ConditionType.DLQ_GROWING,
        status=status,
        reason=reason,
        message=f"{reason} at {when}",
        last_transition_time=when,
    )


def test_with_condition_adds_and_replaces_by_type() -> None:
    status = BackfillStatus().with_condition(_condition(ConditionStatus.FALSE, T0))
    assert [c.type for c in status.conditions] == ["DLQGrowing"]
    later = T0 + timedelta(minutes=5)
    status = status.with_condition(_condition(ConditionStatus.TRUE, later, "Threshold"))
    (only,) = status.conditions
    assert only.status == ConditionStatus.TRUE
    assert only.last_transition_time == later  # the status changed: the time moves


def test_with_condition_keeps_the_transition_time_when_the_status_is_unchanged() -> None:
    status = BackfillStatus().with_condition(_condition(ConditionStatus.TRUE, T0))
    later = T0 + timedelta(minutes=5)
    status = status.with_condition(_condition(ConditionStatus.TRUE, later, "Critical"))
    (only,) = status.conditions
    assert only.reason == "Critical"
    assert only.last_transition_time == T0
    assert status.condition(ConditionType.DLQ_GROWING) is only
    assert status.condition(ConditionType.DRIFT) is None


def test_condition_needs_its_required_fields() -> None:
    with pytest.raises(SpecError) as caught:
        Condition.from_dict({"type": "Running", "status": "True"}, "status.conditions[0]")
    assert caught.value.field == "status.conditions[0].reason"


# --- Constants ----------------------------------------------------------------------------------


def test_phases_and_condition_types_are_the_designed_ones() -> None:
    assert [p.value for p in Phase] == [
        "Pending",
        "Queued",
        "Admitted",
        "Running",
        "Succeeded",
        "Failed",
        "Suspended",
    ]
    assert [c.value for c in ConditionType] == [
        "Admitted",
        "Running",
        "Complete",
        "Failed",
        "Suspended",
        "DLQGrowing",
        "Drift",
        "Stalled",
    ]


def test_labels_and_annotations_live_under_our_group() -> None:
    assert constants.LABEL_BACKFILL == "f1cortex.io/backfill"
    assert constants.LABEL_YACHT_ID == "f1cortex.io/yacht-id"
    assert constants.LABEL_MANAGED_BY == "app.kubernetes.io/managed-by"
    assert constants.ANNOTATION_REPLAY_DEAD_LETTERS == "f1cortex.io/replay-dead-letters"
    assert constants.API_VERSION == "f1cortex.io/v1alpha1"
