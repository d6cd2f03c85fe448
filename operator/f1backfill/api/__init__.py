"""The YachtBackfill custom resource in Python: typed spec and status models.

These mirror `crds/yachtbackfill.yaml` field for field (snake_case here, camelCase there,
mapped by `to_camel`); tests/unit/test_crd_models_drift.py fails when they drift apart.
"""

from ..constants import ConditionType, Phase
from .fields import (
    Quantity,
    format_time,
    parse_quantity,
    parse_time,
    to_camel,
    to_camel_dict,
)
from .naming import job_name
from .spec import (
    DEFAULT_DRIFT_SOURCES,
    BackfillSpec,
    DriftSource,
    DriftSpec,
    EmbeddingSpec,
    Mode,
    Provider,
    RateLimitSpec,
    ResourceList,
    ResourcesSpec,
    Tier,
)
from .status import (
    BackfillStatus,
    Condition,
    ConditionStatus,
    DlqStatus,
    DriftStatus,
    Progress,
    merge_conditions,
)

__all__ = [
    "DEFAULT_DRIFT_SOURCES",
    "BackfillSpec",
    "BackfillStatus",
    "Condition",
    "ConditionStatus",
    "ConditionType",
    "DlqStatus",
    "DriftSource",
    "DriftSpec",
    "DriftStatus",
    "EmbeddingSpec",
    "Mode",
    "Phase",
    "Progress",
    "Provider",
    "Quantity",
    "RateLimitSpec",
    "ResourceList",
    "ResourcesSpec",
    "Tier",
    "format_time",
    "job_name",
    "merge_conditions",
    "parse_quantity",
    "parse_time",
    "to_camel",
    "to_camel_dict",
]
