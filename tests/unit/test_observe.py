"""f1backfill.controller.observe: raw API bodies -> the state admission decides from."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from f1backfill.admission import JobState, Verdict
from f1backfill.api import Mode, Phase, Tier
from f1backfill.builders.status import Thresholds, build_status
from f1backfill.constants import LABEL_YACHT_ID
from f1backfill.controller.observe import job_state, observe_backfill, observe_job
from f1backfill.db.figures import YachtFigures
from tests.support.backfills import T0, backfill, backfill_body, job_body, yacht_id

SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"


def condition(type_: str, status: str = "True", reason: str = "", message: str = "",
              ) -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "lastProbeTime": "2025-01-31T12:10:00Z",
            "lastTransitionTime": "2025-01-31T12:10:00Z"}


# --- YachtBackfills -----------------------------------------------------------------------------


def test_a_new_backfill_without_status() -> None:
    sample = yaml.safe_load((SAMPLES / "yachtbackfill-full.yaml").read_text())
    body = backfill_body("lady-marina", "fleet", spec=sample["spec"], generation=3)
    observed = observe_backfill(body)
    assert (observed.namespace, observed.name, observed.generation) == (
        "fleet", "lady-marina", 3)
    assert observed.uid == body["metadata"]["uid"]
    assert observed.created == T0
    assert observed.spec is not None and observed.spec_error == ""
    assert observed.spec.yacht_id == "3cb468f5-738c-4e78-8202-363c8a8be863"
    assert (observed.spec.tier, observed.spec.effective_priority) == (Tier.PREMIUM, 60)
    assert observed.spec.skip_object_types == ("email", "crew_document")
    assert observed.status.phase is None and observed.status.conditions == ()
    assert observed.deleting is False


def test_a_minimal_backfill_gets_the_crds_defaults() -> None:
    observed = observe_backfill(backfill_body(spec={"yachtId": yacht_id(3)}))
    assert observed.spec.mode is Mode.ONCE and observed.spec.batch_size == 100
    assert observed.spec.effective_priority == 10


def test_a_backfill_with_the_status_the_operator_wrote() -> None:
    b = backfill(generation=2)
    status, _ = build_status(
        b, Verdict(Phase.QUEUED, "Waiting", "waiting for a free slot", queue_position=4),
        YachtFigures(total=10, queued=10, unresolved_dlq=3), rate=None, drift=None,
        thresholds=Thresholds(100, 1000), job_name=None, now=T0)
    raw = status.to_dict()
    raw["kopf"] = {"progress": {}}  # kopf's own bookkeeping is ignored
    observed = observe_backfill(backfill_body(generation=2, status=raw))
    assert observed.status == status
    assert observed.status.queue_position == 4


def test_an_unreadable_status_is_rebuilt_not_fatal() -> None:
    body = backfill_body(status={"phase": "Exploded", "queuePosition": -3})
    observed = observe_backfill(body)
    assert observed.spec is not None
    assert observed.status.phase is None


# What the API server would not have stored (a wrong type, an unknown enum value, no yacht)
# and the rule the schema cannot state (a request above its limit).
@pytest.mark.parametrize(("spec", "field"), [
    ({"yachtId": yacht_id(1), "batchSize": "lots"}, "spec.batchSize"),
    ({"yachtId": yacht_id(1), "tier": "platinum"}, "spec.tier"),
    ({"yachtId": 42}, "spec.yachtId"),
    ({}, "spec.yachtId"),
    ({"yachtId": yacht_id(1), "priority": True}, "spec.priority"),
    ({"yachtId": yacht_id(1), "embedding": {"provider": "cohere"}}, "spec.embedding.provider"),
    ({"yachtId": yacht_id(1), "resources": {"requests": {"memory": "2Gi"},
                                            "limits": {"memory": "1Gi"}}},
     "spec.resources.requests.memory"),
])
def test_an_invalid_spec_is_observed_as_none_with_an_error_naming_the_field(
        spec: dict[str, Any], field: str) -> None:
    observed = observe_backfill(backfill_body(spec=spec))
    assert observed.spec is None
    assert observed.spec_error.startswith(f"{field}:")


def test_a_missing_spec_is_invalid() -> None:
    body = backfill_body()
    del body["spec"]
    observed = observe_backfill(body)
    assert observed.spec is None and observed.spec_error == "spec.yachtId: Required value"


def test_a_deletion_timestamp_means_deleting() -> None:
    assert observe_backfill(backfill_body(deleting=True)).deleting is True


def test_missing_optional_metadata_has_safe_defaults() -> None:
    body = backfill_body()
    for key in ("creationTimestamp", "generation"):
        del body["metadata"][key]
    observed = observe_backfill(body)
    assert observed.generation == 1
    assert observed.created.year == 1970


# --- Jobs ---------------------------------------------------------------------------------------


OWNER = backfill("lady-marina", "fleet", yacht=5, uid="0b8f1f9e-2d7c-4c1e-8f55-5a3a2b1c0d9e")


def test_a_job_the_operator_created_is_read_back() -> None:
    job = observe_job(job_body(OWNER, 4))
    assert job is not None
    assert (job.namespace, job.backfill_uid, job.yacht_id, job.admission) == (
        "fleet", OWNER.uid, yacht_id(5), 4)
    assert job.name.startswith("yb-lady-marina-")
    assert job.deleting is False


@pytest.mark.parametrize(("status", "state", "reason"), [
    ({}, JobState.PENDING, ""),
    ({"startTime": "2025-01-31T12:00:00Z"}, JobState.PENDING, ""),
    ({"active": 1, "ready": 0}, JobState.ACTIVE, ""),
    ({"active": 1, "failed": 1}, JobState.ACTIVE, ""),  # retrying a pod is still running
    ({"succeeded": 1}, JobState.SUCCEEDED, ""),
    ({"succeeded": 1, "conditions": [condition("Complete")]}, JobState.SUCCEEDED, ""),
    ({"failed": 3, "conditions": [
        condition("Failed", reason="BackoffLimitExceeded",
                  message="Job has reached the specified backoff limit")]},
     JobState.FAILED, "BackoffLimitExceeded"),
    ({"active": 1, "conditions": [
        condition("Failed", reason="DeadlineExceeded",
                  message="Job was active longer than specified deadline")]},
     JobState.FAILED, "DeadlineExceeded"),
    ({"active": 1, "conditions": [condition("Failed", "False", reason="Whatever")]},
     JobState.ACTIVE, ""),
    ({"failed": 1, "conditions": [condition("Failed", reason="")]},
     JobState.FAILED, "JobFailed"),
], ids=["new", "started", "active", "active-after-a-failed-pod", "succeeded", "complete",
        "backoff-limit", "deadline", "false-condition", "failed-without-reason"])
def test_job_states(status: dict[str, Any], state: JobState, reason: str) -> None:
    job = observe_job(job_body(OWNER, 1, status))
    assert job is not None
    assert (job.state, job.reason) == (state, reason)
    assert job.finished == (state in (JobState.SUCCEEDED, JobState.FAILED))


def test_a_failed_jobs_message_is_kept() -> None:
    state = job_state({"conditions": [condition(
        "Failed", reason="DeadlineExceeded",
        message="Job was active longer than specified deadline")]})
    assert state == (JobState.FAILED, "DeadlineExceeded",
                     "Job was active longer than specified deadline")


def test_a_job_being_deleted() -> None:
    job = observe_job(job_body(OWNER, 1, {"active": 1}, deleting=True))
    assert job is not None and job.deleting is True


def test_a_job_without_our_labels_is_not_ours() -> None:
    body = job_body(OWNER)
    body["metadata"]["labels"] = {"app": "something-else"}
    assert observe_job(body) is None
    del body["metadata"]["labels"]
    assert observe_job(body) is None


def test_a_job_without_an_owner_or_annotation_is_not_ours() -> None:
    body = job_body(OWNER)
    del body["metadata"]["ownerReferences"]
    body["metadata"]["annotations"] = {}
    assert observe_job(body) is None


def test_a_job_controlled_by_something_else_is_not_ours() -> None:
    body = job_body(OWNER)
    body["metadata"]["ownerReferences"] = [{
        "apiVersion": "batch/v1", "kind": "CronJob", "name": "feedback",
        "uid": "9a1b2c3d-0000-4000-8000-000000000001", "controller": True,
        "blockOwnerDeletion": True}]
    body["metadata"]["annotations"] = {}
    assert observe_job(body) is None


def test_an_orphaned_job_is_traced_to_its_backfill_by_annotation() -> None:
    # `kubectl delete yb --cascade=orphan` strips the owner reference; the annotation stays.
    body = job_body(OWNER, 2, {"active": 1})
    del body["metadata"]["ownerReferences"]
    job = observe_job(body)
    assert job is not None
    assert (job.backfill_uid, job.admission, job.state) == (OWNER.uid, 2, JobState.ACTIVE)


def test_a_non_controller_owner_reference_is_not_the_owner() -> None:
    body = job_body(OWNER)
    body["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "other-uid"},
        *body["metadata"]["ownerReferences"]]
    job = observe_job(body)
    assert job is not None and job.backfill_uid == OWNER.uid


def test_a_job_with_a_garbled_admission_label_reads_as_zero() -> None:
    body = job_body(OWNER, 3)
    body["metadata"]["labels"]["f1cortex.io/admission"] = "three"
    job = observe_job(body)
    assert job is not None and job.admission == 0


def test_observing_does_not_modify_the_body() -> None:
    body = job_body(OWNER, 1, {"active": 1})
    before = copy.deepcopy(body)
    observe_job(body)
    assert body == before
    cr = backfill_body(status={"phase": "Queued", "queuePosition": 1})
    cr_before = copy.deepcopy(cr)
    observe_backfill(cr)
    assert cr == cr_before


def test_the_yacht_comes_from_the_jobs_label() -> None:
    body = job_body(OWNER)
    body["metadata"]["labels"][LABEL_YACHT_ID] = yacht_id(42)
    assert observe_job(body).yacht_id == yacht_id(42)

