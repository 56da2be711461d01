"""The Kubernetes API edge: list, watch and write the few kinds shardgate needs, as raw JSON.

kubernetes-asyncio gives us kubeconfig / in-cluster loading, authentication and TLS, and we keep all of
that by going through its `ApiClient`. What we do not use are its typed models: deserializing one
Ingress into them costs ~350 µs against ~18 µs for `json.loads` (notes/facts.md), which at 100k objects
is the difference between a 35 s and a 2 s re-list. So every call here asks for the raw response
(`_preload_content=False`) and hands back plain dicts.

Errors from aiohttp and kubernetes-asyncio never leave this module; callers see one hierarchy, hung
under the adapters' common one (`shardgate.adapters.errors`):

    KubeError (AdapterError)          anything the API edge could not do
     ├── Transient (TransientError)   connection refused/reset, timeouts, 429, 5xx — worth retrying
     ├── Expired                      410 Gone: the resourceVersion is older than the server's history
     ├── NotFound                     404
     ├── Conflict                     409: stale resourceVersion on update, or the object already exists
     └── Rejected (PermanentError)    any other 4xx (400, 401, 403, 422, ...): retrying will not help

Only `Transient` is retried here (tenacity, bounded); a watch stream is not retried but ends with the
error, because the caller owns the resourceVersion it must resume from.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import aiohttp
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.client.exceptions import ApiException
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from shardgate.adapters.errors import AdapterError, PermanentError, TransientError

log = logging.getLogger(__name__)

Obj = dict[str, Any]
T = TypeVar("T")

_AUTH = ["BearerToken"]
_JSON = "application/json"
_MERGE_PATCH = "application/merge-patch+json"


class KubeError(AdapterError):
    """The Kubernetes API could not do what was asked (see the module docstring for the hierarchy)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class Transient(KubeError, TransientError):
    """The server or the network failed in a way a later attempt may not: retry with backoff."""


class Expired(KubeError):
    """410 Gone: the resourceVersion asked for has been compacted away; list again."""


class NotFound(KubeError):
    """404: the object (or its namespace) does not exist."""


class Conflict(KubeError):
    """409: an update carried a stale resourceVersion, or a create found the object already there."""


class Rejected(KubeError, PermanentError):
    """The server refused the request for good (bad request, forbidden, invalid)."""


@dataclass(frozen=True, slots=True)
class Resource:
    """Where a kind lives in the URL space."""

    group: str  # "" for the core group under /api
    version: str
    plural: str
    namespaced: bool

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{name}"
        if sub is not None:
            base += f"/{sub}"
        return base


INGRESS = Resource("networking.k8s.io", "v1", "ingresses", True)
INGRESS_CLASS = Resource("networking.k8s.io", "v1", "ingressclasses", False)
SERVICE = Resource("", "v1", "services", True)
ENDPOINT_SLICE = Resource("discovery.k8s.io", "v1", "endpointslices", True)
SECRET = Resource("", "v1", "secrets", True)
LEASE = Resource("coordination.k8s.io", "v1", "leases", True)
EVENT = Resource("", "v1", "events", True)


def error_for_status(status: int, message: str) -> KubeError:
    """The project's exception for an HTTP status from the API server."""
    if status == 410:
        return Expired(message, status)
    if status == 404:
        return NotFound(message, status)
    if status == 409:
        return Conflict(message, status)
    if status == 429 or status >= 500:
        return Transient(message, status)
    return Rejected(message, status)


def _status_message(body: bytes) -> str:
    """The `message` of a Status body, or the start of whatever came back."""
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict) and parsed.get("message"):
            return str(parsed["message"])
    except ValueError:
        pass
    return body[:300].decode(errors="replace")


_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "ws_proxy", "wss_proxy")


def _without_env_lookups(api: ApiClient) -> None:
    """Stop aiohttp looking in the environment on every request when there is nothing to find there.

    kubernetes-asyncio opens its session with `trust_env=True`, for proxy variables; with it aiohttp also
    reads `~/.netrc` in a worker thread on every request (seen in the watcher's profile of a burst: one
    status write per Ingress). With no proxy variable set, that is all `trust_env` does, and netrc is not
    how a Kubernetes client authenticates; with one set, the session is left as it is (client-go honours
    them too). A kubeconfig's `proxy-url` is passed per request and does not depend on it.
    """
    if any(os.environ.get(v) or os.environ.get(v.upper()) for v in _PROXY_VARIABLES):
        return
    session = api.rest_client.pool_manager
    if hasattr(session, "_trust_env"):  # aiohttp's attribute; without it, leave the session alone
        session._trust_env = False


