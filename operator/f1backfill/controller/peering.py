"""Whether this replica is the one kopf's peering lets act.

kopf pauses a replica while a live peer has a higher (or the same) priority: its watches and
handlers stop. The reconciler is a background task that kopf does not pause, so it asks
the peering object kopf maintains, with kopf's own rule: our identity registered, no other
live peer at our priority or above. kopf documents the rule (docs/peering.rst) but not the
object's `status` format, which this reads: `{identity: {priority, lifetime, lastseen}}`.
tests/integration/test_peering_gate.py runs real kopf processes and fails when kopf's
format or rule drifts from what is read here.
"""

from __future__ import annotations

from datetime import UTC, datetime

from ..config import OperatorSettings
from .kube import Kube


class PeeringGate:
    def __init__(self, kube: Kube, settings: OperatorSettings, identity: str,
                 priority: int) -> None:
        self.kube = kube
        self.settings = settings
        self.identity = identity
        self.priority = priority

    def active(self) -> bool:
        if self.settings.standalone:
            return True
        namespace = self.settings.namespaces[0] if self.settings.namespaces else None
        body = self.kube.get_peering(self.settings.peering_name, namespace)
        peers = (body or {}).get("status") or {}
        if self.identity not in peers:
            return False  # kopf has not announced us yet
        now = datetime.now(UTC)
        for identity, info in peers.items():
            if identity == self.identity or not isinstance(info, dict):
                continue
            if _alive(info, now) and int(info.get("priority", 0)) >= self.priority:
                return False
        return True


def _alive(info: dict, now: datetime) -> bool:
    """kopf's Peer.is_dead, negated: seen within its lifetime (60 s unless it says)."""
    try:
        seen = datetime.fromisoformat(str(info.get("lastseen")))
        return (now - seen).total_seconds() < float(info.get("lifetime", 60))
    except ValueError:
        return True  # unreadable: assume it lives, the safe side (never two acting)
