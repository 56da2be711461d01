"""What the caches keep, without servers: a TLS certificate's PEM only until it is published, an expiry
judged from the notAfter alone, and no second translation of an update translation would not see."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from shardgate.keys import SourceKind
from shardgate.model import TlsCertificate
from shardgate.watcher import translate
from shardgate.watcher.admission import Admission
from shardgate.watcher.caches import Caches
from shardgate.watcher.certs import check_certificate, epoch_ns
from shardgate.watcher.index import SourceEntry, Withheld, contribution_hash
from shardgate.watcher.status import Feedback
from shardgate.watcher.tenancy import Tenancy
from shardgate.watcher.traced import EventSpan
from shardgate.watcher.translate import ClassPolicy, Limits

from .helpers import ingress, make_cert, tls_secret_pem

ADDRESS = "10.9.8.7"
SOURCE = "secret/default/shop"
UNIT = "t:default/shop"


class _Owner:
    def __init__(self) -> None:
        self.leading = True
        self.enqueued: list[str] = []

    def publishing(self) -> bool:
        return self.leading

    def enqueue(
        self, source: str, observed_ns: int, span: EventSpan | None = None, charged: bool = False
    ) -> None:
        self.enqueued.append(source)

    def settle(self, hosts: set[str], observed_ns: int) -> None:
        pass

    def resync(self, kind: SourceKind, sources: set[str], observed_ns: int) -> None:
        pass


class _Api:
    async def patch_ingress_status(self, namespace: str, name: str, load_balancer: Any) -> Any:
        return {}

    async def create_event(self, involved: Any, reason: str, message: str, component: str, now: str) -> Any:
        return {}


def _caches(owner: _Owner) -> Caches:
    tenancy = Tenancy()
    feedback = Feedback(_Api(), "test", allowed=lambda: True)
    return Caches(owner, ClassPolicy(), Limits(), tenancy, Admission(tenancy), feedback, ADDRESS)


def _ns(when: datetime) -> int:
    return int(when.timestamp() * 1e9)


def _secret(not_after: datetime | None = None) -> dict[str, Any]:
    obj = tls_secret_pem("shop", *make_cert(["shop.example.com"], not_after=not_after))
    obj["metadata"]["resourceVersion"] = "7"
    return obj


def test_a_certificate_pem_is_kept_only_until_it_is_published() -> None:
    owner = _Owner()
    caches = _caches(owner)
    _, on_event = caches.source_handlers(SourceKind.SECRET)
    on_event("ADDED", _secret(), _ns(datetime.now(UTC)))
    [cert] = caches.current[SOURCE].contributions.values()
    assert isinstance(cert, TlsCertificate) and cert.cert_pem  # what the publish workers will send
    digest = contribution_hash(cert)

    caches.withhold_published(lambda source: None)  # not published yet: kept
    assert caches.current[SOURCE].contributions[UNIT] is cert
    assert caches.withheld_unpublished(lambda source: None) == []

    caches.withhold_published(lambda source: SourceEntry("7", {UNIT: digest}))
    assert caches.current[SOURCE].contributions == {UNIT: Withheld(digest)}
    assert caches.current[SOURCE].rv == "7"
    assert caches.withheld_unpublished(lambda source: SourceEntry("7", {UNIT: digest})) == []
    # A leader whose index has another version (its predecessor never published this one) reads it again.
    assert caches.withheld_unpublished(lambda source: SourceEntry("6", {UNIT: "other"})) == [SOURCE]
    assert caches.withheld_unpublished(lambda source: None) == [SOURCE]

    owner.enqueued.clear()
    caches.restore_secret(_secret(), _ns(datetime.now(UTC)))
    assert isinstance(caches.current[SOURCE].contributions[UNIT], TlsCertificate)
    assert owner.enqueued == [SOURCE]


async def test_a_replica_that_does_not_lead_keeps_no_pem() -> None:
    owner = _Owner()
    owner.leading = False
    caches = _caches(owner)
    on_list, _ = caches.source_handlers(SourceKind.SECRET)
    await on_list([_secret()], _ns(datetime.now(UTC)))
    caches.withhold_published(None)
    assert isinstance(caches.current[SOURCE].contributions[UNIT], Withheld)


def test_a_withheld_certificate_expires_as_a_check_of_its_pem_would_say() -> None:
    owner = _Owner()
    caches = _caches(owner)
    not_after = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    obj = _secret(not_after)
    _, on_event = caches.source_handlers(SourceKind.SECRET)
    on_event("ADDED", obj, _ns(datetime.now(UTC)))
    caches.withhold_published(None)
    due = caches.next_expiry()
    assert due == epoch_ns(not_after)

    owner.enqueued.clear()
    caches.expire_due(due + 1)
    [cert] = caches.current[SOURCE].contributions.values()
    pem = translate.translate_secret(obj, not_after).contributions[UNIT]
    assert isinstance(pem, TlsCertificate)
    later = not_after + timedelta(seconds=1)
    assert cert == check_certificate(pem.cert_pem, pem.key_pem, later)
    assert cert.error and "expired" in cert.error and owner.enqueued == [SOURCE]
    assert caches.next_expiry() is None


def test_an_update_translation_would_not_see_is_not_translated_again(monkeypatch: Any) -> None:
    caches = _caches(_Owner())
    calls: list[str] = []
    real = translate.translate_ingress

    def counting(obj: Any, *args: Any) -> Any:
        calls.append(obj["metadata"]["resourceVersion"])
        return real(obj, *args)

    monkeypatch.setattr("shardgate.watcher.caches.translate_ingress", counting)
    obj = ingress("shop", ["shop.example.com"])
    obj["metadata"].update(
        resourceVersion="1", uid="u-1", generation=1, creationTimestamp="2026-01-01T00:00:00Z"
    )
    caches.on_ingress_event("ADDED", obj, 1)
    state = caches.ingresses["ingress/default/shop"]
    contributions = state.contributions

    echo = copy.deepcopy(obj)  # our status write coming back
    echo["metadata"]["resourceVersion"] = "2"
    echo["status"] = {"loadBalancer": {"ingress": [{"ip": ADDRESS}]}}
    caches.on_ingress_event("MODIFIED", echo, 2)
    assert calls == ["1"]
    assert state.rv == "2" and state.status_ours and state.contributions is contributions

    label = copy.deepcopy(echo)  # a new annotation: translated again; equal contributions are kept
    label["metadata"].update(resourceVersion="3", annotations={"team": "shop"})
    caches.on_ingress_event("MODIFIED", label, 3)
    assert calls == ["1", "3"]
    assert caches.ingresses["ingress/default/shop"].contributions is contributions

    edit = copy.deepcopy(label)  # a new spec: the API server bumps the generation
    edit["metadata"].update(resourceVersion="4", generation=2)
    edit["spec"]["rules"][0]["http"]["paths"][0]["path"] = "/shop"
    caches.on_ingress_event("MODIFIED", edit, 4)
    assert calls == ["1", "3", "4"]
    after = caches.ingresses["ingress/default/shop"]
    assert after.rv == "4" and after.contributions != contributions and after.status_ours

    again = copy.deepcopy(edit)  # deleted and created again while nobody watched: a new uid
    again["metadata"].update(resourceVersion="5", uid="u-2", generation=1)
    caches.on_ingress_event("MODIFIED", again, 5)
    assert calls == ["1", "3", "4", "5"]
