"""`f1backfill plan`: a YachtBackfill for every active yacht, for `kubectl apply -f -`.

One CR per active row of `yachts`, replacing the backfill_schedule table the manual
procedure filled from it. The tier carries the priority (enterprise 100, premium 50,
standard 10): spec.priority stays unset so that the tier decides, and a person can still
override one yacht by setting it.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from .constants import API_VERSION, KIND, LABEL_YACHT_ID
from .db import query
from .db.connection import connect
from .errors import ConfigError

# A namespace's name is a DNS-1123 label, as the API server checks it.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def check_namespace(namespace: str) -> None:
    """A ConfigError unless `namespace` is a name the API server accepts for a namespace."""
    if not _DNS_LABEL.fullmatch(namespace):
        raise ConfigError(
            f"{namespace!r} is not a namespace name: at most 63 lowercase letters, digits "
            "and '-', starting and ending with a letter or digit")


def resource_name(yacht_name: str, yacht_id: str) -> str:
    """A DNS-1123 name from the yacht's name, made unique by the start of its id."""
    slug = re.sub(r"[^a-z0-9]+", "-", yacht_name.lower()).strip("-")[:40].strip("-")
    return f"{slug or 'yacht'}-{str(yacht_id)[:8]}"


def backfill_manifest(yacht_id: str, name: str, tier: str, namespace: str | None
                      ) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": resource_name(name, yacht_id),
                                "labels": {LABEL_YACHT_ID: str(yacht_id)}}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata,
            "spec": {"yachtId": str(yacht_id), "yachtName": name, "tier": tier}}


def plan(dsn: str, namespace: str | None = None) -> str:
    if namespace:
        check_namespace(namespace)
    conn = connect(dsn, application_name="f1backfill-plan")
    try:
        with conn.cursor() as cur:
            cur.execute(query("active_yachts"))
            rows = cur.fetchall()
    finally:
        conn.close()
    docs = [backfill_manifest(str(y), n, t, namespace) for y, n, t in rows]
    return yaml.safe_dump_all(docs, sort_keys=False) if docs else ""