class KubeClient:
    """Raw-JSON access to one API server, sharing kubernetes-asyncio's configuration and connection pool.

    `retries` bounds how many attempts a non-streaming call makes on `Transient` errors.
    """

    def __init__(self, api: ApiClient, retries: int = 5, request_timeout: float = 30.0) -> None:
        self.api = api
        self.retries = retries
        self.request_timeout = request_timeout

    @classmethod
    async def connect(
        cls, kubeconfig: str | None = None, context: str | None = None, **kwargs: Any
    ) -> KubeClient:
        """Load `kubeconfig` (a path), or the in-cluster service account when there is no path and
        the process runs in a pod, or else the default kubeconfig ($KUBECONFIG, ~/.kube/config)."""
        cfg = Configuration()
        try:
            if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
                kube_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            else:
                await kube_config.load_kube_config(
                    config_file=kubeconfig, context=context, client_configuration=cfg, persist_config=False
                )
        except Exception as exc:  # ConfigException, OSError, yaml errors: all mean "no usable config"
            raise Rejected(f"cannot load Kubernetes configuration: {exc}") from exc
        api = ApiClient(cfg)
        _without_env_lookups(api)
        return cls(api, **kwargs)

    async def close(self) -> None:
        await self.api.close()

    # -- the one place that talks HTTP -------------------------------------------------------------

    async def _open(
        self,
        method: str,
        path: str,
        query: list[tuple[str, Any]] | None = None,
        body: Any = None,
        content_type: str = _JSON,
        timeout: aiohttp.ClientTimeout | float | None = None,
    ) -> aiohttp.ClientResponse:
        """Send one request and return the open response; a non-2xx status is raised as KubeError."""
        try:
            resp: aiohttp.ClientResponse = await self.api.call_api(
                path,
                method,
                query_params=query or [],
                header_params={"Accept": _JSON, "Content-Type": content_type},
                body=body,
                auth_settings=_AUTH,
                _preload_content=False,
                _request_timeout=timeout if timeout is not None else self.request_timeout,
            )
        except ApiException as exc:
            raise error_for_status(exc.status or 0, f"{method} {path}: {exc.reason}") from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise Transient(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if resp.status >= 300:
            try:
                data = await resp.read()
            except (TimeoutError, aiohttp.ClientError, OSError):
                data = b""
            finally:
                resp.release()
            raise error_for_status(resp.status, f"{method} {path}: {resp.status} {_status_message(data)}")
        return resp

    async def _call(
        self,
        method: str,
        path: str,
        query: list[tuple[str, Any]] | None = None,
        body: Any = None,
        content_type: str = _JSON,
    ) -> Obj:
        """One request whose whole JSON body is the answer."""
        resp = await self._open(method, path, query, body, content_type)
        try:
            data = await resp.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise Transient(f"{method} {path}: reading the response: {exc}") from exc
        finally:
            resp.release()
        try:
            parsed = json.loads(data)
        except ValueError as exc:
            raise Transient(f"{method} {path}: response is not JSON: {data[:200]!r}") from exc
        if not isinstance(parsed, dict):
            raise Transient(f"{method} {path}: response is not a JSON object")
        return parsed

    async def _retrying(self, fn: Callable[[], Awaitable[T]]) -> T:
        try:  # the usual case, without setting up the retry machinery for every request
            return await fn()
        except Transient:
            if self.retries <= 1:
                raise
            await asyncio.sleep(0.1)  # the first backoff step, then tenacity's
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(Transient),
            stop=stop_after_attempt(self.retries - 1),  # the first attempt was made above
            wait=wait_random_exponential(multiplier=0.1, max=5.0),
            reraise=True,
        ):
            with attempt:
                return await fn()
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    # -- list and watch ----------------------------------------------------------------------------

    async def list_raw(
        self, res: Resource, limit: int = 500, field_selector: str | None = None
    ) -> tuple[list[Obj], str]:
        """Every object of a kind across namespaces, paged with limit/continue.

        Returns the items and the list's resourceVersion, from which a watch sees every later change.
        A continue token that expired mid-way raises `Expired`: the caller lists again from the start.
        """
        items: list[Obj] = []
        token = ""
        while True:
            query: list[tuple[str, Any]] = [("limit", limit)]
            if token:
                query.append(("continue", token))
            if field_selector:
                query.append(("fieldSelector", field_selector))
            page = await self._retrying(partial(self._call, "GET", res.path(), query))
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            token = meta.get("continue") or ""
            if not token:
                return items, str(meta.get("resourceVersion", ""))

    async def watch_raw(
        self,
        res: Resource,
        resource_version: str,
        timeout_seconds: int = 300,
        field_selector: str | None = None,
    ) -> AsyncIterator[tuple[str, Obj]]:
        """Events (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`) after `resource_version`, as raw dicts.

        The stream ends normally when the server closes it after `timeout_seconds`; the caller then
        watches again from the last resourceVersion it saw (bookmarks included). 410 — as an HTTP
        status or as an ERROR event — raises `Expired`; other failures raise `Transient`/`KubeError`.
        """
        query: list[tuple[str, Any]] = [
            ("watch", "true"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", timeout_seconds),
        ]
        if field_selector:
            query.append(("fieldSelector", field_selector))
        # No total timeout: the server ends the stream; a silent connection is cut after a grace period.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout_seconds + 30)
        path = res.path()
        resp = await self._open("GET", path, query, timeout=timeout)
        try:
            while True:
                try:
                    line = await resp.content.readline()
                except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
                    raise Transient(f"watch {path}: {type(exc).__name__}: {exc}") from exc
                if not line:
                    return
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                    etype, obj = event["type"], event["object"]
                except (ValueError, KeyError, TypeError) as exc:
                    raise Transient(f"watch {path}: undecodable event {line[:200]!r}") from exc
                if etype == "ERROR":
                    code = int(obj.get("code") or 0) if isinstance(obj, dict) else 0
                    message = obj.get("message", "") if isinstance(obj, dict) else str(obj)
                    raise error_for_status(code or 500, f"watch {path}: {code} {message}")
                yield etype, obj
        finally:
            resp.release()

    # -- single objects ----------------------------------------------------------------------------

    async def get(self, res: Resource, namespace: str | None, name: str) -> Obj:
        return await self._retrying(lambda: self._call("GET", res.path(namespace, name)))

    async def create(self, res: Resource, namespace: str | None, body: Obj) -> Obj:
        return await self._retrying(lambda: self._call("POST", res.path(namespace), body=body))

    async def replace(self, res: Resource, namespace: str | None, name: str, body: Obj) -> Obj:
        """PUT: with `metadata.resourceVersion` set, a concurrent writer makes this raise `Conflict`."""
        return await self._retrying(lambda: self._call("PUT", res.path(namespace, name), body=body))

    async def delete(self, res: Resource, namespace: str | None, name: str) -> Obj:
        return await self._retrying(lambda: self._call("DELETE", res.path(namespace, name)))

    async def patch_status(self, res: Resource, namespace: str | None, name: str, status: Obj) -> Obj:
        """Merge-patch the status subresource (`{"status": status}`)."""
        path = res.path(namespace, name, "status")
        body = {"status": status}
        return await self._retrying(lambda: self._call("PATCH", path, body=body, content_type=_MERGE_PATCH))

    # -- the helpers the watcher needs -------------------------------------------------------------

    async def get_lease(self, namespace: str, name: str) -> Obj | None:
        try:
            return await self.get(LEASE, namespace, name)
        except NotFound:
            return None

    async def create_lease(self, namespace: str, name: str, spec: Obj) -> Obj:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
        return await self.create(LEASE, namespace, body)

    async def update_lease(self, lease: Obj, spec: Obj) -> Obj:
        """Replace the Lease's spec, guarded by the resourceVersion it was read at."""
        meta = lease["metadata"]
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "resourceVersion": meta["resourceVersion"],
            },
            "spec": spec,
        }
        return await self.replace(LEASE, meta["namespace"], meta["name"], body)

    async def patch_ingress_status(self, namespace: str, name: str, load_balancer: Obj) -> Obj:
        return await self.patch_status(INGRESS, namespace, name, {"loadBalancer": load_balancer})

    async def create_event(self, involved: Obj, reason: str, message: str, component: str, now: str) -> Obj:
        """A core/v1 Event about `involved` (a raw object), so `kubectl describe` shows the reason."""
        meta = involved.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name', 'object')}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", "networking.k8s.io/v1"),
                "kind": involved.get("kind", "Ingress"),
                "namespace": namespace,
                "name": meta.get("name", ""),
                "uid": meta.get("uid", ""),
                "resourceVersion": meta.get("resourceVersion", ""),
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning",
            "source": {"component": component},
            "reportingComponent": component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        return await self.create(EVENT, namespace, body)
