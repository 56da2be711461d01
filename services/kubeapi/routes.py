"""The HTTP edge: Kubernetes REST URLs and verbs mapped onto the store.

URL space, for every kind of the table::

    /api/v1/<plural>[/<name>[/status]]                          cluster-scoped, or list all namespaces
    /api/v1/namespaces/<ns>/<plural>[/<name>[/status]]          namespaced
    /apis/<group>/<version>/...                                 the same for named groups

plus discovery, OpenAPI, health endpoints and one admin endpoint for tests,
``POST /_stand-in/compact[?expireWatchers=true]``.

Store errors (``ApiError``) become Status responses in one middleware. ``dryRun`` is not
implemented (the write happens); ``fieldValidation``, ``fieldManager`` and ``force`` are accepted
and ignored.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import yaml
from aiohttp import web

from shardgate.kubeapi import discovery, openapi, tables
from shardgate.kubeapi.errors import (
    ApiError,
    bad_request,
    conflict,
    method_not_allowed,
    not_found_path,
    unsupported_media_type,
)
from shardgate.kubeapi.kinds import Kind
from shardgate.kubeapi.patch import json_patch, merge_patch, strategic_merge
from shardgate.kubeapi.selectors import FieldSelector, Filter, LabelSelector
from shardgate.kubeapi.store import Store
from shardgate.kubeapi.validation import check_body
from shardgate.kubeapi.watch import Record, pump

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
    )


def _raw(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json")


@web.middleware
async def status_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as a Kubernetes Status object."""
    try:
        return await handler(request)
    except ApiError as exc:
        return _json(exc.status(), exc.code)
    except web.HTTPNotFound:
        return _json(not_found_path(request.path).status(), 404)
    except web.HTTPMethodNotAllowed:
        err = method_not_allowed()
        return _json(err.status(), err.code)


@dataclass(frozen=True, slots=True)
class Target:
    kind: Kind
    namespace: str | None
    name: str | None
    subresource: str | None


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")


def _int_param(request: web.Request, key: str) -> int | None:
    value = request.query.get(key)
    if value in (None, ""):
        return None
    try:
        return int(str(value))
    except ValueError as exc:
        raise bad_request(f"invalid {key}: {value!r}") from exc


