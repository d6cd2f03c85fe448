"""The few Kubernetes API calls the reconciler makes, on the official client.

Each method is blocking; the reconciler runs them in a thread. The RBAC role in the chart
grants exactly these verbs: tests/integration/test_rbac.py records the calls the running
operator makes (these and kopf's own) and compares them with the chart's role.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ..constants import API_VERSION, GROUP, KIND, LABEL_MANAGED_BY, MANAGED_BY, PLURAL, VERSION
from ..errors import BackfillError, ConfigError, KubeRefused, KubeUnavailable

log = logging.getLogger(__name__)

JOB_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"


def _page(limit: int, token: str | None) -> dict[str, Any]:
    return {"limit": limit, "_continue": token} if token else {"limit": limit}


def _watch(resource_version: str, timeout_seconds: int) -> dict[str, Any]:
    return {"watch": True, "resource_version": resource_version,
            "allow_watch_bookmarks": True, "timeout_seconds": timeout_seconds,
            # kopf#860's lesson for our own watches: a connection that goes silent past the
            # server's timeout is dead; give up on it rather than wait for ever.
            "_request_timeout": (10, timeout_seconds + 30)}


def describe_error(exc: BaseException) -> str:
    """An API error in one line: its status, reason and the server's message, without the
    headers and body dump of ApiException's str()."""
    if isinstance(exc, ApiException):
        message = ""
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            message = json.loads(exc.body).get("message") or ""
        return " ".join(part for part in (str(exc.status), exc.reason or "", message) if part)
    return f"{type(exc).__name__}: {exc}"


# Statuses that say the request itself is refused, and will be until a person acts (RBAC,
# a quota, an object the server finds invalid); anything else (5xx, 429, a 401 before the
# in-cluster token is refreshed, no connection at all) may pass when tried again.
_REFUSED = frozenset({400, 403, 404, 405, 409, 410, 415, 422})


@contextlib.contextmanager
def _translated(*, missing_ok: bool = False) -> Iterator[None]:
    """The client's exceptions as the package's: KubeRefused or KubeUnavailable.
    `missing_ok`: a 404 is an answer (the object is gone), not an error."""
    try:
        yield
    except ApiException as exc:
        if missing_ok and exc.status == 404:
            return
        if exc.status in _REFUSED:
            raise KubeRefused(describe_error(exc), exc.status) from exc
        raise KubeUnavailable(describe_error(exc)) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise KubeUnavailable(describe_error(exc)) from exc


