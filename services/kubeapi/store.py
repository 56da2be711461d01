"""The in-memory object store: versions, history for watches, consistent list paging.

One global counter hands out resourceVersions (as strings on the wire, ints inside), as etcd
does. Every write is one event in a bounded history; a watch may start from any resourceVersion
still covered by it, an older one gets 410 Expired. ``compact()`` drops the history on demand so
tests can force that path.

All methods are synchronous and the server runs on one event loop, so each write is atomic with
respect to watches and lists without locks.

Costs: create/update/delete/get are O(1) plus the object's size (and O(watchers of the kind)
for fan-out); only list and the initial events of a watch are O(objects of the kind).

Simplifications (documented, deliberate):

* Delete is immediate: no finalizers, no deletionTimestamp, except that a Namespace with
  objects in it is Terminating for ``namespace_grace`` seconds before it and they go (see
  ``delete``); creating objects in it meanwhile is 403 Forbidden, as on the real server.
* A namespaced object created in a namespace that does not exist auto-creates the Namespace
  (the real server answers 404) unless ``auto_create_namespaces`` is False.
* ``metadata.generation`` is bumped when anything outside metadata and status changes (spec,
  data, endpoints...), never on status or metadata-only writes.
* Kinds with a status subresource drop .status on create and keep the stored .status on
  main-resource writes; only ``/status`` writes change it (and only it).
* An update that changes nothing returns the stored object without a new resourceVersion.
* A list with ``limit`` takes a snapshot of the matching objects; its continue token pages
  through that snapshot, so paging is consistent at the list's resourceVersion. Snapshots are
  kept in a small LRU; a token whose snapshot is gone (or was compacted) gets 410 Expired,
  as a compacted continue token does on the real server.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from shardgate.kubeapi.errors import (
    already_exists,
    bad_request,
    conflict,
    expired,
    forbidden,
    not_found,
)
from shardgate.kubeapi.kinds import Kind, KindTable
from shardgate.kubeapi.selectors import EVERYTHING, Filter
from shardgate.kubeapi.validation import check_name
from shardgate.kubeapi.watch import (
    ADDED,
    DELETED,
    MODIFIED,
    Record,
    Watcher,
    WatchEvent,
    bookmark_line,
    encode_event,
)

_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_NOT_SPEC = frozenset(("apiVersion", "kind", "metadata", "status"))
_VOLATILE_META = frozenset(("resourceVersion", "managedFields", "generation"))


@dataclass(frozen=True, slots=True)
class ListPage:
    items: list[Record]
    resource_version: int
    continue_token: str | None
    remaining: int | None


def _timestamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _spec_part(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in _NOT_SPEC}


def _comparable(obj: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in obj["metadata"].items() if k not in _VOLATILE_META}
    return {**obj, "metadata": meta}


class Store:
    def __init__(
        self,
        kinds: KindTable | None = None,
        *,
        history_size: int = 10_000,
        watch_queue_size: int = 100_000,
        snapshots: int = 64,
        auto_create_namespaces: bool = True,
        clock: Callable[[], float] = time.time,
        defer: Callable[[float, Callable[[], None]], object] | None = None,
        namespace_grace: float = 0.5,
    ) -> None:
        if history_size < 1:
            raise ValueError("history_size must be at least 1")
        self.kinds = kinds or KindTable()
        self.history_size = history_size
        self.watch_queue_size = watch_queue_size
        self.auto_create_namespaces = auto_create_namespaces
        self._clock = clock
        self._defer = defer
        self.namespace_grace = namespace_grace
        self._rv = 0
        self._compacted = 0
        # kind -> namespace ("" when cluster-scoped) -> name -> record
        self._objects: dict[Kind, dict[str, dict[str, Record]]] = {k: {} for k in self.kinds.kinds}
        self._history: deque[WatchEvent] = deque(maxlen=history_size)
        self._watchers: dict[Kind, set[Watcher]] = {k: set() for k in self.kinds.kinds}
        self._snapshots: OrderedDict[int, list[Record]] = OrderedDict()
        self._snapshot_limit = snapshots
        self._snapshot_seq = 0

    @property
    def resource_version(self) -> int:
        return self._rv

    @property
    def compacted_resource_version(self) -> int:
        """Watches must start at or after this resourceVersion."""
        return self._compacted

    # ---- reads ---------------------------------------------------------------------------

    def get(self, kind: Kind, namespace: str | None, name: str) -> Record:
        record = self._objects[kind].get(namespace or "", {}).get(name)
        if record is None:
            raise not_found(kind, name)
        return record

    def count(self, kind: Kind) -> int:
        return sum(len(names) for names in self._objects[kind].values())

    def _matching(self, kind: Kind, namespace: str | None, flt: Filter) -> Iterator[Record]:
        """Matching records in (namespace, name) order, as etcd key order would give."""
        by_ns = self._objects[kind]
        scoped = namespace is not None or not kind.namespaced
        namespaces = [namespace or ""] if scoped else sorted(by_ns)
        name = flt.fields.exact("metadata.name")
        for ns in namespaces:
            names = by_ns.get(ns)
            if not names:
                continue
            if name is not None:
                record = names.get(name)
                candidates = [record] if record is not None else []
            else:
                candidates = [names[n] for n in sorted(names)]
            if flt.everything:
                yield from candidates
            else:
                yield from (r for r in candidates if flt.matches(r.obj))

    def list(
        self,
        kind: Kind,
        namespace: str | None,
        flt: Filter = EVERYTHING,
        *,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> ListPage:
        if continue_token:
            snap_id, offset, rv = self._decode_continue(continue_token)
            items = self._snapshots.get(snap_id)
            if items is None:
                raise expired(
                    "The provided continue parameter is too old to display a consistent list "
                    "result. You can start a new list without the continue parameter."
                )
            self._snapshots.move_to_end(snap_id)
        else:
            items, offset, rv, snap_id = list(self._matching(kind, namespace, flt)), 0, self._rv, -1
        if not limit or len(items) - offset <= limit:
            if snap_id >= 0:
                self._snapshots.pop(snap_id, None)
            return ListPage(items[offset:] if offset else items, rv, None, None)
        if snap_id < 0:
            self._snapshot_seq += 1
            snap_id = self._snapshot_seq
            self._snapshots[snap_id] = items
            while len(self._snapshots) > self._snapshot_limit:
                self._snapshots.popitem(last=False)
        end = offset + limit
        token = self._encode_continue(snap_id, end, rv)
        return ListPage(items[offset:end], rv, token, len(items) - end)

    @staticmethod
    def _encode_continue(snap_id: int, offset: int, rv: int) -> str:
        raw = json.dumps({"snap": snap_id, "offset": offset, "rv": rv}).encode()
        return base64.urlsafe_b64encode(raw).decode()

    @staticmethod
    def _decode_continue(token: str) -> tuple[int, int, int]:
        try:
            data = json.loads(base64.urlsafe_b64decode(token.encode()))
            return int(data["snap"]), int(data["offset"]), int(data["rv"])
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise bad_request(f"invalid continue token: {exc}") from exc

    # ---- writes --------------------------------------------------------------------------

    def _now(self) -> str:
        return _timestamp(self._clock())

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _commit(self, kind: Kind, type_: str, record: Record, prev: Record | None) -> None:
        event = WatchEvent(type_, kind, record, prev)
        if len(self._history) == self.history_size:
            self._compacted = self._history[0].rv
        self._history.append(event)
        watchers = self._watchers[kind]
        if watchers:
            for watcher in list(watchers):
                watcher.offer(event)

    def _ensure_namespace(self, kind: Kind, namespace: str) -> None:
        ns_kind = self.kinds.namespace_kind
        existing = self._objects[ns_kind].get("", {}).get(namespace)
        if existing is not None:
            if existing.obj["metadata"].get("deletionTimestamp"):
                raise forbidden(
                    f"unable to create new content in namespace {namespace} because it is being terminated"
                )
            return
        if not self.auto_create_namespaces:
            raise not_found(ns_kind, namespace)
        self.create(ns_kind, None, {"metadata": {"name": namespace}})

    def create(self, kind: Kind, namespace: str | None, obj: dict[str, Any]) -> Record:
        """Store a new object; ``obj`` (already validated) becomes the store's and is modified."""
        meta = obj.setdefault("metadata", {})
        ns = (namespace or meta.get("namespace") or "") if kind.namespaced else ""
        names = self._objects[kind].get(ns, {})
        name = meta.get("name") or ""
        if not name and meta.get("generateName"):
            for _ in range(100):
                suffix = "".join(random.choices(_GENERATE_ALPHABET, k=5))
                name = f"{meta['generateName']}{suffix}"
                if name not in names:
                    break
        check_name(kind, name)
        if name in names:
            raise already_exists(kind, name)
        if kind.namespaced:
            self._ensure_namespace(kind, ns)
        rv = self._next_rv()
        obj["apiVersion"] = kind.api_version
        obj["kind"] = kind.kind
        meta["name"] = name
        if kind.namespaced:
            meta["namespace"] = ns
        meta["uid"] = str(uuid.uuid4())
        meta["resourceVersion"] = str(rv)
        meta["generation"] = 1
        meta["creationTimestamp"] = self._now()
        for server_owned in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(server_owned, None)
        if kind.has_status:
            obj["status"] = {"phase": "Active"} if kind.kind == "Namespace" else {}
        record = Record(obj, rv)
        self._objects[kind].setdefault(ns, {})[name] = record
        self._commit(kind, ADDED, record, None)
        return record

    def update(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        obj: dict[str, Any],
        *,
        status: bool = False,
    ) -> Record:
        """Replace an object (PUT semantics); ``status=True`` is a ``/status`` write.

        A ``metadata.resourceVersion`` in ``obj`` is a precondition: 409 Conflict when stale.
        """
        current = self.get(kind, namespace, name)
        old = current.obj
        want_rv = (obj.get("metadata") or {}).get("resourceVersion")
        if want_rv and str(want_rv) != str(current.rv):
            raise conflict(kind, name)
        if status:
            new = {**old}
            if obj.get("status") is not None:
                new["status"] = obj["status"]
            else:
                new.pop("status", None)
            new["metadata"] = dict(old["metadata"])
        else:
            new = obj
            meta = dict(obj.get("metadata") or {})
            for kept in ("uid", "creationTimestamp", "name", "namespace", "generation"):
                if kept in old["metadata"]:
                    meta[kept] = old["metadata"][kept]
                else:
                    meta.pop(kept, None)
            new["metadata"] = meta
            new["apiVersion"] = kind.api_version
            new["kind"] = kind.kind
            if kind.has_status:
                if "status" in old:
                    new["status"] = old["status"]
                else:
                    new.pop("status", None)
            if _spec_part(new) != _spec_part(old):
                meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        if _comparable(new) == _comparable(old):
            return current
        rv = self._next_rv()
        new["metadata"]["resourceVersion"] = str(rv)
        record = Record(new, rv)
        self._objects[kind][current.namespace][name] = record
        self._commit(kind, MODIFIED, record, current)
        return record

    def delete(self, kind: Kind, namespace: str | None, name: str) -> Record:
        """Remove an object now; the returned (and watched) version carries a new resourceVersion.

        A Namespace that still holds objects is first marked Terminating (deletionTimestamp,
        status.phase) and emptied ``namespace_grace`` seconds later through ``defer``, as the
        namespace controller would: ``kubectl delete -f`` of a file that lists the Namespace
        first can then still delete its contents one by one. Without ``defer`` (or when it is
        empty) the Namespace and its contents go at once.
        """
        current = self.get(kind, namespace, name)
        if kind == self.kinds.namespace_kind and self._defer is not None:
            if current.obj["metadata"].get("deletionTimestamp"):
                return current
            if self._namespace_has_objects(name):
                meta = {**current.obj["metadata"], "deletionTimestamp": self._now()}
                status = {**(current.obj.get("status") or {}), "phase": "Terminating"}
                rv = self._next_rv()
                meta["resourceVersion"] = str(rv)
                record = Record({**current.obj, "metadata": meta, "status": status}, rv)
                self._objects[kind][""][name] = record
                self._commit(kind, MODIFIED, record, current)
                self._defer(self.namespace_grace, lambda: self._finish_namespace(name))
                return record
        return self._delete_now(kind, current)

    def _namespace_has_objects(self, namespace: str) -> bool:
        return any(self._objects[k].get(namespace) for k in self.kinds.kinds if k.namespaced)

    def _finish_namespace(self, name: str) -> None:
        ns_kind = self.kinds.namespace_kind
        current = self._objects[ns_kind].get("", {}).get(name)
        if current is not None:
            self._delete_now(ns_kind, current)

    def _delete_now(self, kind: Kind, current: Record) -> Record:
        name = current.name
        if kind == self.kinds.namespace_kind:
            for other in self.kinds.kinds:
                if other.namespaced:
                    for victim in sorted(self._objects[other].get(name, {})):
                        self._delete_now(other, self._objects[other][name][victim])
        rv = self._next_rv()
        names = self._objects[kind][current.namespace]
        del names[name]
        if not names:
            del self._objects[kind][current.namespace]
        final = {**current.obj, "metadata": {**current.obj["metadata"], "resourceVersion": str(rv)}}
        record = Record(final, rv)
        self._commit(kind, DELETED, record, current)
        return record

    # ---- watches -------------------------------------------------------------------------

    def watch(
        self,
        kind: Kind,
        namespace: str | None,
        flt: Filter = EVERYTHING,
        *,
        resource_version: str | None = None,
        send_initial_events: bool = False,
    ) -> Watcher:
        """Open a watch. Absent or "0" resourceVersion: ADDED for what exists, then changes.

        Otherwise the events after ``resource_version``, or one 410 ERROR when it is older
        than the retained history. ``send_initial_events`` (the streaming-list "watch list"
        protocol client-go uses, e.g. in ``kubectl delete --wait``) sends ADDED for what exists
        whatever the resourceVersion, then a BOOKMARK annotated ``k8s.io/initial-events-end``.
        """
        watcher = Watcher(kind, namespace, flt, self.watch_queue_size)
        if send_initial_events or resource_version in (None, "", "0"):
            for record in self._matching(kind, namespace, flt):
                watcher.queue.put_nowait(encode_event(ADDED, record.raw))
            if send_initial_events:
                watcher.queue.put_nowait(bookmark_line(kind, self._rv, initial_events_end=True))
        else:
            try:
                since = int(str(resource_version))
            except ValueError as exc:
                raise bad_request(f"invalid resource version: {resource_version!r}") from exc
            if since < self._compacted:
                watcher.expire(f"too old resource version: {since} ({self._compacted + 1})")
                return watcher
            backlog: list[WatchEvent] = []
            for event in reversed(self._history):
                if event.rv <= since:
                    break
                if event.kind == kind:
                    backlog.append(event)
            for event in reversed(backlog):
                watcher.offer(event)
        self._watchers[kind].add(watcher)
        watcher.on_close = self._watchers[kind].discard
        return watcher

    def watcher_count(self) -> int:
        return sum(len(ws) for ws in self._watchers.values())

    def compact(self, *, expire_watchers: bool = False) -> int:
        """Forget all history up to now; returns the resourceVersion compacted to.

        Watches and continue tokens from before it then get 410 Expired. With
        ``expire_watchers`` the open watches are also sent the 410 ERROR and ended, which a real
        server does when a watcher falls out of its window.
        """
        self._history.clear()
        self._compacted = self._rv
        self._snapshots.clear()
        if expire_watchers:
            message = f"too old resource version: compacted at {self._rv}"
            for watchers in self._watchers.values():
                for watcher in list(watchers):
                    watcher.expire(message)
        return self._rv

    def close_watchers(self) -> None:
        """End every open watch stream (server shutdown)."""
        for watchers in self._watchers.values():
            for watcher in list(watchers):
                watcher.close()
