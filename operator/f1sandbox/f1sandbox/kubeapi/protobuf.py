"""Decode the few protobuf bodies kubectl sends, so ``kubectl create namespace|secret|...`` work.

kubectl's typed generators (``create namespace``, ``create secret generic``, ``create
configmap``, ``create serviceaccount``) POST ``application/vnd.kubernetes.protobuf``
and cannot be told to send JSON. Those four types are simple enough to decode with a
table of field numbers from Kubernetes' generated.proto files; any other protobuf body
gets a 415 that says to apply a manifest instead (``kubectl create job`` is one).
"""

from __future__ import annotations

import base64
from typing import Any

from .errors import ApiError

MAGIC = b"k8s\x00"

# Field number -> (name, kind). Kinds: str, bytes, int, bool, msg:<Type>, map:str, map:bytes,
# and a trailing [] for repeated fields.
MESSAGES: dict[str, dict[int, tuple[str, str]]] = {
    "Unknown": {
        1: ("typeMeta", "msg:TypeMeta"),
        2: ("raw", "bytes"),
        3: ("contentEncoding", "str"),
        4: ("contentType", "str"),
    },
    "TypeMeta": {1: ("apiVersion", "str"), 2: ("kind", "str")},
    "ObjectMeta": {
        1: ("name", "str"),
        2: ("generateName", "str"),
        3: ("namespace", "str"),
        5: ("uid", "str"),
        6: ("resourceVersion", "str"),
        11: ("labels", "map:str"),
        12: ("annotations", "map:str"),
        13: ("ownerReferences", "msg:OwnerReference[]"),
        14: ("finalizers", "str[]"),
    },
    "OwnerReference": {
        1: ("kind", "str"),
        3: ("name", "str"),
        4: ("uid", "str"),
        5: ("apiVersion", "str"),
        6: ("controller", "bool"),
        7: ("blockOwnerDeletion", "bool"),
    },
    "Namespace": {1: ("metadata", "msg:ObjectMeta"), 2: ("spec", "msg:NamespaceSpec")},
    "NamespaceSpec": {1: ("finalizers", "str[]")},
    "ConfigMap": {
        1: ("metadata", "msg:ObjectMeta"),
        2: ("data", "map:str"),
        3: ("binaryData", "map:bytes"),
        4: ("immutable", "bool"),
    },
    "Secret": {
        1: ("metadata", "msg:ObjectMeta"),
        2: ("data", "map:bytes"),
        3: ("type", "str"),
        4: ("stringData", "map:str"),
        5: ("immutable", "bool"),
    },
    "ServiceAccount": {
        1: ("metadata", "msg:ObjectMeta"),
        4: ("automountServiceAccountToken", "bool"),
    },
}


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs of a message: ints for varints, bytes for the rest."""
    pos, found = 0, []
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        found.append((number, value))
    return found


def _decode(data: bytes, message: str) -> dict[str, Any]:
    schema = MESSAGES[message]
    result: dict[str, Any] = {}
    for number, value in _fields(data):
        if number not in schema:
            continue
        name, kind = schema[number]
        repeated = kind.endswith("[]")
        kind = kind.removesuffix("[]")
        if kind.startswith("map:"):
            entry = dict(_fields(value))  # type: ignore[arg-type]
            key = bytes(entry.get(1, b"")).decode()
            raw = bytes(entry.get(2, b""))
            item: Any = base64.b64encode(raw).decode() if kind == "map:bytes" else raw.decode()
            result.setdefault(name, {})[key] = item
            continue
        if kind == "str":
            item = bytes(value).decode()  # type: ignore[arg-type]
        elif kind == "bytes":
            item = bytes(value)  # type: ignore[arg-type]
        elif kind == "bool":
            item = bool(value)
        elif kind == "int":
            item = value
        else:
            item = _decode(value, kind.removeprefix("msg:"))  # type: ignore[arg-type]
        if repeated:
            result.setdefault(name, []).append(item)
        else:
            result[name] = item
    return result


def decode_object(body: bytes) -> dict[str, Any]:
    """A JSON-shaped object from a Kubernetes protobuf body, or a 415 for other types."""
    if not body.startswith(MAGIC):
        raise ApiError(415, "the protobuf body lacks the Kubernetes envelope")
    envelope = _decode(body[len(MAGIC) :], "Unknown")
    type_meta = envelope.get("typeMeta") or {}
    kind = type_meta.get("kind", "")
    if kind not in MESSAGES or kind in ("Unknown", "TypeMeta", "ObjectMeta"):
        raise ApiError(
            415,
            f"the emulator decodes protobuf only for Namespace, ConfigMap, "
            f"Secret and ServiceAccount, not {kind or 'this body'}: apply "
            "a YAML manifest instead (kubectl create ... --dry-run=client "
            "-o yaml | kubectl apply -f -)",
        )
    obj = _decode(envelope.get("raw", b""), kind)
    return {"apiVersion": type_meta.get("apiVersion", "v1"), "kind": kind, **obj}
