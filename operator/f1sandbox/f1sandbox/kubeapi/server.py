"""The HTTP side of the emulator (aiohttp) and ``KubeAPI``, which runs it in a thread."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import json
import os
import socket
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from . import patches, protobuf, selectors
from .errors import ApiError
from .registry import ResourceDef
from .store import Store, Watcher
from .tables import render_table

T = TypeVar("T")

KUBE_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-kubeapi",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.23.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


def _dump(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _respond(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=_dump(body), status=status, content_type=JSON)


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1", "yes")


class Handler:
    """Routes every request path to the store, as the API server's REST layer does."""

    def __init__(self, store: Store, *, bookmark_interval: float = 30.0) -> None:
        self.store = store
        self.bookmark_interval = bookmark_interval
        self.server_address = ""
        # (bearer token, method, path?query) of every request once `KubeAPI.record_requests`
        # is called: what one client did, for the chart's RBAC test. Off by default.
        self.request_log: list[tuple[str, str, str]] | None = None
        # Once set (`KubeAPI.forbid_all`), every request is refused as RBAC would refuse it:
        # what a pod sees while its release is uninstalled and its Role deleted.
        self.forbidden: str | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.store.request_counts[request.method] += 1
        if self.request_log is not None:
            auth = request.headers.get("Authorization", "")
            token = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
            self.request_log.append((token, request.method, request.path_qs))
        if self.forbidden is not None:
            return _respond(ApiError(403, f"{self.forbidden}: {request.method} {request.path} "
                                          "is forbidden").status(), 403)
        try:
            return await self._route(request)
        except ApiError as error:
            return _respond(error.status(), error.code)

    async def _route(self, request: web.Request) -> web.StreamResponse:
        parts = [part for part in request.path.split("/") if part]
        if not parts:
            return _respond({"paths": ["/api", "/api/v1", "/apis", "/version"]})
        if parts == ["version"]:
            return _respond(KUBE_VERSION)
        if parts[0] in ("healthz", "livez", "readyz"):
            return web.Response(text="ok")
        if parts == ["api"]:
            return _respond(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": self.server_address}
                    ],
                }
            )
        if parts == ["apis"]:
            return _respond({"kind": "APIGroupList", "apiVersion": "v1", "groups": self._groups()})
        if parts[0] == "api" and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) == 2:
            found = [g for g in self._groups() if g["name"] == parts[1]]
            if not found:
                raise ApiError(404, "the server could not find the requested resource")
            return _respond({"kind": "APIGroup", "apiVersion": "v1", **found[0]})
        elif parts[0] == "apis" and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "the server could not find the requested resource")
        if not rest:
            return self._resource_list(group, version)
        return await self._resource_request(request, group, version, rest)

    # ------------------------------------------------------------------ discovery

    def _groups(self) -> list[dict[str, Any]]:
        groups: dict[str, list[str]] = {}
        for resource in self.store.resources.values():
            if resource.group:
                known = groups.setdefault(resource.group, [])
                known.extend(v for v in resource.versions if v not in known)
        return [
            {
                "name": name,
                "versions": [{"groupVersion": f"{name}/{v}", "version": v} for v in versions],
                "preferredVersion": {
                    "groupVersion": f"{name}/{versions[0]}",
                    "version": versions[0],
                },
            }
            for name, versions in groups.items()
        ]

    def _resource_list(self, group: str, version: str) -> web.Response:
        entries = []
        for resource in self.store.resources.values():
            if resource.group == group and version in resource.versions:
                entries.extend(resource.api_resources(version))
        if not entries:
            raise ApiError(404, "the server could not find the requested resource")
        return _respond(
            {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version,
                "resources": entries,
            }
        )

    # ------------------------------------------------------------------ resources

    async def _resource_request(
        self, request: web.Request, group: str, version: str, rest: list[str]
    ) -> web.StreamResponse:
        namespace: str | None = None
        namespace_subresource = group == "" and len(rest) == 3 and rest[2] in ("status", "finalize")
        if rest[0] == "namespaces" and len(rest) >= 3 and not namespace_subresource:
            namespace, rest = rest[1], rest[2:]
        if len(rest) > 3:
            raise ApiError(404, "the server could not find the requested resource")
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else None
        resource = self.store.find(group, version, plural)
        if namespace is not None and not resource.namespaced:
            raise ApiError(404, "the server could not find the requested resource")
        if name is not None and resource.namespaced and namespace is None:
            raise ApiError(404, "the server could not find the requested resource")
        if subresource is not None and subresource not in resource.subresources:
            raise ApiError(404, "the server could not find the requested resource")
        query = request.query
        method = request.method
        dry_run = query.get("dryRun") == "All"
        strict = query.get("fieldValidation") == "Strict"
        if name is None:
            if method == "GET" and _truthy(query.get("watch")):
                return await self._watch(request, resource, version, namespace)
            if method == "GET":
                return self._list(request, resource, version, namespace)
            if method == "POST":
                body = await self._body(request)
                created = self.store.create(
                    resource, namespace, body, dry_run=dry_run, strict_fields=strict
                )
                return _respond(self._view(created, resource, version), 201)
            if method == "DELETE":
                predicate = self._predicate(query)
                options = await self._delete_options(request)
                deleted = self.store.delete_collection(resource, namespace, predicate, options)
                return _respond(self._list_body(resource, version, deleted))
            raise ApiError(405, f"{method} is not supported on a collection")
        if method == "GET":
            obj = self.store.get(resource, namespace, name)
            if _wants_table(request):
                return _respond(self._table(request, resource, version, [obj]))
            return _respond(self._view(obj, resource, version))
        if method == "PUT":
            body = await self._body(request)
            updated = self.store.replace(
                resource,
                namespace,
                name,
                body,
                subresource=subresource,
                dry_run=dry_run,
                strict_fields=strict,
            )
            return _respond(self._view(updated, resource, version))
        if method == "PATCH":
            return await self._patch(
                request,
                resource,
                version,
                namespace,
                name,
                subresource,
                dry_run=dry_run,
                strict=strict,
            )
        if method == "DELETE":
            if subresource is not None:
                raise ApiError(405, "DELETE is not supported on a subresource")
            options = await self._delete_options(request)
            obj, gone = self.store.delete(resource, namespace, name, options, dry_run=dry_run)
            return _respond(self._view(obj, resource, version), 200 if gone else 202)
        raise ApiError(405, f"{method} is not supported")

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            raise ApiError(400, "the request body is empty")
        content_type = request.content_type
        if "protobuf" in content_type:
            try:
                return protobuf.decode_object(raw)
            except (ValueError, IndexError, UnicodeDecodeError) as error:
                raise ApiError(400, f"cannot decode the protobuf body: {error}") from None
        if "cbor" in content_type:
            raise ApiError(
                415,
                "the body of the request was in an unknown format - "
                "accepted media types include: application/json",
            )
        try:
            if content_type == APPLY_PATCH or "yaml" in content_type:
                import yaml  # only server-side apply sends YAML

                return yaml.safe_load(raw)
            return json.loads(raw)
        except Exception as error:
            raise ApiError(400, f"cannot decode the request body: {error}") from None

    async def _delete_options(self, request: web.Request) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if request.can_read_body:
            raw = await request.read()
            if raw.strip():
                try:
                    options = json.loads(raw) or {}
                except json.JSONDecodeError:
                    raise ApiError(400, "cannot decode DeleteOptions") from None
        for key in ("propagationPolicy", "gracePeriodSeconds", "orphanDependents"):
            if key in request.query and key not in options:
                value: Any = request.query[key]
                options[key] = _truthy(value) if key == "orphanDependents" else value
        return options

    def _predicate(self, query: Any) -> selectors.Predicate | None:
        return selectors.combine(
            selectors.label_selector(query.get("labelSelector")),
            selectors.field_selector(query.get("fieldSelector")),
        )

    def _view(self, obj: dict[str, Any], resource: ResourceDef, version: str) -> dict[str, Any]:
        """The object as served at the requested version (conversion strategy None)."""
        api_version = resource.api_version(version)
        if obj.get("apiVersion") == api_version:
            return obj
        return {**obj, "apiVersion": api_version}

    def _list_body(
        self,
        resource: ResourceDef,
        version: str,
        items: list[dict[str, Any]],
        continue_token: str | None = None,
        remaining: int | None = None,
    ) -> dict[str, Any]:
        metadata: dict[str, Any] = {"resourceVersion": str(self.store.rv)}
        if continue_token:
            metadata["continue"] = continue_token
        if remaining:
            metadata["remainingItemCount"] = remaining
        return {
            "kind": f"{resource.kind}List",
            "apiVersion": resource.api_version(version),
            "metadata": metadata,
            "items": [self._view(obj, resource, version) for obj in items],
        }

    def _list(
        self, request: web.Request, resource: ResourceDef, version: str, namespace: str | None
    ) -> web.Response:
        query = request.query
        items = self.store.list(resource, namespace, self._predicate(query))
        token = query.get("continue")
        if token:
            try:
                after = tuple(json.loads(base64.urlsafe_b64decode(token.encode())))
            except (ValueError, binascii.Error):
                raise ApiError(400, "invalid continue token") from None
            items = [
                o
                for o in items
                if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > after
            ]
        next_token, remaining = None, None
        limit = int(query.get("limit") or 0)
        if limit > 0 and len(items) > limit:
            remaining = len(items) - limit
            items = items[:limit]
            last = items[-1]["metadata"]
            next_token = base64.urlsafe_b64encode(
                _dump([last.get("namespace", ""), last["name"]])
            ).decode()
        if _wants_table(request):
            return _respond(self._table(request, resource, version, items, next_token))
        return _respond(self._list_body(resource, version, items, next_token, remaining))

    def _table(
        self,
        request: web.Request,
        resource: ResourceDef,
        version: str,
        objects: list[dict[str, Any]],
        continue_token: str | None = None,
    ) -> dict:
        table_version = _table_version(request)
        return render_table(
            resource,
            version,
            [self._view(o, resource, version) for o in objects],
            resource_version=str(self.store.rv),
            include_object=request.query.get("includeObject", "Metadata"),
            table_version=table_version,
            continue_token=continue_token,
        )

    async def _patch(
        self,
        request: web.Request,
        resource: ResourceDef,
        version: str,
        namespace: str | None,
        name: str,
        subresource: str | None,
        *,
        dry_run: bool,
        strict: bool,
    ) -> web.Response:
        content_type = request.content_type
        body = await self._body(request)
        if content_type == MERGE_PATCH:

            def apply(obj: dict[str, Any]) -> Any:
                return patches.merge_patch(obj, body)
        elif content_type == JSON_PATCH:

            def apply(obj: dict[str, Any]) -> Any:
                return patches.json_patch(obj, body)
        elif content_type == STRATEGIC_PATCH:
            if resource.crd_name is not None:
                raise ApiError(
                    415,
                    "the body of the request was in an unknown format - "
                    "accepted media types include: application/json-patch+json,"
                    " application/merge-patch+json, application/apply-patch+yaml",
                )

            def apply(obj: dict[str, Any]) -> Any:
                return patches.strategic_merge_patch(obj, body)
        elif content_type == APPLY_PATCH:
            # Server-side apply, approximated: create when absent, else a merge patch
            # (no field ownership, so fields dropped from the applied config stay).
            try:
                self.store.get(resource, namespace, name)
            except ApiError as error:
                if error.code != 404:
                    raise
                body.setdefault("metadata", {})["name"] = name
                created = self.store.create(resource, namespace, body, dry_run=dry_run)
                return _respond(self._view(created, resource, version), 201)

            def apply(obj: dict[str, Any]) -> Any:
                return patches.merge_patch(obj, body)
        else:
            raise ApiError(415, f"the body of the request was in an unknown format: {content_type}")
        patched = self.store.patch(
            resource,
            namespace,
            name,
            apply,
            subresource=subresource,
            dry_run=dry_run,
            strict_fields=strict,
        )
        return _respond(self._view(patched, resource, version))

    # ------------------------------------------------------------------ watch

    async def _watch(
        self, request: web.Request, resource: ResourceDef, version: str, namespace: str | None
    ) -> web.StreamResponse:
        query = request.query
        timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
        bookmarks = _truthy(query.get("allowWatchBookmarks"))
        send_initial = _truthy(query.get("sendInitialEvents"))
        table = _wants_table(request)
        response = web.StreamResponse(status=200, headers={"Content-Type": JSON})
        response.enable_chunked_encoding()
        try:
            watcher, backlog = self.store.subscribe(
                resource,
                namespace,
                self._predicate(query),
                query.get("resourceVersion"),
                send_initial,
            )
        except ApiError as error:
            if error.code != 410:
                raise
            # The server answers an expired resourceVersion inside the stream, not as HTTP.
            await response.prepare(request)
            await response.write(_dump({"type": "ERROR", "object": error.status()}) + b"\n")
            return response
        try:
            await response.prepare(request)
            for event_type, obj in backlog:
                await response.write(self._event(event_type, obj, resource, version, table))
            if send_initial and bookmarks:
                await response.write(self._bookmark(resource, version, initial_end=True))
            await self._pump(response, watcher, resource, version, table, timeout, bookmarks)
        except ConnectionResetError:
            pass  # the client went away; so does its watch
        finally:
            self.store.unsubscribe(watcher)
        return response

    async def _pump(
        self,
        response: web.StreamResponse,
        watcher: Watcher,
        resource: ResourceDef,
        version: str,
        table: bool,
        timeout: float | None,
        bookmarks: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout is not None else None
        while True:
            wait = self.bookmark_interval if bookmarks else None
            if deadline is not None:
                left = deadline - loop.time()
                if left <= 0:
                    return
                wait = left if wait is None else min(wait, left)
            try:
                item = await asyncio.wait_for(watcher.queue.get(), wait)
            except TimeoutError:
                if bookmarks and (deadline is None or loop.time() < deadline):
                    await response.write(self._bookmark(resource, version))
                continue
            if item is None:
                return  # the server is stopping or the resource went away
            event_type, obj = item
            await response.write(self._event(event_type, obj, resource, version, table))

    def _event(
        self, event_type: str, obj: dict[str, Any], resource: ResourceDef, version: str, table: bool
    ) -> bytes:
        body = self._view(obj, resource, version)
        if table:
            body = render_table(
                resource, version, [body], resource_version=obj["metadata"]["resourceVersion"]
            )
        return _dump({"type": event_type, "object": body}) + b"\n"

    def _bookmark(self, resource: ResourceDef, version: str, *, initial_end: bool = False) -> bytes:
        metadata: dict[str, Any] = {"resourceVersion": str(self.store.rv)}
        if initial_end:
            metadata["annotations"] = {"k8s.io/initial-events-end": "true"}
        return (
            _dump(
                {
                    "type": "BOOKMARK",
                    "object": {
                        "kind": resource.kind,
                        "apiVersion": resource.api_version(version),
                        "metadata": metadata,
                    },
                }
            )
            + b"\n"
        )


def _wants_table(request: web.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


def _table_version(request: web.Request) -> str:
    """The Table version of the first media range asking for one (kubectl: v1, v1beta1)."""
    for media_range in request.headers.get("Accept", "").split(","):
        params = dict(p.strip().partition("=")[::2] for p in media_range.split(";")[1:])
        if params.get("as") == "Table":
            return params.get("v", "v1")
    return "v1"


def make_app(handler: Handler) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handler.handle)
    return app


class KubeAPI:
    """A Kubernetes API emulator on 127.0.0.1, served from a background thread.

    Usage from synchronous tests::

        with KubeAPI() as api:
            api.write_kubeconfig(tmp_path / 'kubeconfig')
            api.load_crd('crds/yachtbackfill.yaml')
            ...  # kopf, kubectl and the kubernetes client talk to api.url
            assert api.objects('yachtbackfills', namespace='default')
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        strict_namespaces: bool = True,
        history_limit: int = 10_000,
        bookmark_interval: float = 30.0,
        namespaces: Iterable[str] = ("default", "kube-system", "kube-public"),
    ) -> None:
        self.host = host
        self.port = port
        self.store = Store(history_limit=history_limit, strict_namespaces=strict_namespaces)
        self._handler = Handler(self.store, bookmark_interval=bookmark_interval)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        namespaces_resource = self.store.resources[("", "namespaces")]
        for name in namespaces:
            self.store.create(namespaces_resource, None, {"metadata": {"name": name}})

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> KubeAPI:
        if self._thread is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._handler.server_address = f"{self.host}:{self.port}"
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run,
            args=(sock, started, failure),
            name=f"kubeapi-{self.port}",
            daemon=True,
        )
        self._thread.start()
        if not started.wait(10) or failure:
            raise RuntimeError(f"the API emulator did not start: {failure!r}")
        return self

    def _run(
        self, sock: socket.socket, started: threading.Event, failure: list[BaseException]
    ) -> None:
        assert self._loop is not None
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            self._runner = web.AppRunner(
                make_app(self._handler),
                handler_cancellation=True,
                access_log=None,
                shutdown_timeout=2.0,
            )
            loop.run_until_complete(self._runner.setup())
            loop.run_until_complete(web.SockSite(self._runner, sock).start())
        except BaseException as error:
            failure.append(error)
            started.set()
            return
        started.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._runner.cleanup())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        loop = self._loop

        async def close_watches() -> None:
            self.store.close_all_watches()

        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(close_watches(), loop).result(5)
            loop.call_soon_threadsafe(loop.stop)
        self._thread.join(15)
        self._thread = None
        self._loop = None

    def __enter__(self) -> KubeAPI:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the server's loop thread (where the store may be touched).

        The result is a deep copy: stored objects are shared with the watch history and
        must not be changed by a test that edits what it got back.
        """
        if self._loop is None or threading.current_thread() is self._thread:
            return copy.deepcopy(fn())

        async def call() -> T:
            return copy.deepcopy(fn())

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(30)

    # ------------------------------------------------------------------ clients

    def write_kubeconfig(
        self,
        path: str | os.PathLike[str],
        *,
        namespace: str = "default",
        token: str = "kubeapi-dummy-token",
    ) -> Path:
        """Write a kubeconfig (JSON is valid YAML) for kopf, kubectl and the kubernetes client."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kubeapi", "cluster": {"server": self.url}}],
            "users": [{"name": "kubeapi", "user": {"token": token}}],
            "contexts": [
                {
                    "name": "kubeapi",
                    "context": {"cluster": "kubeapi", "user": "kubeapi", "namespace": namespace},
                }
            ],
            "current-context": "kubeapi",
            "preferences": {},
        }
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(config, indent=2))
        return target

    def client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` for this server (the official client)."""
        import kubernetes

        configuration = kubernetes.client.Configuration()
        configuration.host = self.url
        configuration.api_key = {"authorization": "kubeapi-dummy-token"}
        configuration.api_key_prefix = {"authorization": "Bearer"}
        return kubernetes.client.ApiClient(configuration)

    # ------------------------------------------------------------------ in-process access

    def load_crd(self, source: str | os.PathLike[str] | dict[str, Any]) -> list[dict[str, Any]]:
        """Create (or replace) the CRDs of a dict or a YAML file with one or more documents."""
        return [self.apply(doc) for doc in _documents(source)]

    def apply(self, obj: dict[str, Any] | str | os.PathLike[str]) -> dict[str, Any]:
        """Create an object, or replace it if it exists (an in-process ``kubectl apply``)."""
        if not isinstance(obj, dict):
            docs = _documents(obj)
            results = [self.apply(doc) for doc in docs]
            return results[0] if len(results) == 1 else {"items": results}
        body = obj

        def run() -> dict[str, Any]:
            resource = self._resource_of(body)
            meta = body.get("metadata") or {}
            namespace = meta.get("namespace") or ("default" if resource.namespaced else None)
            try:
                self.store.get(resource, namespace, meta.get("name", ""))
            except ApiError:
                return self.store.create(resource, namespace, body)
            fresh = {**body, "metadata": {k: v for k, v in meta.items() if k != "resourceVersion"}}
            updated = self.store.replace(resource, namespace, meta["name"], fresh)
            if "status" in body and resource.has_status:
                updated = self.store.replace(
                    resource, namespace, meta["name"], fresh, subresource="status"
                )
            return updated

        return self._call(run)

    def create(self, obj: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            return self.store.create(self._resource_of(obj), namespace, obj)

        return self._call(run)

    def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> dict:
        return self.create(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": labels or {}},
            }
        )

    def get(self, resource: str, name: str, namespace: str | None = None) -> dict | None:
        def run() -> dict[str, Any] | None:
            found = self.store.lookup(resource)
            try:
                return self.store.get(found, namespace, name)
            except ApiError:
                return None

        return self._call(run)

    def objects(
        self, resource: str, namespace: str | None = None, *, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """Current objects of a resource (plural, ``plural.group``, kind or short name)."""

        def run() -> list[dict[str, Any]]:
            found = self.store.lookup(resource)
            return self.store.list(found, namespace, selectors.label_selector(label_selector))

        return self._call(run)

    def patch(
        self,
        resource: str,
        name: str,
        patch: dict[str, Any],
        *,
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> dict:
        """Merge-patch an object in-process (e.g. to play a controller in a test)."""

        def run() -> dict[str, Any]:
            found = self.store.lookup(resource)
            return self.store.patch(
                found,
                namespace,
                name,
                lambda obj: patches.merge_patch(obj, patch),
                subresource=subresource,
            )

        return self._call(run)

    def delete(
        self,
        resource: str,
        name: str,
        namespace: str | None = None,
        propagation_policy: str = "Background",
    ) -> dict[str, Any] | None:
        def run() -> dict[str, Any] | None:
            found = self.store.lookup(resource)
            try:
                obj, _ = self.store.delete(
                    found, namespace, name, {"propagationPolicy": propagation_policy}
                )
            except ApiError:
                return None
            return obj

        return self._call(run)

    def resource_version(self) -> int:
        return self.store.rv

    def watch_count(self, resource: str | None = None) -> int:
        """How many watch streams are open (for one resource or all): kopf's are visible."""

        def run() -> int:
            if resource is None:
                return sum(len(w) for w in self.store.watchers.values())
            return len(self.store.watchers.get(self.store.lookup(resource).key, ()))

        return self._call(run)

    def request_counts(self) -> dict[str, int]:
        return self._call(lambda: dict(self.store.request_counts))

    def forbid_all(self, who: str = 'User "system:serviceaccount:f1backfill"') -> None:
        """Refuse every request from now on with 403 Forbidden, as the real server does once
        a client's RBAC is deleted (watches already open go on)."""

        def run() -> None:
            self._handler.forbidden = who

        self._call(run)

    def record_requests(self) -> None:
        """Keep every request from now on (see `requests`); the emulator checks no token."""

        def run() -> None:
            self._handler.request_log = []

        self._call(run)

    def requests(self, token: str | None = None) -> list[tuple[str, str, str]]:
        """(token, method, path?query) of the requests since `record_requests`, in order;
        only those that carried `Authorization: Bearer <token>` when a token is given."""
        return self._call(lambda: [entry for entry in self._handler.request_log or []
                                   if token is None or entry[0] == token])

    def _resource_of(self, obj: dict[str, Any]) -> ResourceDef:
        api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
        group, _, version = api_version.rpartition("/")
        for resource in self.store.resources.values():
            if resource.group == group and resource.kind == kind and version in resource.versions:
                return resource
        raise KeyError(f"no resource serves {api_version} {kind}")


def _documents(source: str | os.PathLike[str] | dict[str, Any]) -> list[dict[str, Any]]:
    if isinstance(source, dict):
        return [source]
    import yaml

    text = Path(source).read_text()
    return [doc for doc in yaml.safe_load_all(text) if doc]


def is_serving(url: str) -> bool:
    """Whether ``url`` answers /version (for a server started as a subprocess)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/version", timeout=1):
            return True
    except OSError:
        return False
