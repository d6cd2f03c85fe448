"""Whether this replica is the one kopf's peering lets act.

kopf pauses a replica while a live peer has a higher (or the same) priority: its watches and
handlers stop. The reconciler is a background task that kopf does not pause, so it asks
the peering object kopf maintains, with kopf's own rule: our identity registered, no other
live peer at our priority or above. kopf documents the rule (docs/peering.rst) but not the
object's `status` format, which this reads: `{identity: {priority, lifetime, lastseen}}`.
tests/integration/test_peering_gate.py runs real kopf processes and fails when kopf's
format or rule drifts from what is read here.

When the peering object appears after the operator started (helm creates custom resources
after Deployments), kopf found nothing to announce itself in and waits for its next
keep-alive, most of a peering lifetime. The gate announces this replica itself, in kopf's
format, as soon as the object exists, so the first admission follows within a tick.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from ..config import OperatorSettings
from .kube import Kube

log = logging.getLogger(__name__)

# How long a replica's keep-alive counts (kopf's settings.peering.lifetime): another
# replica takes over this long after the active one stops renewing.
PEERING_LIFETIME = 60


class PeeringGate:
    def __init__(self, kube: Kube, settings: OperatorSettings, identity: str,
                 priority: int, lifetime: int = PEERING_LIFETIME) -> None:
        self.kube = kube
        self.settings = settings
        self.identity = identity
        self.priority = priority
        self.lifetime = lifetime
        self._missing = False  # said that the peering object is missing

    def active(self) -> bool:
        if self.settings.standalone:
            return True
        name = self.settings.peering_name
        namespace = self.settings.namespaces[0] if self.settings.namespaces else None
        body = self.kube.get_peering(name, namespace)
        if body is None:
            if not self._missing:
                where = f"KopfPeering {namespace}/{name}" if namespace \
                    else f"ClusterKopfPeering {name}"
                log.info("waiting for the peering object %s: nothing is admitted until it "
                         "exists (the chart creates it)", where)
                self._missing = True
            return False
        self._missing = False
        peers = body.get("status") or {}
        now = datetime.now(UTC)
        if self.identity not in peers:
            # kopf announces us at its next keep-alive; announce now, as kopf would.
            peers = {**peers, self.identity: self._announce(name, namespace, now)}
        for identity, info in peers.items():
            if identity == self.identity or not isinstance(info, dict):
                continue
            if _alive(info, now) and int(info.get("priority", 0)) >= self.priority:
                return False
        return True


    def _announce(self, name: str, namespace: str | None, now: datetime) -> dict:
        entry = {"priority": self.priority, "lifetime": self.lifetime,
                 "lastseen": now.isoformat()}
        self.kube.patch_peering(name, namespace, {self.identity: entry})
        return entry


def _alive(info: dict, now: datetime) -> bool:
    """kopf's Peer.is_dead, negated: seen within its lifetime (60 s unless it says)."""
    try:
        seen = datetime.fromisoformat(str(info.get("lastseen")))
        return (now - seen).total_seconds() < float(info.get("lifetime", 60))
    except ValueError:
        return True  # unreadable: assume it lives, the safe side (never two acting)
