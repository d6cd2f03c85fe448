"""The few Kubernetes API calls the reconciler makes, on the official client.

Each method is blocking; the reconciler runs them in a thread. The RBAC role in the chart
grants exactly these verbs: tests/integration/test_rbac.py records the calls the running
operator makes (these and kopf's own) and compares them with the chart's role.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
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
    def __init__(self, namespaces: tuple[str, ...] = (),
                 api: client.ApiClient | None = None) -> None:
        """`api`: a configured client; by default, the configuration `load_config` set."""
        self.namespaces = namespaces
        self.api = api = api or client.ApiClient()
        self.custom = client.CustomObjectsApi(api)
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)

    # -- reads -----------------------------------------------------------------------------
    def list_backfills_page(self, namespace: str | None, *, limit: int,
                            token: str | None = None) -> dict[str, Any]:
        """One page of YachtBackfills (all namespaces when `namespace` is None): a List with
        `metadata.continue` while more pages follow."""
        kwargs: dict[str, Any] = {"limit": limit}
        if token:
            kwargs["_continue"] = token
        if namespace is None:
            return self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kwargs)
        return self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                         **kwargs)

    def watch_backfills(self, namespace: str | None, resource_version: str, *,
                        timeout_seconds: int) -> Iterator[dict[str, Any]]:
        """The watch events of YachtBackfills after `resource_version`, bookmarks included,
        until the server ends the watch (after `timeout_seconds`); each event is decoded
        once, from its line."""
        kwargs: dict[str, Any] = {
            "watch": True, "resource_version": resource_version,
            "allow_watch_bookmarks": True, "timeout_seconds": timeout_seconds,
            "_preload_content": False,
            # kopf#860's lesson for our own watch: a connection that goes silent past the
            # server's timeout is dead; give up on it rather than wait for ever.
            "_request_timeout": (10, timeout_seconds + 30)}
        if namespace is None:
            response = self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kwargs)
        else:
            response = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace,
                                                                 PLURAL, **kwargs)
        try:
            pending = b""
            for chunk in response.stream(amt=None, decode_content=False):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
            if pending.strip():
                yield json.loads(pending)
        finally:
            response.close()
            response.release_conn()

    def list_jobs(self) -> list[dict[str, Any]]:
        selector = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
        if not self.namespaces:
            result = self.batch.list_job_for_all_namespaces(label_selector=selector)
            return [self.api.sanitize_for_serialization(j) for j in result.items]
        items: list[dict[str, Any]] = []
        for namespace in self.namespaces:
            result = self.batch.list_namespaced_job(namespace, label_selector=selector)
            items += [self.api.sanitize_for_serialization(j) for j in result.items]
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
