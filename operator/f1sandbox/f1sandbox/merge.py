"""JSON merge patch (RFC 7386): how the API server applies a ``merge-patch+json`` body.

A leaf module, so that unit tests can apply the status patches the operator writes exactly
as the emulator stores them without importing the emulator (``f1sandbox.kubeapi``, whose
PATCH handling uses this function).
"""

from __future__ import annotations

import copy
from typing import Any


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: a dict merges key by key, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result
