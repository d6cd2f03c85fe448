"""Small factories for the pure unit tests: observed backfills and Jobs, raw API bodies.

Everything here is data; nothing talks to a cluster or a database.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from f1backfill.admission import JobState, ObservedBackfill, ObservedJob
from f1backfill.api import BackfillSpec, BackfillStatus, format_time, job_name
from f1backfill.builders.job import build_job
from f1backfill.config import OperatorSettings
from f1backfill.constants import API_VERSION, KIND

# Whole seconds: the cluster stores times to the second, so statuses round-trip exactly.
T0 = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)


def yacht_id(n: int) -> str:
    """The n-th test yacht's id: a valid lowercase UUID."""
    return f"00000000-0000-4000-8000-{n:012d}"


def settings(**overrides: Any) -> OperatorSettings:
    """Operator settings from an empty environment (the defaults), plus `overrides`."""
    return OperatorSettings.from_env({}, **overrides)


def backfill(
    name: str = "lady-marina",
    namespace: str = "fleet",
    *,
    yacht: int | str = 1,
    spec: dict[str, Any] | None = None,
    status: BackfillStatus | dict[str, Any] | None = None,
    generation: int = 1,
    age: int = 0,
    uid: str | None = None,
    deleting: bool = False,
) -> ObservedBackfill:
    """An observed backfill; `spec` is the CR's camelCase spec without yachtId, `age` the
    minutes after T0 it was created (larger = younger)."""
    raw = {"yachtId": yacht_id(yacht) if isinstance(yacht, int) else yacht, **(spec or {})}
    if isinstance(status, dict):
        status = BackfillStatus.from_dict(status)
    return ObservedBackfill(
        namespace=namespace,
        name=name,
        uid=uid or f"uid-{namespace}-{name}",
        generation=generation,
        created=T0 + timedelta(minutes=age),
        spec=BackfillSpec.from_dict(raw),
        status=status or BackfillStatus(),
        deleting=deleting,
    )


def job_of(
    owner: ObservedBackfill,
    admission: int = 1,
    state: JobState = JobState.ACTIVE,
    *,
    reason: str = "",
    message: str = "",
    deleting: bool = False,
) -> ObservedJob:
    """The Job of one admission of `owner`, as the operator names it."""
    assert owner.spec is not None
    return ObservedJob(
        namespace=owner.namespace,
        name=job_name(owner.namespace, owner.name, owner.uid, admission),
        backfill_uid=owner.uid,
        yacht_id=owner.spec.yacht_id,
        admission=admission,
        state=state,
        reason=reason,
        message=message,
        deleting=deleting,
    )


def backfill_body(
    name: str = "lady-marina",
    namespace: str = "fleet",
    *,
    spec: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    generation: int = 1,
    uid: str = "7d0c2a52-5a7e-4bd4-9d36-0d2f3b6f4c11",
    deleting: bool = False,
) -> dict[str, Any]:
    """A YachtBackfill as the API server returns it."""
    body: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid,
            "generation": generation,
            "resourceVersion": "4711",
            "creationTimestamp": format_time(T0),
        },
        "spec": {"yachtId": yacht_id(1)} if spec is None else spec,
    }
    if status is not None:
        body["status"] = status
    if deleting:
        body["metadata"]["deletionTimestamp"] = format_time(T0 + timedelta(hours=1))
    return body


def job_body(
    owner: ObservedBackfill,
    admission: int = 1,
    status: dict[str, Any] | None = None,
    *,
    deleting: bool = False,
) -> dict[str, Any]:
    """The Job the operator creates for `owner`, as the API server returns it later."""
    body = copy.deepcopy(build_job(owner, admission, settings()))
    body["metadata"].update({
        "uid": f"job-uid-{admission}",
        "resourceVersion": "815",
        "creationTimestamp": format_time(T0),
    })
    if deleting:
        body["metadata"]["deletionTimestamp"] = format_time(T0 + timedelta(hours=1))
    body["status"] = status or {}
    return body