class Routes:
    def __init__(self, store: Store, *, bookmark_interval: float, serve_openapi: bool = True) -> None:
        self.store = store
        self.serve_openapi = serve_openapi
        self.kinds = store.kinds
        self.bookmark_interval = bookmark_interval

    def install(self, app: web.Application) -> None:
        app.middlewares.append(status_errors)
        r = app.router
        r.add_get("/version", self.version)
        for health in ("/healthz", "/livez", "/readyz"):
            r.add_get(health, self.healthy)
        r.add_get("/api", self.api)
        r.add_get("/apis", self.apis)
        r.add_get("/api/{version}", self.api_resources)
        r.add_get("/apis/{group}", self.api_group)
        r.add_get("/apis/{group}/{version}", self.api_resources)
        if self.serve_openapi:
            r.add_get("/openapi/v2", self.openapi_v2)
            r.add_get("/openapi/v3", self.openapi_v3_root)
            r.add_get("/openapi/v3/{path:.+}", self.openapi_v3_doc)
        r.add_post("/_stand-in/compact", self.compact)
        r.add_route("*", "/api/{version}/{tail:.+}", self.resource)
        r.add_route("*", "/apis/{group}/{version}/{tail:.+}", self.resource)

    # ---- discovery, openapi, admin -------------------------------------------------------

    async def version(self, request: web.Request) -> web.Response:
        return _json(discovery.version())

    async def healthy(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def api(self, request: web.Request) -> web.Response:
        return _json(discovery.api_versions(self.kinds))

    async def apis(self, request: web.Request) -> web.Response:
        return _json(discovery.api_group_list(self.kinds))

    async def api_group(self, request: web.Request) -> web.Response:
        doc = discovery.api_group(self.kinds, request.match_info["group"])
        if doc is None:
            raise not_found_path(request.path)
        return _json(doc)

    async def api_resources(self, request: web.Request) -> web.Response:
        group = request.match_info.get("group", "")
        doc = discovery.resource_list(self.kinds, group, request.match_info["version"])
        if doc is None:
            raise not_found_path(request.path)
        return _json(doc)

    async def openapi_v2(self, request: web.Request) -> web.Response:
        return web.Response(body=b"", headers={"Content-Type": openapi.V2_PROTOBUF})

    async def openapi_v3_root(self, request: web.Request) -> web.Response:
        return _json(openapi.v3_root(self.kinds))

    async def openapi_v3_doc(self, request: web.Request) -> web.Response:
        parts = request.match_info["path"].split("/")
        doc = None
        if len(parts) == 2 and parts[0] == "api":
            doc = openapi.group_version_doc(self.kinds, "", parts[1])
        elif len(parts) == 3 and parts[0] == "apis":
            doc = openapi.group_version_doc(self.kinds, parts[1], parts[2])
        if doc is None:
            raise not_found_path(request.path)
        return _json(doc)

    async def compact(self, request: web.Request) -> web.Response:
        rv = self.store.compact(expire_watchers=_truthy(request.query.get("expireWatchers")))
        return _json({"compactedResourceVersion": str(rv)})

    # ---- resources -----------------------------------------------------------------------

    def _target(self, request: web.Request) -> Target:
        group = request.match_info.get("group", "")
        version = request.match_info["version"]
        segs = [s for s in request.match_info["tail"].split("/") if s]
        namespace: str | None = None
        if len(segs) >= 3 and segs[0] == "namespaces":
            inner = self.kinds.by_path(group, version, segs[2])
            if inner is not None and inner.namespaced:
                namespace, segs = segs[1], segs[2:]
        kind = self.kinds.by_path(group, version, segs[0]) if segs else None
        if kind is None or len(segs) > 3:
            raise not_found_path(request.path)
        name = segs[1] if len(segs) > 1 else None
        sub = segs[2] if len(segs) > 2 else None
        if sub is not None and (sub != "status" or not kind.has_status):
            raise not_found_path(request.path)
        if kind.namespaced and namespace is None and name is not None:
            raise not_found_path(request.path)
        return Target(kind, namespace, name, sub)

    async def resource(self, request: web.Request) -> web.StreamResponse:
        t = self._target(request)
        method = request.method
        if t.name is None:
            if method == "GET":
                if _truthy(request.query.get("watch")):
                    return await self._watch(request, t)
                return self._list(request, t)
            if method == "POST":
                return await self._create(request, t)
            if method == "DELETE":
                return self._delete_collection(request, t)
        else:
            if method == "GET":
                return self._get(request, t)
            if method == "PUT":
                return await self._update(request, t)
            if method == "PATCH":
                return await self._patch(request, t)
            if method == "DELETE" and t.subresource is None:
                return await self._delete(request, t)
        raise method_not_allowed(
            f"the server does not allow this method on the requested resource ({method} {request.path})"
        )

    def _filter(self, request: web.Request) -> Filter:
        return Filter(
            LabelSelector.parse(request.query.get("labelSelector")),
            FieldSelector.parse(request.query.get("fieldSelector")),
        )

    def _list_body(
        self, t: Target, items: list[Record], rv: int, token: str | None, remaining: int | None
    ) -> bytes:
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if token:
            meta["continue"] = token
            if remaining is not None:
                meta["remainingItemCount"] = remaining
        head = (
            f'{{"kind":"{t.kind.list_kind}","apiVersion":"{t.kind.api_version}",'
            f'"metadata":{json.dumps(meta, separators=(",", ":"))},"items":['
        ).encode()
        return head + b",".join(r.raw for r in items) + b"]}"

    def _list(self, request: web.Request, t: Target) -> web.Response:
        page = self.store.list(
            t.kind,
            t.namespace,
            self._filter(request),
            limit=_int_param(request, "limit"),
            continue_token=request.query.get("continue") or None,
        )
        if tables.wants_table(request.headers.get("Accept", "")):
            return _json(
                tables.table(
                    t.kind,
                    (r.obj for r in page.items),
                    resource_version=str(page.resource_version),
                    continue_token=page.continue_token,
                    include_object=request.query.get("includeObject", "Metadata"),
                )
            )
        return _raw(
            self._list_body(t, page.items, page.resource_version, page.continue_token, page.remaining)
        )

    def _get(self, request: web.Request, t: Target) -> web.Response:
        assert t.name is not None
        record = self.store.get(t.kind, t.namespace, t.name)
        if tables.wants_table(request.headers.get("Accept", "")):
            return _json(
                tables.table(
                    t.kind,
                    [record.obj],
                    resource_version=str(record.rv),
                    include_object=request.query.get("includeObject", "Metadata"),
                )
            )
        return _raw(record.raw)

    async def _watch(self, request: web.Request, t: Target) -> web.StreamResponse:
        watcher = self.store.watch(
            t.kind,
            t.namespace,
            self._filter(request),
            resource_version=request.query.get("resourceVersion"),
            send_initial_events=_truthy(request.query.get("sendInitialEvents")),
        )
        timeout = _int_param(request, "timeoutSeconds")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            await pump(
                watcher,
                response.write,
                current_rv=lambda: self.store.resource_version,
                bookmark_interval=(
                    self.bookmark_interval if _truthy(request.query.get("allowWatchBookmarks")) else None
                ),
                timeout=float(timeout) if timeout else None,
            )
            await response.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass
        return response

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            raise bad_request("the request body is empty")
        try:
            if request.content_type in ("application/yaml", APPLY_PATCH):
                return yaml.safe_load(raw)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as exc:
            raise bad_request(f"the request body is not valid: {exc}") from exc

    async def _create(self, request: web.Request, t: Target) -> web.Response:
        body = check_body(t.kind, await self._body(request), namespace=t.namespace)
        return _raw(self.store.create(t.kind, t.namespace, body).raw, 201)

    async def _update(self, request: web.Request, t: Target) -> web.Response:
        assert t.name is not None
        body = check_body(t.kind, await self._body(request), namespace=t.namespace, name=t.name)
        record = self.store.update(t.kind, t.namespace, t.name, body, status=t.subresource == "status")
        return _raw(record.raw)

    async def _patch(self, request: web.Request, t: Target) -> web.Response:
        assert t.name is not None
        ctype = request.content_type
        if ctype not in (MERGE_PATCH, STRATEGIC_PATCH, JSON_PATCH, APPLY_PATCH):
            raise unsupported_media_type(ctype)
        patch = await self._body(request)
        if ctype == APPLY_PATCH:
            applied = check_body(t.kind, patch, namespace=t.namespace, name=t.name)
            try:
                current = self.store.get(t.kind, t.namespace, t.name)
            except ApiError as exc:
                if exc.code != 404 or t.subresource is not None:
                    raise
                return _raw(self.store.create(t.kind, t.namespace, applied).raw, 201)
            new = strategic_merge(current.obj, applied)
        else:
            current = self.store.get(t.kind, t.namespace, t.name)
            if ctype == MERGE_PATCH:
                if not isinstance(patch, dict):
                    raise bad_request("a merge patch must be a JSON object")
                new = merge_patch(current.obj, patch)
            elif ctype == STRATEGIC_PATCH:
                if not isinstance(patch, dict):
                    raise bad_request("a strategic merge patch must be a JSON object")
                new = strategic_merge(current.obj, patch)
            else:
                new = json_patch(current.obj, patch)
        if not isinstance(new, dict):
            raise bad_request("the patched object is not a JSON object")
        new = {**new, "metadata": dict(new.get("metadata") or {})}
        new = check_body(t.kind, new, namespace=t.namespace, name=t.name)
        record = self.store.update(t.kind, t.namespace, t.name, new, status=t.subresource == "status")
        return _raw(record.raw)

    async def _delete(self, request: web.Request, t: Target) -> web.Response:
        assert t.name is not None
        raw = await request.read()
        if raw:
            try:
                options = json.loads(raw)
            except ValueError as exc:
                raise bad_request(f"invalid DeleteOptions: {exc}") from exc
            pre = options.get("preconditions") if isinstance(options, dict) else None
            if isinstance(pre, dict):
                current = self.store.get(t.kind, t.namespace, t.name)
                rv, uid = pre.get("resourceVersion"), pre.get("uid")
                if (rv and str(rv) != str(current.rv)) or (uid and uid != current.obj["metadata"]["uid"]):
                    raise conflict(t.kind, t.name)
        return _raw(self.store.delete(t.kind, t.namespace, t.name).raw)

    def _delete_collection(self, request: web.Request, t: Target) -> web.Response:
        page = self.store.list(t.kind, t.namespace, self._filter(request))
        deleted = [self.store.delete(t.kind, r.namespace or None, r.name) for r in page.items]
        return _raw(self._list_body(t, deleted, self.store.resource_version, None, None))