def load_config() -> None:
    """In a pod, its service account; elsewhere, the kubeconfig (KUBECONFIG or
    ~/.kube/config), as kubectl finds it."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError) as exc:
            raise ConfigError(
                "no Kubernetes API to talk to: not in a pod, and no usable kubeconfig "
                f"(set KUBECONFIG or write ~/.kube/config): {str(exc).splitlines()[0]}"
            ) from None


class EventStream:
    """The events of one watch request, decoded line by line as they arrive. `close()`, from
    any thread, ends the iteration at once: a stopping informer need not wait for the next
    event or bookmark of a quiet server."""

    def __init__(self, response: Any) -> None:
        self.response = response
        self.closed = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            pending = b""
            for chunk in self.response.stream(amt=None, decode_content=False):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
            if pending.strip():
                yield json.loads(pending)
        finally:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        # Closing a socket does not wake a thread blocked reading it; shutting it down does.
        sock = getattr(getattr(self.response, "connection", None), "sock", None)
        with contextlib.suppress(OSError):
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(Exception):  # a connection another thread was reading
            self.response.close()
            self.response.release_conn()


class Kube:
    def __init__(self, api: client.ApiClient | None = None) -> None:
        """`api`: a configured client; by default, the configuration `load_config` set."""
        self.api = api = api or client.ApiClient()
        self.custom = client.CustomObjectsApi(api)
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)

    # -- reads -----------------------------------------------------------------------------
    def list_backfills_page(self, namespace: str | None, limit: int,
                            token: str | None = None) -> dict[str, Any]:
        """One page of YachtBackfills (all namespaces when `namespace` is None): a List with
        `metadata.continue` while more pages follow."""
        if namespace is None:
            return self._raw(self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL,
                             **_page(limit, token))
        return self._raw(self.custom.list_namespaced_custom_object, GROUP, VERSION,
                         namespace, PLURAL, **_page(limit, token))

    def watch_backfills(self, namespace: str | None, resource_version: str,
                        timeout_seconds: int) -> EventStream:
        """The watch events of YachtBackfills after `resource_version`, bookmarks included,
        until the server ends the watch (after `timeout_seconds`)."""
        options = _watch(resource_version, timeout_seconds)
        if namespace is None:
            return self._events(self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL,
                                **options)
        return self._events(self.custom.list_namespaced_custom_object, GROUP, VERSION,
                            namespace, PLURAL, **options)

    def list_jobs_page(self, namespace: str | None, limit: int,
                       token: str | None = None) -> dict[str, Any]:
        """One page of the Jobs this operator manages (by label)."""
        options = {"label_selector": JOB_SELECTOR, **_page(limit, token)}
        if namespace is None:
            return self._raw(self.batch.list_job_for_all_namespaces, **options)
        return self._raw(self.batch.list_namespaced_job, namespace, **options)

    def watch_jobs(self, namespace: str | None, resource_version: str,
                   timeout_seconds: int) -> EventStream:
        options = {"label_selector": JOB_SELECTOR,
                   **_watch(resource_version, timeout_seconds)}
        if namespace is None:
            return self._events(self.batch.list_job_for_all_namespaces, **options)
        return self._events(self.batch.list_namespaced_job, namespace, **options)

    @staticmethod
    def _raw(call: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """A response as JSON, not as the client's model objects (a list of thousands of
        models costs more to build than the dict it came from)."""
        response = call(*args, _preload_content=False, **kwargs)
        try:
            return json.loads(response.data)
        finally:
            response.release_conn()

    @staticmethod
    def _events(call: Callable[..., Any], *args: Any, **kwargs: Any) -> EventStream:
        """A watch's events, each decoded once, from its line."""
        return EventStream(call(*args, _preload_content=False, **kwargs))

    def get_peering(self, name: str, namespace: str | None) -> dict[str, Any] | None:
        with _translated(missing_ok=True):
            if namespace is None:
                return self.custom.get_cluster_custom_object(
                    "kopf.dev", "v1", "clusterkopfpeerings", name)
            return self.custom.get_namespaced_custom_object(
                "kopf.dev", "v1", namespace, "kopfpeerings", name)
        return None

    # -- writes ----------------------------------------------------------------------------
    def patch_peering(self, name: str, namespace: str | None,
                      peers: dict[str, Any]) -> None:
        """Merge `peers` into the peering object's status, as kopf's keep-alive does (the
        peering CRDs have no status subresource)."""
        body = {"status": peers}
        with _translated():
            if namespace is None:
                self.custom.patch_cluster_custom_object(
                    "kopf.dev", "v1", "clusterkopfpeerings", name, body)
            else:
                self.custom.patch_namespaced_custom_object(
                    "kopf.dev", "v1", namespace, "kopfpeerings", name, body)

    def create_job(self, manifest: dict[str, Any]) -> bool:
        """Create-if-absent: False when a Job of that name already exists (a restart)."""
        try:
            with _translated():
                self.batch.create_namespaced_job(manifest["metadata"]["namespace"], manifest)
            return True
        except KubeRefused as exc:
            if exc.status == 409:
                return False
            raise

    def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and (in the background) its pods: their workers get SIGTERM and
        release their claims."""
        with _translated(missing_ok=True):
            self.batch.delete_namespaced_job(
                name, namespace, body=client.V1DeleteOptions(propagation_policy="Background"))

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]
                     ) -> dict[str, Any] | None:
        """Merge-patch the status subresource; None when the backfill is gone."""
        with _translated(missing_ok=True):
            return self._raw(self.custom.patch_namespaced_custom_object_status,
                             GROUP, VERSION, namespace, PLURAL, name, {"status": status})
        return None

    def post_event(self, backfill: dict[str, str], type_: str, reason: str,
                   message: str) -> None:
        """A core/v1 Event on the backfill, as `kubectl describe` shows them."""
        now = datetime.now(UTC)
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{backfill['name']}.",
                                         namespace=backfill["namespace"]),
            involved_object=client.V1ObjectReference(
                api_version=API_VERSION, kind=KIND,
                name=backfill["name"], namespace=backfill["namespace"],
                uid=backfill["uid"]),
            reason=reason, message=message[:1024], type=type_,
            first_timestamp=now, last_timestamp=now, count=1,
            source=client.V1EventSource(component=MANAGED_BY),
            reporting_component=MANAGED_BY, reporting_instance=MANAGED_BY,
        )
        try:
            with _translated():
                self.core.create_namespaced_event(backfill["namespace"], event)
        except BackfillError as exc:  # an Event is best effort; the condition stays
            log.warning("could not post event %s on %s: %s", reason, backfill["name"], exc)
