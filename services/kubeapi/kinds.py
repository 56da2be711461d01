"""The table of kinds the stand-in serves; everything else (routes, discovery, storage) reads it.

Adding a kind is one line in ``KINDS``. A kind here is only what the REST protocol needs to know:
where it lives in the URL space, whether it is namespaced, whether it has a ``/status``
subresource, and the short names kubectl resolves (``ing``, ``svc``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True, slots=True)
class Kind:
    """One served resource type."""

    group: str
    """API group; "" for the core (legacy) group served under /api."""
    version: str
    plural: str
    kind: str
    namespaced: bool
    has_status: bool
    """True when the kind has a ``/status`` subresource, so main-resource writes ignore .status."""
    short_names: tuple[str, ...] = ()
    singular: str = field(default="")

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def qualified(self) -> str:
        """``ingresses.networking.k8s.io`` — how the real server names a resource in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def singular_name(self) -> str:
        return self.singular or self.kind.lower()


KINDS: tuple[Kind, ...] = (
    Kind("", "v1", "namespaces", "Namespace", False, True, ("ns",)),
    Kind("", "v1", "services", "Service", True, True, ("svc",)),
    Kind("", "v1", "secrets", "Secret", True, False),
    Kind("", "v1", "events", "Event", True, False, ("ev",)),
    Kind("", "v1", "endpoints", "Endpoints", True, False, ("ep",), "endpoints"),
    Kind("networking.k8s.io", "v1", "ingresses", "Ingress", True, True, ("ing",)),
    Kind("networking.k8s.io", "v1", "ingressclasses", "IngressClass", False, False),
    Kind("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True, False),
    Kind("coordination.k8s.io", "v1", "leases", "Lease", True, False),
)


class KindTable:
    """Lookups over a set of kinds, by URL and by kind name."""

    def __init__(self, kinds: Iterable[Kind] = KINDS) -> None:
        self.kinds: tuple[Kind, ...] = tuple(kinds)
        self._by_path: dict[tuple[str, str, str], Kind] = {}
        self._by_gvk: dict[tuple[str, str, str], Kind] = {}
        for k in self.kinds:
            self._by_path[(k.group, k.version, k.plural)] = k
            self._by_gvk[(k.group, k.version, k.kind)] = k

    def by_path(self, group: str, version: str, plural: str) -> Kind | None:
        return self._by_path.get((group, version, plural))

    def by_gvk(self, group: str, version: str, kind: str) -> Kind | None:
        return self._by_gvk.get((group, version, kind))

    def group_versions(self) -> dict[str, list[str]]:
        """Group -> versions, in table order; the core group is ""."""
        out: dict[str, list[str]] = {}
        for k in self.kinds:
            versions = out.setdefault(k.group, [])
            if k.version not in versions:
                versions.append(k.version)
        return out

    def in_group_version(self, group: str, version: str) -> list[Kind]:
        return [k for k in self.kinds if k.group == group and k.version == version]

    @property
    def namespace_kind(self) -> Kind:
        kind = self.by_gvk("", "v1", "Namespace")
        assert kind is not None, "the Namespace kind is required"
        return kind
