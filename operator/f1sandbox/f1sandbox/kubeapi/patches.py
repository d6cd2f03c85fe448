"""PATCH bodies: JSON merge patch (RFC 7386, in ``f1sandbox.merge``), JSON patch (RFC 6902),
strategic merge (light).

Strategic merge is approximated: maps merge as in a merge patch; the lists Kubernetes
declares with a merge key (containers and env by ``name``, conditions by ``type``,
ownerReferences by ``uid`` ...) merge item by item; ``finalizers`` merges as a set; the
``$patch: delete|replace`` directives work; the other ``$`` directives
(``$setElementOrder``, ``$retainKeys``) are dropped. Any other list is replaced, which is
what the real server does for lists without a patch strategy.
"""

from __future__ import annotations

import copy
from typing import Any

from ..merge import merge_patch
from .errors import ApiError

__all__ = ["json_patch", "merge_patch", "strategic_merge_patch"]

MISSING = object()

# Field name -> merge key, for the lists of the built-in types that kubectl/clients patch.
STRATEGIC_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "conditions": "type",
    "ownerReferences": "uid",
    "imagePullSecrets": "name",
}
STRATEGIC_SET_LISTS = {"finalizers"}


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith("$")}
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [item for item in result.get(field) or [] if item not in value]
        elif key.startswith("$"):
            continue
        elif value is None:
            result.pop(key, None)
        elif isinstance(value, list) and key in STRATEGIC_SET_LISTS:
            merged = list(result.get(key) or [])
            merged.extend(item for item in value if item not in merged)
            result[key] = merged
        elif isinstance(value, list) and key in STRATEGIC_MERGE_KEYS:
            result[key] = _merge_keyed_list(result.get(key) or [], value, STRATEGIC_MERGE_KEYS[key])
        elif isinstance(value, dict) and value.get("$patch") == "delete":
            result.pop(key, None)
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result


def _merge_keyed_list(current: list[Any], patch: list[Any], merge_key: str) -> list[Any]:
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [copy.deepcopy(i) for i in patch if not (isinstance(i, dict) and "$patch" in i)]
    result = [copy.deepcopy(item) for item in current]
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            result.append(copy.deepcopy(item))
            continue
        index = next(
            (
                i
                for i, old in enumerate(result)
                if isinstance(old, dict) and old.get(merge_key) == item[merge_key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                result.pop(index)
        elif index is None:
            result.append(strategic_merge_patch({}, item))
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, f"invalid JSON pointer: {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _resolve(doc: Any, parts: list[str], path: str) -> Any:
    for part in parts:
        if isinstance(doc, dict):
            if part not in doc:
                raise ApiError(422, f"jsonpatch: path {path!r} does not exist")
            doc = doc[part]
        elif isinstance(doc, list):
            try:
                doc = doc[int(part)]
            except (ValueError, IndexError):
                raise ApiError(422, f"jsonpatch: path {path!r} does not exist") from None
        else:
            raise ApiError(422, f"jsonpatch: path {path!r} does not exist")
    return doc


def _add(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    parent = _resolve(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        else:
            try:
                index = int(last)
            except ValueError:
                raise ApiError(422, f"jsonpatch: bad array index in {path!r}") from None
            if not 0 <= index <= len(parent):
                raise ApiError(422, f"jsonpatch: array index out of range in {path!r}")
            parent.insert(index, value)
    else:
        raise ApiError(422, f"jsonpatch: cannot add at {path!r}")
    return doc


def _remove(doc: Any, path: str) -> tuple[Any, Any]:
    parts = _pointer(path)
    if not parts:
        raise ApiError(422, "jsonpatch: cannot remove the whole document")
    parent = _resolve(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        return doc, parent.pop(last)
    if isinstance(parent, list):
        try:
            return doc, parent.pop(int(last))
        except (ValueError, IndexError):
            pass
    raise ApiError(422, f"jsonpatch: path {path!r} does not exist")


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 on a deep copy; a failed ``test`` or a missing path is a 422, as on a server."""
    if not isinstance(operations, list):
        raise ApiError(400, "json patch must be a list of operations")
    doc = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise ApiError(422, f"jsonpatch: malformed operation {op!r}")
        kind, path = op["op"], op["path"]
        if kind == "test":
            actual = _resolve(doc, _pointer(path), path)
            if actual != op.get("value"):
                raise ApiError(
                    422,
                    f"the server rejected our request due to an error in our request: "
                    f"testing value {path} failed",
                )
        elif kind == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            doc, _ = _remove(doc, path)
        elif kind == "replace":
            parts = _pointer(path)
            if not parts:
                doc = copy.deepcopy(op.get("value"))
            else:
                doc, _ = _remove(doc, path)
                doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "move":
            doc, value = _remove(doc, op["from"])
            doc = _add(doc, path, value)
        elif kind == "copy":
            value = copy.deepcopy(_resolve(doc, _pointer(op["from"]), op["from"]))
            doc = _add(doc, path, value)
        else:
            raise ApiError(422, f"jsonpatch: unknown operation {kind!r}")
    return doc
