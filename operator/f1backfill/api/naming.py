"""Deterministic names of the objects the operator creates for a YachtBackfill."""

from __future__ import annotations

import hashlib
import re

from ..constants import JOB_NAME_HASH_LENGTH, JOB_NAME_MAX_LENGTH, JOB_NAME_PREFIX


def job_name(namespace: str, name: str, uid: str, admission: int) -> str:
    """The Job of one admission of a backfill: `yb-<name, truncated>-<hash>`.

    The same inputs always give the same name, so an operator restarted between deciding to
    admit and seeing the Job finds the Job instead of creating a second one. The hash covers
    the namespace and uid (a backfill deleted and re-created under the same name gets new
    Jobs) and the admission counter (a Continuous backfill gets a new Job per admission).
    The result is a DNS-1123 label of at most 63 characters, as the pods' `job-name` label
    needs.
    """
    digest = hashlib.sha256(f"{namespace}/{name}/{uid}/{admission}".encode()).hexdigest()
    suffix = digest[:JOB_NAME_HASH_LENGTH]
    room = JOB_NAME_MAX_LENGTH - len(JOB_NAME_PREFIX) - len(suffix) - 2  # two dashes
    # CR names are DNS subdomains and may hold dots; a label may not.
    readable = re.sub(r"[^a-z0-9-]", "-", name.lower())[:room].strip("-")
    parts = [JOB_NAME_PREFIX, readable, suffix] if readable else [JOB_NAME_PREFIX, suffix]
    return "-".join(parts)
