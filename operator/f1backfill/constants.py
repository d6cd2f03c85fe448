"""Names the operator, the Jobs it creates and the cluster agree on.

The CustomResourceDefinition in `crds/yachtbackfill.yaml` is the contract; these are its names
in Python. `tests/unit/test_crd_models_drift.py` fails when the two disagree.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

# --- The custom resource -------------------------------------------------------------------

GROUP: Final = "f1cortex.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "YachtBackfill"
PLURAL: Final = "yachtbackfills"
SINGULAR: Final = "yachtbackfill"
SHORT_NAME: Final = "yb"
CATEGORY: Final = "f1cortex"
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

# --- Labels, annotations, finalizer --------------------------------------------------------

# On every Job (and its pods): which backfill and which yacht it works for. Label values are
# capped at 63 characters; a UUID is 36 and the CR name is truncated by the Job name builder.
LABEL_BACKFILL: Final = f"{GROUP}/backfill"
LABEL_YACHT_ID: Final = f"{GROUP}/yacht-id"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "f1backfill-operator"
LABEL_NAME: Final = "app.kubernetes.io/name"
WORKER_APP_NAME: Final = "f1backfill-worker"  # LABEL_NAME of the Jobs and their pods
# On each Job: which admission of its backfill it runs (the N of job_name(..., N)).
LABEL_ADMISSION: Final = f"{GROUP}/admission"
# On each Job: its backfill's uid (names can be reused, uids cannot), which the operator
# reads when a Job carries no controller ownerReference.
ANNOTATION_BACKFILL_UID: Final = f"{GROUP}/backfill-uid"

# Set on a YachtBackfill to act on the yacht's dead letters once per new value (the value
# acted on is recorded in status.dlq). `replay` re-queues them, `abandon` marks them
# resolved without re-embedding.
ANNOTATION_REPLAY_DEAD_LETTERS: Final = f"{GROUP}/replay-dead-letters"
ANNOTATION_ABANDON_DEAD_LETTERS: Final = f"{GROUP}/abandon-dead-letters"

# --- Jobs ------------------------------------------------------------------------------------

# Job names are `yb-<cr name, truncated>-<hash>`: deterministic, so an operator restarted at
# any moment finds the Job it already created instead of creating a second one.
# See `f1backfill.api.job_name`.
JOB_NAME_PREFIX: Final = "yb"
# The Job controller copies the Job name into the pods' `job-name` label, capped at 63.
JOB_NAME_MAX_LENGTH: Final = 63
JOB_NAME_HASH_LENGTH: Final = 10

# --- Phases, conditions, providers ---------------------------------------------------


class Phase(StrEnum):
    """`status.phase`: where a backfill is in its life."""

    PENDING = "Pending"
    QUEUED = "Queued"
    ADMITTED = "Admitted"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


class ConditionType(StrEnum):
    """`status.conditions[].type`: the conditions the operator raises."""

    ADMITTED = "Admitted"
    RUNNING = "Running"
    COMPLETE = "Complete"
    FAILED = "Failed"
    SUSPENDED = "Suspended"
    DLQ_GROWING = "DLQGrowing"
    DRIFT = "Drift"
    # kstatus' abnormal-true condition: a permanent error (a database never migrated, a
    # request the API server refuses) blocks reconciliation until a person acts. Present
    # only on a backfill that has been stalled; False again once a reconciliation passes.
    STALLED = "Stalled"


class Provider(StrEnum):
    """Who computes the embeddings: `spec.embedding.provider`, EMBEDDING_PROVIDER and
    DEFAULT_EMBEDDING_PROVIDER all take these values."""

    OPENAI = "openai"  # the OpenAI API, or any server speaking it (OPENAI_BASE_URL)
    HASH = "hash"  # offline feature hashing: no key, no network


# Cloudflare's API, where generations are published to the edge Worker's KV (edgekv.py).
CLOUDFLARE_API: Final = "https://api.cloudflare.com/client/v4"
