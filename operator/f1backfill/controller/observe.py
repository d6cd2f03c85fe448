"""Raw API bodies -> the observed state admission decides from. Pure."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ..admission import JobState, ObservedBackfill, ObservedJob
from ..api import BackfillSpec, BackfillStatus, parse_time
from ..constants import ANNOTATION_BACKFILL_UID, GROUP, KIND, LABEL_ADMISSION, LABEL_YACHT_ID
from ..errors import SpecError

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def observe_backfill(body: Mapping[str, Any]) -> ObservedBackfill:
    meta = body.get("metadata", {})
    spec: BackfillSpec | None
    try:
        spec = BackfillSpec.from_dict(body.get("spec") or {})
        error = ""
    except SpecError as exc:
        spec, error = None, str(exc)
    try:
        status = BackfillStatus.from_dict(body.get("status") or {})
    except SpecError as exc:
        # A status we cannot read (written by hand, or by an older operator) is rebuilt.
        log.warning("ignoring unreadable status of %s/%s: %s", meta.get("namespace"),
                    meta.get("name"), exc)
        status = BackfillStatus()
    created = meta.get("creationTimestamp")
    return ObservedBackfill(
        namespace=meta.get("namespace", ""),
        name=meta["name"],
        uid=meta["uid"],
        generation=int(meta.get("generation") or 1),
        created=parse_time(created) if created else _EPOCH,
        spec=spec,
        status=status,
        spec_error=error,
        deleting=bool(meta.get("deletionTimestamp")),
        annotations=dict(meta.get("annotations") or {}),
        resource_version=str(meta.get("resourceVersion") or ""),
    )


def observe_job(body: Mapping[str, Any]) -> ObservedJob | None:
    """A Job of ours; None for a Job that does not carry our labels and owner."""
    meta = body.get("metadata", {})
    labels = meta.get("labels") or {}
    owners = [o for o in meta.get("ownerReferences") or [] if o.get("controller")]
    if owners and (owners[0].get("kind") != KIND
                   or str(owners[0].get("apiVersion", "")).split("/")[0] != GROUP):
        return None  # another controller's Job (a CronJob's, say): never ours to stop
    owner_uid = owners[0]["uid"] if owners else (meta.get("annotations") or {}).get(
        ANNOTATION_BACKFILL_UID)
    if not owner_uid or LABEL_YACHT_ID not in labels:
        return None
    try:
        admission = int(labels.get(LABEL_ADMISSION, "0"))
    except ValueError:
        admission = 0
    state, reason, message = job_state(body.get("status") or {})
    return ObservedJob(
        namespace=meta.get("namespace", ""),
        name=meta["name"],
        backfill_uid=owner_uid,
        yacht_id=labels[LABEL_YACHT_ID],
        admission=admission,
        state=state,
        reason=reason,
        message=message,
        deleting=bool(meta.get("deletionTimestamp")),
        resource_version=str(meta.get("resourceVersion") or ""),
    )


def job_state(status: Mapping[str, Any]) -> tuple[JobState, str, str]:
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return JobState.SUCCEEDED, "", ""
        if condition.get("type") == "Failed":
            return (JobState.FAILED, condition.get("reason") or "JobFailed",
                    condition.get("message") or "")
    if status.get("succeeded"):
        return JobState.SUCCEEDED, "", ""
    if status.get("active"):
        return JobState.ACTIVE, "", ""
    return JobState.PENDING, "", ""
