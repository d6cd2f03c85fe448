"""The in-memory object store: the API server's semantics without HTTP.

Objects live in ``{(group, plural): {namespace: {name: object}}}`` (namespace ``''`` for
cluster-scoped resources), so a read or a write costs the same with 10 or 10,000 objects.
A stored object is never mutated: every write builds a new dict, so the watch history can
keep references to old versions without copying them.

Every method runs on the server's event loop thread (``KubeAPI`` routes calls from other
threads there), which is what makes it safe to feed the watchers' asyncio queues directly.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import copy
import datetime as dt
import json
import random
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import errors
from .errors import ApiError
from .registry import ResourceDef, builtin_resources, resource_from_crd
from .selectors import Predicate

Key = tuple[str, str]  # (group, plural)

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the server's: no vowels, no 0/1/3
CRD_KEY: Key = ("apiextensions.k8s.io", "customresourcedefinitions")
NAMESPACE_KEY: Key = ("", "namespaces")


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class WatchEvent:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    obj: dict[str, Any]
    old: dict[str, Any] | None


@dataclass(eq=False)
class Watcher:
    """One open watch request: its filters and the queue its HTTP handler drains."""

    key: Key
    namespace: str | None
    predicate: Predicate | None
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)

    def matches(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        if self.namespace is not None and obj["metadata"].get("namespace") != self.namespace:
            return False
        return self.predicate is None or self.predicate(obj)

    def view(self, event_type: str, obj: dict[str, Any], old: dict[str, Any] | None) -> str | None:
        """What this watcher sees of a change, like the server's filtered watch.

        An object that starts matching the selectors arrives as ADDED, one that stops
        matching as DELETED, as ``kube-apiserver``'s watch cache does.
        """
        was, now = self.matches(old), self.matches(obj)
        if event_type == "DELETED":
            return "DELETED" if now else None
        if was and now:
            return "MODIFIED"
        if now:
            return "ADDED"
        return "DELETED" if was else None

    def offer(self, event_type: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        seen = self.view(event_type, obj, old)
        if seen is not None:
            self.queue.put_nowait((seen, obj))


class Store:
    def __init__(self, *, history_limit: int = 10_000, strict_namespaces: bool = True) -> None:
        self.history_limit = history_limit
        self.strict_namespaces = strict_namespaces
        self.resources: dict[Key, ResourceDef] = {}
        self.objects: dict[Key, dict[str, dict[str, dict[str, Any]]]] = {}
        self.history: dict[Key, collections.deque[WatchEvent]] = {}
        self.compacted: dict[Key, int] = {}  # events at or below this rv are forgotten
        self.watchers: dict[Key, set[Watcher]] = collections.defaultdict(set)
        self.uids: dict[str, tuple[Key, str, str]] = {}
        self.dependents: dict[str, set[tuple[Key, str, str]]] = collections.defaultdict(set)
        self.rv = 1000
        self.request_counts: collections.Counter[str] = collections.Counter()
        for resource in builtin_resources():
            self.register(resource)

    # ------------------------------------------------------------------ registry

    def register(self, resource: ResourceDef) -> None:
        self.resources[resource.key] = resource
        self.objects.setdefault(resource.key, {})
        if resource.key not in self.history:
            self.history[resource.key] = collections.deque()
            self.compacted[resource.key] = self.rv

    def unregister(self, key: Key) -> None:
        self.resources.pop(key, None)
        self.objects.pop(key, None)
        self.history.pop(key, None)
        self.compacted.pop(key, None)
        for watcher in self.watchers.pop(key, set()):
            watcher.queue.put_nowait(None)  # close the stream: the resource is gone

    def find(self, group: str, version: str, plural: str) -> ResourceDef:
        resource = self.resources.get((group, plural))
        if resource is None or version not in resource.versions:
            raise ApiError(404, "the server could not find the requested resource", details={})
        return resource

    def lookup(self, name: str) -> ResourceDef:
        """A resource by plural, ``plural.group``, kind, singular or short name."""
        plural, _, group = name.partition(".")
        candidates = [r for r in self.resources.values() if not group or r.group == group]
        for resource in sorted(candidates, key=lambda r: (r.group != "", r.group)):
            names = {
                resource.plural,
                resource.singular,
                resource.kind.lower(),
                *resource.short_names,
            }
            if plural.lower() in names:
                return resource
        raise KeyError(name)

    # ------------------------------------------------------------------ reads

    def get(self, resource: ResourceDef, namespace: str | None, name: str) -> dict[str, Any]:
        ns = (namespace or "") if resource.namespaced else ""
        obj = self.objects[resource.key].get(ns, {}).get(name)
        if obj is None:
            raise errors.not_found(resource.plural, resource.group, name)
        return obj

    def iter_objects(
        self, resource: ResourceDef, namespace: str | None
    ) -> Iterator[dict[str, Any]]:
        by_namespace = self.objects.get(resource.key, {})
        if resource.namespaced and namespace is not None:
            yield from by_namespace.get(namespace, {}).values()
        else:
            for objs in by_namespace.values():
                yield from objs.values()

    def list(
        self, resource: ResourceDef, namespace: str | None, predicate: Predicate | None
    ) -> list[dict[str, Any]]:
        found = [
            obj
            for obj in self.iter_objects(resource, namespace)
            if predicate is None or predicate(obj)
        ]
        found.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return found

    # ------------------------------------------------------------------ watches

    def subscribe(
        self,
        resource: ResourceDef,
        namespace: str | None,
        predicate: Predicate | None,
        since: str | None,
        send_initial: bool,
    ) -> tuple[Watcher, list[tuple[str, dict[str, Any]]]]:
        """Open a watch; return it and the events it must send before the live ones.

        No resourceVersion (or "0") starts with a synthetic ADDED per existing object;
        a resourceVersion replays the history after it, or is a 410 if it is forgotten.
        """
        watcher = Watcher(resource.key, namespace if resource.namespaced else None, predicate)
        backlog: list[tuple[str, dict[str, Any]]] = []
        if since in (None, "", "0") or send_initial:
            backlog = [("ADDED", obj) for obj in self.list(resource, namespace, predicate)]
        else:
            try:
                since_rv = int(since)
            except ValueError:
                raise ApiError(400, f"invalid resource version: {since!r}") from None
            if since_rv < self.compacted[resource.key]:
                raise ApiError(
                    410,
                    f"too old resource version: {since_rv} ({self.compacted[resource.key]})",
                    reason="Expired",
                )
            events = []
            for event in reversed(self.history[resource.key]):
                if event.rv <= since_rv:
                    break
                events.append(event)
            for event in reversed(events):
                seen = watcher.view(event.type, event.obj, event.old)
                if seen is not None:
                    backlog.append((seen, event.obj))
        self.watchers[resource.key].add(watcher)
        return watcher, backlog

    def unsubscribe(self, watcher: Watcher) -> None:
        self.watchers.get(watcher.key, set()).discard(watcher)

    def close_all_watches(self) -> None:
        for watchers in self.watchers.values():
            for watcher in watchers:
                watcher.queue.put_nowait(None)

    def _record(
        self,
        resource: ResourceDef,
        event_type: str,
        obj: dict[str, Any],
        old: dict[str, Any] | None,
    ) -> None:
        history = self.history[resource.key]
        history.append(WatchEvent(self.rv, event_type, obj, old))
        while len(history) > self.history_limit:
            self.compacted[resource.key] = history.popleft().rv
        for watcher in list(self.watchers.get(resource.key, ())):
            watcher.offer(event_type, obj, old)

    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    # ------------------------------------------------------------------ writes

    def create(
        self,
        resource: ResourceDef,
        namespace: str | None,
        body: dict[str, Any],
        *,
        dry_run: bool = False,
        strict_fields: bool = False,
    ) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "the body of the request must be a JSON object")
        obj = copy.deepcopy(body)
        obj["apiVersion"] = resource.api_version()
        obj["kind"] = resource.kind
        meta = obj.setdefault("metadata", {}) or {}
        obj["metadata"] = meta
        if resource.namespaced:
            given = meta.get("namespace")
            if given and namespace and given != namespace:
                raise ApiError(
                    400,
                    "the namespace of the provided object does not match "
                    "the namespace sent on the request",
                )
            namespace = namespace or given
            if not namespace:
                raise ApiError(400, "a namespace is required for namespaced resources")
            meta["namespace"] = namespace
            self._check_namespace_open(resource, namespace)
        else:
            meta.pop("namespace", None)
            namespace = ""
        if not meta.get("name"):
            prefix = meta.get("generateName")
            if not prefix:
                raise errors.invalid(
                    resource.kind,
                    "",
                    [
                        {
                            "reason": "FieldValueRequired",
                            "field": "metadata.name",
                            "message": "Required value: name or generateName is required",
                        }
                    ],
                )
            suffix = "".join(random.choices(_GENERATE_ALPHABET, k=5))
            meta["name"] = f"{prefix}{suffix}"
        name = meta["name"]
        existing = self.objects[resource.key].get(namespace, {}).get(name)
        if existing is not None:
            raise errors.already_exists(resource.plural, resource.group, name)
        for key in (
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
        ):
            meta.pop(key, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        if resource.has_status and resource.key != CRD_KEY:
            obj.pop("status", None)  # status is written through /status only
        self._prepare(resource, obj, None, strict_fields=strict_fields)
        if dry_run:
            return obj
        meta["resourceVersion"] = self._next_rv()
        self._store(resource, obj)
        self._record(resource, "ADDED", obj, None)
        self._after_write(resource, obj, None)
        return obj

    def replace(
        self,
        resource: ResourceDef,
        namespace: str | None,
        name: str,
        body: dict[str, Any],
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        strict_fields: bool = False,
    ) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "the body of the request must be a JSON object")
        old = self.get(resource, namespace, name)
        body_name = (body.get("metadata") or {}).get("name")
        if body_name and body_name != name:
            raise ApiError(400, "the name of the object does not match the name on the URL")
        given_rv = (body.get("metadata") or {}).get("resourceVersion")
        if given_rv and given_rv != old["metadata"]["resourceVersion"]:
            raise errors.conflict(resource.plural, resource.group, name)
        new = copy.deepcopy(body)
        return self._update(
            resource,
            old,
            new,
            subresource=subresource,
            dry_run=dry_run,
            strict_fields=strict_fields,
        )

    def patch(
        self,
        resource: ResourceDef,
        namespace: str | None,
        name: str,
        apply_patch: Callable[[dict[str, Any]], Any],
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        strict_fields: bool = False,
    ) -> dict[str, Any]:
        old = self.get(resource, namespace, name)
        new = apply_patch(old)
        if not isinstance(new, dict):
            raise ApiError(422, "the patch made the object something other than an object")
        new_meta = new.get("metadata") or {}
        if new_meta.get("resourceVersion") not in (None, old["metadata"]["resourceVersion"]):
            raise errors.conflict(resource.plural, resource.group, name)
        return self._update(
            resource,
            old,
            copy.deepcopy(new),
            subresource=subresource,
            dry_run=dry_run,
            strict_fields=strict_fields,
        )

    def _update(
        self,
        resource: ResourceDef,
        old: dict[str, Any],
        new: dict[str, Any],
        *,
        subresource: str | None,
        dry_run: bool,
        strict_fields: bool = False,
    ) -> dict[str, Any]:
        if subresource not in (None, "status"):
            raise ApiError(
                404,
                f"the server could not find the requested resource (subresource {subresource!r})",
            )
        if subresource == "status":
            if not resource.has_status:
                raise ApiError(404, "the server could not find the requested resource")
            # The status subresource changes the status and nothing else.
            status = new.get("status")
            new = copy.deepcopy(old)
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
        elif resource.has_status and resource.key != CRD_KEY:
            # The main resource does not change the status when it has a subresource.
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        new["apiVersion"] = resource.api_version()
        new["kind"] = resource.kind
        meta = new.get("metadata")
        if not isinstance(meta, dict):
            meta = new["metadata"] = {}
        old_meta = old["metadata"]
        for key in (
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "resourceVersion",
        ):
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        meta.pop("managedFields", None)
        if old_meta.get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
            if added:
                raise errors.invalid(
                    resource.kind,
                    old_meta["name"],
                    [
                        {
                            "reason": "FieldValueForbidden",
                            "field": "metadata.finalizers",
                            "message": "Forbidden: no new finalizers can be added if the object is "
                            "being deleted",
                        }
                    ],
                )
        if not meta.get("finalizers"):
            meta.pop("finalizers", None)
        self._prepare(resource, new, old, strict_fields=strict_fields)
        if _spec_of(new, resource) != _spec_of(old, resource):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        if new == old:
            return old  # a no-op write keeps the resourceVersion and sends no event
        if dry_run:
            return new
        meta["resourceVersion"] = self._next_rv()
        self._store(resource, new)
        self._record(resource, "MODIFIED", new, old)
        self._after_write(resource, new, old)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._remove(resource, new)
        return new

    def delete(
        self,
        resource: ResourceDef,
        namespace: str | None,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        dry_run: bool = False,
    ) -> tuple[dict[str, Any], bool]:
        """Delete or mark for deletion; return the object and whether it is gone."""
        options = options or {}
        obj = self.get(resource, namespace, name)
        preconditions = options.get("preconditions") or {}
        if preconditions.get("uid") and preconditions["uid"] != obj["metadata"]["uid"]:
            raise errors.conflict(resource.plural, resource.group, name)
        rv = preconditions.get("resourceVersion")
        if rv and rv != obj["metadata"]["resourceVersion"]:
            raise errors.conflict(resource.plural, resource.group, name)
        if dry_run:
            return obj, False
        policy = options.get("propagationPolicy")
        if policy is None and options.get("orphanDependents") is True:
            policy = "Orphan"
        if policy == "Orphan":
            self._orphan_dependents(obj)
        if resource.key == NAMESPACE_KEY:
            return self._delete_namespace(obj)
        if resource.key == CRD_KEY:
            return self._delete_crd(obj)
        return self._delete_object(resource, obj)

    def _delete_object(
        self, resource: ResourceDef, obj: dict[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        if obj["metadata"].get("finalizers"):
            if obj["metadata"].get("deletionTimestamp"):
                return obj, False
            return self._mark_deleted(resource, obj), False
        return self._remove(resource, obj), True

    def _mark_deleted(
        self,
        resource: ResourceDef,
        obj: dict[str, Any],
        extra: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        new = copy.deepcopy(obj)
        new["metadata"]["deletionTimestamp"] = now_rfc3339()
        new["metadata"]["deletionGracePeriodSeconds"] = 0
        if extra is not None:
            extra(new)
        new["metadata"]["resourceVersion"] = self._next_rv()
        self._store(resource, new)
        self._record(resource, "MODIFIED", new, obj)
        return new

    def _remove(self, resource: ResourceDef, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        namespace = meta.get("namespace", "") if resource.namespaced else ""
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = self._next_rv()
        by_name = self.objects[resource.key].get(namespace, {})
        by_name.pop(meta["name"], None)
        if not by_name:
            self.objects[resource.key].pop(namespace, None)
        self.uids.pop(meta["uid"], None)
        self._index_owners(resource, None, obj)
        self._record(resource, "DELETED", gone, obj)
        self._collect_garbage(meta["uid"], resource.namespaced, namespace)
        if resource.key == CRD_KEY:
            self._unregister_crd(obj)
        elif resource.crd_name is not None:
            self._maybe_finish_crd(resource)
        if namespace:
            self._maybe_finish_namespace(namespace)
        return gone

    def delete_collection(
        self,
        resource: ResourceDef,
        namespace: str | None,
        predicate: Predicate | None,
        options: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        deleted = []
        for obj in self.list(resource, namespace, predicate):
            meta = obj["metadata"]
            try:
                gone, _ = self.delete(resource, meta.get("namespace"), meta["name"], options)
            except ApiError:
                continue  # removed meanwhile by the garbage collector
            deleted.append(gone)
        return deleted

    # ------------------------------------------------------------------ lifecycle helpers

    def _store(self, resource: ResourceDef, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        namespace = meta.get("namespace", "") if resource.namespaced else ""
        old = self.objects[resource.key].setdefault(namespace, {}).get(meta["name"])
        self.objects[resource.key][namespace][meta["name"]] = obj
        self.uids[meta["uid"]] = (resource.key, namespace, meta["name"])
        self._index_owners(resource, obj, old)

    def _index_owners(
        self, resource: ResourceDef, new: dict[str, Any] | None, old: dict[str, Any] | None
    ) -> None:
        def owners(obj: dict[str, Any] | None) -> set[str]:
            refs = (obj or {}).get("metadata", {}).get("ownerReferences") or []
            return {ref.get("uid") for ref in refs if ref.get("uid")}

        source = new if new is not None else old
        assert source is not None
        meta = source["metadata"]
        location = (
            resource.key,
            meta.get("namespace", "") if resource.namespaced else "",
            meta["name"],
        )
        for uid in owners(old) - owners(new):
            self.dependents[uid].discard(location)
            if not self.dependents[uid]:
                del self.dependents[uid]
        for uid in owners(new):
            self.dependents[uid].add(location)

    def _collect_garbage(
        self, owner_uid: str, owner_namespaced: bool, owner_namespace: str
    ) -> None:
        """Background propagation: delete dependents whose owners are all gone."""
        for key, namespace, name in sorted(self.dependents.pop(owner_uid, set())):
            resource = self.resources.get(key)
            if resource is None:
                continue
            obj = self.objects.get(key, {}).get(namespace, {}).get(name)
            if obj is None or (owner_namespaced and namespace != owner_namespace):
                continue
            refs = obj["metadata"].get("ownerReferences") or []
            if any(ref.get("uid") in self.uids for ref in refs):
                continue  # another owner still exists
            self._delete_object(resource, obj)

    def _orphan_dependents(self, owner: dict[str, Any]) -> None:
        uid = owner["metadata"]["uid"]
        for key, namespace, name in sorted(self.dependents.get(uid, set())):
            resource = self.resources.get(key)
            obj = self.objects.get(key, {}).get(namespace, {}).get(name)
            if resource is None or obj is None:
                continue
            new = copy.deepcopy(obj)
            refs = [r for r in new["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
            if refs:
                new["metadata"]["ownerReferences"] = refs
            else:
                new["metadata"].pop("ownerReferences", None)
            self._update(resource, obj, new, subresource=None, dry_run=False)

    def _check_namespace_open(self, resource: ResourceDef, namespace: str) -> None:
        ns = self.objects[NAMESPACE_KEY].get("", {}).get(namespace)
        if ns is None:
            if self.strict_namespaces:
                raise errors.not_found("namespaces", "", namespace)
            return
        if ns["metadata"].get("deletionTimestamp") and resource.kind != "Event":
            raise ApiError(
                403,
                f"{resource.qualified} is forbidden: unable to create new "
                f"content in namespace {namespace} because it is being "
                "terminated",
                reason="Forbidden",
            )

    def _delete_namespace(self, ns: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        name = ns["metadata"]["name"]
        if not ns["metadata"].get("deletionTimestamp"):

            def terminating(obj: dict[str, Any]) -> None:
                obj.setdefault("status", {})["phase"] = "Terminating"

            ns = self._mark_deleted(self.resources[NAMESPACE_KEY], ns, terminating)
        for resource in list(self.resources.values()):
            if not resource.namespaced:
                continue
            for obj in list(self.objects.get(resource.key, {}).get(name, {}).values()):
                current = (
                    self.objects.get(resource.key, {}).get(name, {}).get(obj["metadata"]["name"])
                )
                if current is not None:
                    self._delete_object(resource, current)
        return self._maybe_finish_namespace(name) or ns, False

    def _maybe_finish_namespace(self, name: str) -> dict[str, Any] | None:
        ns = self.objects[NAMESPACE_KEY].get("", {}).get(name)
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return None
        for resource in self.resources.values():
            if resource.namespaced and self.objects.get(resource.key, {}).get(name):
                return None
        return self._remove(self.resources[NAMESPACE_KEY], ns)

    def _delete_crd(self, crd: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        resource = self._crd_resource(crd)
        if resource is None:
            return self._delete_object(self.resources[CRD_KEY], crd)
        if not crd["metadata"].get("deletionTimestamp"):
            crd = self._mark_deleted(self.resources[CRD_KEY], crd)
        for obj in list(self.iter_objects(resource, None)):
            self._delete_object(resource, obj)
        return self._maybe_finish_crd(resource) or crd, False

    def _maybe_finish_crd(self, resource: ResourceDef) -> dict[str, Any] | None:
        crd = self.objects[CRD_KEY].get("", {}).get(resource.crd_name or "")
        if crd is None or not crd["metadata"].get("deletionTimestamp"):
            return None
        if any(True for _ in self.iter_objects(resource, None)):
            return None
        if crd["metadata"].get("finalizers"):
            return None
        return self._remove(self.resources[CRD_KEY], crd)

    def _crd_resource(self, crd: dict[str, Any]) -> ResourceDef | None:
        for resource in self.resources.values():
            if resource.crd_name == crd["metadata"]["name"]:
                return resource
        return None

    def _unregister_crd(self, crd: dict[str, Any]) -> None:
        resource = self._crd_resource(crd)
        if resource is not None:
            self.unregister(resource.key)

    # ------------------------------------------------------------------ per-kind behaviour

    def _prepare(
        self,
        resource: ResourceDef,
        obj: dict[str, Any],
        old: dict[str, Any] | None,
        *,
        strict_fields: bool = False,
    ) -> None:
        """Validate and default an object about to be written (in place)."""
        meta = obj["metadata"]
        name = meta["name"]
        if len(name) > 253 or not _NAME_RE.match(name):
            raise errors.invalid(
                resource.kind,
                name,
                [
                    {
                        "reason": "FieldValueInvalid",
                        "field": "metadata.name",
                        "message": f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must '
                        "consist of lower case alphanumeric characters, '-' or '.', and "
                        "must start and end with an alphanumeric character",
                    }
                ],
            )
        causes = _label_causes(meta.get("labels"))
        if causes:
            raise errors.invalid(resource.kind, name, causes)
        if resource.key == NAMESPACE_KEY:
            if len(name) > 63 or "." in name:
                raise errors.invalid(
                    resource.kind,
                    name,
                    [
                        {
                            "reason": "FieldValueInvalid",
                            "field": "metadata.name",
                            "message": f'Invalid value: "{name}": a lowercase RFC 1123 label must '
                            "be at most 63 characters and contain no dots",
                        }
                    ],
                )
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = name
            obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
            obj.setdefault("status", {}).setdefault("phase", "Active")
        elif resource.key == ("", "secrets"):
            _normalise_secret(obj)
        elif resource.key == ("batch", "jobs"):
            _default_job(obj, old)
        elif resource.key == CRD_KEY:
            self._prepare_crd(obj, old)
        elif resource.crd_name is not None:
            version = obj["apiVersion"].rpartition("/")[2]
            schema = resource.schemas.get(version) or resource.schemas.get(resource.versions[0])
            if schema is None:
                return
            unknown = schema.unknown_fields(obj) if strict_fields else []
            if unknown:
                # Decoding comes before validation: the server refuses these first.
                raise ApiError(
                    400,
                    f'{resource.kind} in version "{version}" cannot be handled as a '
                    f"{resource.kind}: strict decoding error: "
                    + ", ".join(f'unknown field "{path}"' for path in unknown),
                    reason="BadRequest",
                )
            causes = schema.admit_in_place(obj, old)
            if causes:
                raise errors.invalid(f"{resource.kind}.{resource.group}", name, causes)

    def _prepare_crd(self, crd: dict[str, Any], old: dict[str, Any] | None) -> None:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        causes = []
        for path, value in (
            ("spec.group", spec.get("group")),
            ("spec.names.plural", names.get("plural")),
            ("spec.names.kind", names.get("kind")),
        ):
            if not value:
                causes.append(
                    {"reason": "FieldValueRequired", "field": path, "message": "Required value"}
                )
        if not spec.get("versions"):
            causes.append(
                {
                    "reason": "FieldValueRequired",
                    "field": "spec.versions",
                    "message": "Required value: must have exactly one version marked "
                    "as storage version",
                }
            )
        expected = f"{names.get('plural')}.{spec.get('group')}"
        if not causes and crd["metadata"]["name"] != expected:
            causes.append(
                {
                    "reason": "FieldValueInvalid",
                    "field": "metadata.name",
                    "message": f'Invalid value: "{crd["metadata"]["name"]}": must be '
                    f'spec.names.plural+"."+spec.group',
                }
            )
        if causes:
            raise errors.invalid(
                "CustomResourceDefinition.apiextensions.k8s.io", crd["metadata"]["name"], causes
            )
        if old is None:
            key = (spec["group"], names["plural"])
            if key in self.resources and self.resources[key].crd_name is None:
                raise errors.invalid(
                    "CustomResourceDefinition.apiextensions.k8s.io",
                    crd["metadata"]["name"],
                    [
                        {
                            "reason": "FieldValueInvalid",
                            "field": "spec.group",
                            "message": "Invalid value: the group and plural "
                            "belong to a built-in resource",
                        }
                    ],
                )
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", f"{names['kind']}List")
        spec.setdefault("scope", "Namespaced")
        now = now_rfc3339()
        old_conditions = {
            c["type"]: c for c in ((old or {}).get("status") or {}).get("conditions") or []
        }
        crd["status"] = {
            "acceptedNames": {k: v for k, v in names.items()},
            "storedVersions": [v["name"] for v in spec["versions"] if v.get("storage", True)],
            "conditions": [
                old_conditions.get(kind)
                or {
                    "type": kind,
                    "status": "True",
                    "reason": reason,
                    "message": message,
                    "lastTransitionTime": now,
                }
                for kind, reason, message in (
                    ("NamesAccepted", "NoConflicts", "no conflicts found"),
                    ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
                )
            ],
        }

    def _after_write(
        self, resource: ResourceDef, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> None:
        if resource.key == CRD_KEY and not obj["metadata"].get("deletionTimestamp"):
            served = resource_from_crd(obj)
            previous = self._crd_resource(obj)
            if previous is not None and previous.key != served.key:
                self.unregister(previous.key)
            self.register(served)


def _spec_of(obj: dict[str, Any], resource: ResourceDef) -> dict[str, Any]:
    """What ``metadata.generation`` tracks: everything but metadata (and status)."""
    skip = {"metadata", "apiVersion", "kind"}
    if resource.has_status:
        skip.add("status")
    return {k: v for k, v in obj.items() if k not in skip}


def _label_causes(labels: Any) -> list[dict[str, str]]:
    causes: list[dict[str, str]] = []
    if not labels:
        return causes
    if not isinstance(labels, dict):
        return [
            {
                "reason": "FieldValueInvalid",
                "field": "metadata.labels",
                "message": "Invalid value: labels must be a map of strings",
            }
        ]
    for key, value in labels.items():
        prefix, _, name = str(key).rpartition("/")
        if (
            not name
            or len(name) > 63
            or not _LABEL_NAME_RE.match(name)
            or (prefix and (len(prefix) > 253 or not _NAME_RE.match(prefix)))
        ):
            causes.append(
                {
                    "reason": "FieldValueInvalid",
                    "field": "metadata.labels",
                    "message": f'Invalid value: "{key}": name part must consist of '
                    "alphanumeric characters, '-', '_' or '.'",
                }
            )
        if (
            not isinstance(value, str)
            or len(value) > 63
            or (value and not _LABEL_NAME_RE.match(value))
        ):
            causes.append(
                {
                    "reason": "FieldValueInvalid",
                    "field": "metadata.labels",
                    "message": f'Invalid value: "{value}": a valid label must be an '
                    "empty string or consist of alphanumeric characters, "
                    "'-', '_' or '.', at most 63 characters",
                }
            )
    return causes


def _normalise_secret(secret: dict[str, Any]) -> None:
    """The server folds ``stringData`` into base64 ``data`` and never returns it."""
    string_data = secret.pop("stringData", None) or {}
    data = secret.setdefault("data", {}) or {}
    secret["data"] = data
    for key, value in string_data.items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    if not data:
        secret.pop("data")
    secret.setdefault("type", "Opaque")


def _default_job(job: dict[str, Any], old: dict[str, Any] | None) -> None:
    """The defaults and the one validation of batch/v1 Jobs that operators notice."""
    spec = job.setdefault("spec", {})
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completions", 1)
    spec.setdefault("parallelism", 1)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    template = spec.setdefault("template", {})
    pod_spec = template.setdefault("spec", {})
    # The pod defaults a real server adds, so that an operator comparing manifests sees them.
    pod_spec.setdefault("terminationGracePeriodSeconds", 30)
    pod_spec.setdefault("dnsPolicy", "ClusterFirst")
    pod_spec.setdefault("schedulerName", "default-scheduler")
    for container in pod_spec.get("containers") or []:
        image = str(container.get("image", ""))
        tagged = ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest")
        container.setdefault("imagePullPolicy", "IfNotPresent" if tagged else "Always")
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
    if pod_spec.get("restartPolicy") not in ("Never", "OnFailure"):
        raise errors.invalid(
            "Job.batch",
            job["metadata"]["name"],
            [
                {
                    "reason": "FieldValueNotSupported",
                    "field": "spec.template.spec.restartPolicy",
                    "message": f"Unsupported value: {json.dumps(pod_spec.get('restartPolicy'))}: "
                    'supported values: "OnFailure", "Never"',
                }
            ],
        )
    if not pod_spec.get("containers"):
        raise errors.invalid(
            "Job.batch",
            job["metadata"]["name"],
            [
                {
                    "reason": "FieldValueRequired",
                    "field": "spec.template.spec.containers",
                    "message": "Required value",
                }
            ],
        )
    if old is None:
        uid = job["metadata"]["uid"]
        name = job["metadata"]["name"]
        labels = {
            "batch.kubernetes.io/controller-uid": uid,
            "batch.kubernetes.io/job-name": name,
            "controller-uid": uid,
            "job-name": name,
        }
        meta = template.setdefault("metadata", {})
        meta["labels"] = {**(meta.get("labels") or {}), **labels}
        spec.setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
        causes = _label_causes(meta["labels"])
        if causes:
            for cause in causes:
                cause["field"] = "spec.template.metadata.labels"
            raise errors.invalid("Job.batch", name, causes)
    else:
        spec["selector"] = old.get("spec", {}).get("selector", spec.get("selector"))

