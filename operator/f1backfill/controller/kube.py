"""The few Kubernetes API calls the reconciler makes, on the official client.

Each method is blocking; the reconciler runs them in a thread. The RBAC role in the chart
grants exactly these verbs: tests/integration/test_rbac.py records the calls the running
operator makes (these and kopf's own) and compares them with the chart's role.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ..constants import GROUP, LABEL_MANAGED_BY, MANAGED_BY, PLURAL, VERSION

log = logging.getLogger(__name__)


def load_config() -> None:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


class Kube:
    def __init__(self, namespaces: tuple[str, ...] = ()) -> None:
        self.namespaces = namespaces
        api = client.ApiClient()
        self.custom = client.CustomObjectsApi(api)
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)

    # -- reads -----------------------------------------------------------------------------
    def list_backfills(self) -> list[dict[str, Any]]:
        if not self.namespaces:
            return self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
        items: list[dict[str, Any]] = []
        for namespace in self.namespaces:
            items += self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL)["items"]
        return items

    def list_jobs(self) -> list[dict[str, Any]]:
        selector = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
        if not self.namespaces:
            result = self.batch.list_job_for_all_namespaces(label_selector=selector)
            return [client.ApiClient().sanitize_for_serialization(j) for j in result.items]
        items: list[dict[str, Any]] = []
        for namespace in self.namespaces:
            result = self.batch.list_namespaced_job(namespace, label_selector=selector)
            items += [client.ApiClient().sanitize_for_serialization(j) for j in result.items]
        return items

    def get_peering(self, name: str, namespace: str | None) -> dict[str, Any] | None:
        try:
            if namespace is None:
                return self.custom.get_cluster_custom_object(
                    "kopf.dev", "v1", "clusterkopfpeerings", name)
            return self.custom.get_namespaced_custom_object(
                "kopf.dev", "v1", namespace, "kopfpeerings", name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    # -- writes ----------------------------------------------------------------------------
    def create_job(self, manifest: dict[str, Any]) -> bool:
        """Create-if-absent: False when a Job of that name already exists (a restart)."""
        try:
            self.batch.create_namespaced_job(manifest["metadata"]["namespace"], manifest)
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise

    def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and (in the background) its pods: their workers get SIGTERM and
        release their claims."""
        try:
            self.batch.delete_namespaced_job(
                name, namespace, body=client.V1DeleteOptions(propagation_policy="Background"))
        except ApiException as exc:
            if exc.status != 404:
                raise

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]
                     ) -> dict[str, Any] | None:
        """Merge-patch the status subresource; None when the backfill is gone."""
        try:
            return self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, {"status": status})
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def post_event(self, backfill: dict[str, str], type_: str, reason: str,
                   message: str) -> None:
        """A core/v1 Event on the backfill, as `kubectl describe` shows them."""
        now = datetime.now(UTC)
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{backfill['name']}.",
                                         namespace=backfill["namespace"]),
            involved_object=client.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}", kind="YachtBackfill",
                name=backfill["name"], namespace=backfill["namespace"],
                uid=backfill["uid"]),
            reason=reason, message=message[:1024], type=type_,
            first_timestamp=now, last_timestamp=now, count=1,
            source=client.V1EventSource(component=MANAGED_BY),
            reporting_component=MANAGED_BY, reporting_instance=MANAGED_BY,
        )
        try:
            self.core.create_namespaced_event(backfill["namespace"], event)
        except ApiException as exc:  # an Event is best effort; the condition stays
            log.warning("could not post event %s on %s: %s", reason, backfill["name"],
                        exc.reason)
