"""Which certificate answers an SNI: the host → secret index the on-demand certificate selector needs.

Gateways ask for a certificate by the client's SNI (`shardgate.xds.tls`). The answer is found in two
steps, both dictionary lookups: the SNI names a host — exactly, else through the wildcard host `*.` +
the SNI without its first label (one label only, like routing) — and the host's fragment says which
Secret it uses (`meta["tls_secret"]`, "namespace/name"); that Secret's fragment (unit `t:ns/name`) holds
the compiled certificate, which is served renamed to the SNI (`secrets.secret_named`). An exact host
wins over a wildcard one even when only the wildcard host has TLS, as in routing: the request would be
routed to the exact host, which did not ask for HTTPS.

The index is updated by the cache's `apply` at the cost of the change: a host's fragment changes one
entry; a Secret's fragment affects the hosts that name it (kept as a reverse index). What changed is
reported as *host patterns* — an exact host, or `*.parent` — which each stream maps onto the SNIs it
has subscribed (see `sni.py`). A Secret that carries no usable certificate is logged once with its key
when it arrives; SNIs that map to it are answered with a removal, so the handshake fails at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from shardgate.keys import secret_unit, unit_name
from shardgate.records import Fragment, Resource
from shardgate.xds import types
from shardgate.xds.secrets import has_certificate, secret_named

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    SERVED = "served"
    NO_HOST = "no_host"  # no host (exact or wildcard) has TLS for the name: a random or stale SNI
    NO_SECRET = "no_secret"  # the host names a Secret that does not exist (yet)
    BROKEN = "broken"  # the Secret exists but carries no usable certificate


@dataclass(frozen=True, slots=True)
class Certificate:
    version: str  # the content hash of the compiled Secret: the version of every SNI it answers
    body: bytes  # the serialized Secret named `namespace/name`
    error: str | None  # why it cannot be served; None when it can


@dataclass(frozen=True, slots=True)
class Resolution:
    outcome: Outcome
    resource: Resource | None = None
    host: str | None = None  # the host pattern the SNI matched
    secret: str | None = None  # its secret's unit key
    wildcard: bool = False  # matched through a wildcard host


def normalize_sni(sni: str) -> str:
    """Host names are case-insensitive and may end in a root dot; scope keys are lower-case."""
    return sni.lower().rstrip(".")


def wildcard_of(host: str) -> str | None:
    """The wildcard host that covers `host` (`*.` + its parent), None for a single label."""
    _, dot, parent = host.partition(".")
    return f"*.{parent}" if dot and parent else None


class CertificateIndex:
    """host pattern → secret unit, secret unit → its certificate and the hosts that use it."""

    def __init__(self, is_host: Callable[[str], bool] = lambda host: False) -> None:
        self._is_host = is_host  # whether an exact host exists at all, TLS or not (the cache knows)
        self._host_secret: dict[str, str] = {}  # host pattern -> secret unit key
        self._users: dict[str, set[str]] = {}  # secret unit key -> host patterns naming it
        self._certs: dict[str, Certificate] = {}  # secret unit key -> certificate

    def __len__(self) -> int:
        return len(self._certs)

    def tls_hosts(self) -> int:
        return len(self._host_secret)

    # -- updates (from ResourceCache.apply) ----------------------------------------------------------

    def set_host(self, host: str, secret: str | None) -> bool:
        """A host's TLS Secret ("ns/name") or None; True if what its SNIs resolve to may have changed."""
        unit = secret_unit(*secret.split("/", 1)) if secret else None
        old = self._host_secret.get(host)
        if old == unit:
            return False
        if old is not None:
            users = self._users[old]
            users.discard(host)
            if not users:
                del self._users[old]
        if unit is None:
            del self._host_secret[host]
        else:
            self._host_secret[host] = unit
            self._users.setdefault(unit, set()).add(host)
        return True

    def set_secret(self, unit: str, fragment: Fragment | None) -> frozenset[str]:
        """A Secret unit's new fragment (None: gone); returns the host patterns whose answer changed."""
        old = self._certs.pop(unit, None)
        new = _certificate(unit, fragment)
        if new is not None:
            self._certs[unit] = new
            if new.error and (old is None or old.error != new.error):
                log.warning("TLS secret %s cannot be served: %s", unit_name(unit), new.error)
        if old == new:
            return frozenset()
        return frozenset(self._users.get(unit, ()))

    def has_wildcard_for(self, host: str) -> bool:
        """Whether a TLS wildcard host covers `host` (then the exact host coming or going moves its SNI)."""
        wildcard = wildcard_of(host)
        return wildcard is not None and wildcard in self._host_secret

    # -- reads (from the streams, per SNI) -----------------------------------------------------------

    def host_of(self, sni: str) -> tuple[str, bool] | None:
        """The TLS host pattern an SNI selects, and whether through a wildcard."""
        name = normalize_sni(sni)
        if name in self._host_secret:
            return name, False
        if self._is_host(name):
            return None  # the exact host exists without TLS: a wildcard certificate must not cover it
        wildcard = wildcard_of(name)
        if wildcard is not None and wildcard in self._host_secret:
            return wildcard, True
        return None

    def resolve(self, sni: str) -> Resolution:
        """The certificate for an SNI as a Secret resource named by the SNI, or why there is none."""
        found = self.host_of(sni)
        if found is None:
            return Resolution(Outcome.NO_HOST)
        host, wildcard = found
        unit = self._host_secret[host]
        cert = self._certs.get(unit)
        if cert is None:
            return Resolution(Outcome.NO_SECRET, None, host, unit, wildcard)
        if cert.error:
            return Resolution(Outcome.BROKEN, None, host, unit, wildcard)
        res = Resource(types.SECRET, sni, cert.version, secret_named(cert.body, sni))
        return Resolution(Outcome.SERVED, res, host, unit, wildcard)


def _certificate(unit: str, fragment: Fragment | None) -> Certificate | None:
    if fragment is None:
        return None
    secret = next((r for r in fragment.resources if r.type_url == types.SECRET), None)
    error = fragment.meta.get("error")
    if secret is None:
        return None if not error else Certificate("", b"", str(error))
    if not error and not has_certificate(secret.body):
        error = "no usable certificate (see the watcher's report on the Secret)"
    return Certificate(secret.version, secret.body, str(error) if error else None)
