"""SDS by SNI in the cache and the streams, driven request by request without gRPC or Envoy."""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from shardgate.keys import host_unit, secret_unit
from shardgate.merge import SecretConfig
from shardgate.model import Backend, HostRoutes, PathRule, PathType
from shardgate.pusher.cache import ResourceCache
from shardgate.pusher.certs import Outcome
from shardgate.pusher.delta import DeltaStream
from shardgate.pusher.main import gateway_listeners
from shardgate.pusher.settings import Settings
from shardgate.pusher.sotw import SotwStream
from shardgate.records import Fragment, Resource
from shardgate.xds import compile_unit, types
from shardgate.xds.compile import resource
from shardgate.xds.secrets import tls_secret

SECRET = types.SECRET
NS = "shop"


def host(name: str, secret: str | None) -> Fragment:
    routes = HostRoutes(
        NS, "ing", "2024-01-01T00:00:00Z", (PathRule("/", PathType.PREFIX, Backend("web", 80)),), secret
    )
    return compile_unit(host_unit(name), {f"ingress/{NS}/ing": routes})


def cert(name: str, pem: bytes = b"CERT") -> Fragment:
    """A secret unit's fragment as the compiler makes it (empty PEM: the watcher found it unusable)."""
    body = tls_secret(SecretConfig(NS, name, pem, pem and b"KEY"))
    return Fragment(secret_unit(NS, name), (resource(SECRET, body.name, body),), {"secret": body.name})


def apply(cache: ResourceCache, *fragments: Fragment) -> dict[str, set[str]]:
    changes = cache.apply({f.unit: f for f in fragments})
    return {t: set(names) for t, names in changes.items()}


def served(res: Resource | None) -> tuple[str, bytes] | None:
    if res is None:
        return None
    secret = secret_pb2.Secret.FromString(res.body)
    return secret.name, secret.tls_certificate.certificate_chain.inline_bytes


# -- the cache and its index ------------------------------------------------------------------------


def test_sni_resolves_exact_then_one_label_wildcard() -> None:
    cache = ResourceCache()
    apply(cache, host("shop.example.com", "shop-tls"), cert("shop-tls", b"SHOP"))
    apply(cache, host("*.wild.example.com", "wild-tls"), cert("wild-tls", b"WILD"))
    apply(cache, host("plain.wild.example.com", None))
    assert served(cache.get(SECRET, "shop.example.com")) == ("shop.example.com", b"SHOP")
    assert served(cache.get(SECRET, "Shop.Example.COM.")) == ("Shop.Example.COM.", b"SHOP")
    assert served(cache.get(SECRET, "a.wild.example.com")) == ("a.wild.example.com", b"WILD")
    assert served(cache.get(SECRET, "b.wild.example.com")) == ("b.wild.example.com", b"WILD")
    # One label only; the wildcard's own parent is not covered; an exact host without TLS wins.
    for sni in ("x.a.wild.example.com", "wild.example.com", "plain.wild.example.com", "nope.example.com"):
        assert cache.get(SECRET, sni) is None, sni
        assert cache.resolve_sni(sni).outcome is Outcome.NO_HOST
    # The compiled Secret is never served under its own name.
    assert cache.get(SECRET, "shop/shop-tls") is None
    assert dict(cache.resources(SECRET)) == {}


def test_missing_and_broken_secrets_are_refused_with_their_key(caplog: pytest.LogCaptureFixture) -> None:
    cache = ResourceCache()
    apply(cache, host("shop.example.com", "shop-tls"))
    r = cache.resolve_sni("shop.example.com")
    assert (r.outcome, r.secret) == (Outcome.NO_SECRET, "t:shop/shop-tls")
    apply(cache, cert("shop-tls", b""))
    assert cache.resolve_sni("shop.example.com").outcome is Outcome.BROKEN
    assert any("shop/shop-tls" in rec.getMessage() for rec in caplog.records)
    apply(cache, cert("shop-tls", b"GOOD"))
    assert served(cache.get(SECRET, "shop.example.com")) == ("shop.example.com", b"GOOD")


def test_changes_name_only_the_hosts_they_affect() -> None:
    cache = ResourceCache()
    listener_version = cache.revision(types.LISTENER)
    # A TLS host: its pattern changes; no listener does.
    assert apply(cache, host("shop.example.com", "shop-tls"))[SECRET] == {"shop.example.com"}
    assert apply(cache, cert("shop-tls"))[SECRET] == {"shop.example.com"}
    assert apply(cache, host("*.wild.example.com", "wild-tls"), cert("wild-tls"))[SECRET] == {
        "*.wild.example.com"
    }
    assert cache.revision(types.LISTENER) == listener_version
    # A Secret's rotation reaches exactly the hosts naming it.
    apply(cache, host("api.example.com", "shop-tls"))
    assert apply(cache, cert("shop-tls", b"ROTATED"))[SECRET] == {"shop.example.com", "api.example.com"}
    assert SECRET not in apply(cache, cert("shop-tls", b"ROTATED"))  # unchanged: nothing
    # A host losing TLS, a host deleted.
    assert apply(cache, host("api.example.com", None))[SECRET] == {"api.example.com"}
    changes = cache.apply({host_unit("shop.example.com"): None})
    assert set(changes[SECRET]) == {"shop.example.com"}
    assert SECRET not in apply(cache, cert("shop-tls", b"AGAIN"))  # no host uses it any more


# -- Delta ------------------------------------------------------------------------------------------


def sds(
    subscribe: tuple[str, ...] = (), unsubscribe: tuple[str, ...] = (), nonce: str = ""
) -> discovery_pb2.DeltaDiscoveryRequest:
    return discovery_pb2.DeltaDiscoveryRequest(
        node=base_pb2.Node(id="gw-1"),
        type_url=SECRET,
        resource_names_subscribe=list(subscribe),
        resource_names_unsubscribe=list(unsubscribe),
        response_nonce=nonce,
    )


def push(stream: DeltaStream, ack: bool = True) -> tuple[dict[str, bytes], list[str], str]:
    """The next SDS response, ACKed as Envoy does unless the test answers it itself (the pusher sends one
    unanswered response per type)."""
    responses = stream.responses()
    if not responses:
        return {}, [], ""
    (resp,) = responses
    if ack:
        stream.handle(sds(nonce=resp.nonce))
    got = {}
    for r in resp.resources:
        secret = secret_pb2.Secret.FromString(r.resource.value)
        assert secret.name == r.name
        got[r.name] = secret.tls_certificate.certificate_chain.inline_bytes
    return got, sorted(resp.removed_resources), resp.nonce


def test_delta_unknown_sni_gets_a_removal_and_is_forgotten() -> None:
    cache = ResourceCache()
    apply(cache, host("shop.example.com", "shop-tls"), cert("shop-tls", b"SHOP"))
    stream = DeltaStream(cache, hold_off=0)
    stream.handle(sds(("shop.example.com", "r1.example.com")))
    got, removed, nonce = push(stream)
    assert got == {"shop.example.com": b"SHOP"} and removed == ["r1.example.com"]
    for i in range(2, 200):  # a flood: each answered, none remembered
        stream.handle(sds((f"r{i}.example.com",), nonce=nonce))
        got, removed, nonce = push(stream)
        assert (got, removed) == ({}, [f"r{i}.example.com"])
    assert len(stream.sni) == 1 and "shop.example.com" in stream.sni
    stream.handle(sds(unsubscribe=("r5.example.com",), nonce=nonce))  # Envoy's own unsubscribe: harmless
    assert push(stream)[:2] == ({}, [])


def test_delta_secret_is_never_a_wildcard_subscription() -> None:
    cache = ResourceCache()
    apply(cache, host("shop.example.com", "shop-tls"), cert("shop-tls"))
    stream = DeltaStream(cache, hold_off=0)
    stream.handle(sds())  # no names: not "everything"
    assert push(stream)[:2] == ({}, [])
    stream.handle(sds(("*",)))
    assert push(stream)[:2] == ({}, [])


def test_delta_rotation_reaches_the_subscribed_snis_it_covers() -> None:
    cache = ResourceCache()
    apply(cache, host("shop.example.com", "shop-tls"), cert("shop-tls", b"SHOP"))
    apply(cache, host("*.wild.example.com", "wild-tls"), cert("wild-tls", b"WILD"))
    stream = DeltaStream(cache, hold_off=0)
    cancel = cache.watch(stream.on_change)
    stream.handle(sds(("shop.example.com", "a.wild.example.com", "b.wild.example.com")))
    push(stream)
    apply(cache, cert("wild-tls", b"WILD2"))
    assert push(stream)[:2] == ({"a.wild.example.com": b"WILD2", "b.wild.example.com": b"WILD2"}, [])
    apply(cache, cert("shop-tls", b"SHOP2"))
    assert push(stream)[:2] == ({"shop.example.com": b"SHOP2"}, [])
    # An exact host appears under the wildcard: that SNI moves to its own certificate.
    apply(cache, host("a.wild.example.com", "shop-tls"))
    assert push(stream)[:2] == ({"a.wild.example.com": b"SHOP2"}, [])
    # The Secret breaks: its SNIs are removed (Envoy drops them), the others stay.
    apply(cache, cert("wild-tls", b""))
    assert push(stream)[:2] == ({}, ["b.wild.example.com"])
    assert "b.wild.example.com" not in stream.sni and "a.wild.example.com" in stream.sni
    cancel()


def test_delta_caps_the_snis_held_through_a_wildcard() -> None:
    cache = ResourceCache()
    apply(cache, host("*.wild.example.com", "wild-tls"), cert("wild-tls", b"WILD"))
    apply(cache, host("shop.example.com", "shop-tls"), cert("shop-tls", b"SHOP"))
    stream = DeltaStream(cache, hold_off=0, max_wildcard_sni=3)
    stream.handle(sds(("shop.example.com",)))
    _, _, nonce = push(stream)
    for i in range(3):
        stream.handle(sds((f"w{i}.wild.example.com",), nonce=nonce))
        got, removed, nonce = push(stream)
        assert (list(got), removed) == ([f"w{i}.wild.example.com"], [])
    stream.handle(sds(("w3.wild.example.com",), nonce=nonce))
    got, removed, nonce = push(stream)
    assert (list(got), removed) == (["w3.wild.example.com"], ["w0.wild.example.com"])  # the oldest goes
    assert stream.sni.wildcard_count() == 3 and "shop.example.com" in stream.sni  # exact hosts uncapped
    # Past the cap within one response: every fresh name still gets an answer.
    stream.handle(sds(tuple(f"v{i}.wild.example.com" for i in range(5)), nonce=nonce))
    got, removed, _ = push(stream)
    assert not set(got) & set(removed)
    assert set(got) | set(removed) >= {f"v{i}.wild.example.com" for i in range(5)}
    assert stream.sni.wildcard_count() <= 3


# -- SotW -------------------------------------------------------------------------------------------


def test_sotw_serves_subscribed_snis_and_pushes_only_on_their_changes() -> None:
    cache = ResourceCache()
    apply(cache, host("shop.example.com", "shop-tls"), cert("shop-tls", b"SHOP"))
    apply(cache, host("api.example.com", "api-tls"), cert("api-tls", b"API"))
    stream = SotwStream(cache, hold_off=0)
    cancel = cache.watch(stream.on_change)
    stream.handle(
        discovery_pb2.DiscoveryRequest(
            node=base_pb2.Node(id="gw"),
            type_url=SECRET,
            resource_names=["shop.example.com", "nope.example.com"],
        )
    )
    (resp,) = stream.responses()
    secrets = [secret_pb2.Secret.FromString(a.value) for a in resp.resources]
    assert [(s.name, s.tls_certificate.certificate_chain.inline_bytes) for s in secrets] == [
        ("shop.example.com", b"SHOP")
    ]
    apply(cache, cert("api-tls", b"API2"))  # not subscribed here: no push
    assert stream.responses() == []
    apply(cache, cert("shop-tls", b"SHOP2"))
    (resp,) = stream.responses()
    assert secret_pb2.Secret.FromString(
        resp.resources[0].value
    ).tls_certificate.certificate_chain.inline_bytes == (b"SHOP2")
    cancel()


def test_delta_plain_exact_host_under_a_tls_wildcard_takes_its_sni_back() -> None:
    """Routing sends `plain.wild.example.com` to its own (non-TLS) host: the wildcard's certificate must
    not serve it, and it must serve it again when that host goes."""
    cache = ResourceCache()
    apply(cache, host("*.wild.example.com", "wild-tls"), cert("wild-tls", b"WILD"))
    stream = DeltaStream(cache, hold_off=0)
    cancel = cache.watch(stream.on_change)
    stream.handle(sds(("plain.wild.example.com",)))
    _, _, nonce = push(stream)
    apply(cache, host("plain.wild.example.com", None))
    assert push(stream)[:2] == ({}, ["plain.wild.example.com"])
    cache.apply({host_unit("plain.wild.example.com"): None})
    stream.handle(sds(("plain.wild.example.com",), nonce=nonce))  # Envoy asks again on a new handshake
    assert push(stream)[:2] == ({"plain.wild.example.com": b"WILD"}, [])
    cancel()


def test_pusher_serves_http_and_https_listeners_from_its_settings() -> None:
    settings = Settings.from_env(
        {"SHARDGATE_GATEWAY_HTTPS_PORT": "9443", "SHARDGATE_TLS_PREFETCH": "a.com, b.com"}
    )
    assert Settings.from_env({}).gateway_https_port == 8443
    assert settings.tls_prefetch == ("a.com", "b.com")
    listeners = {r.name: listener_pb2.Listener.FromString(r.body) for r in gateway_listeners(settings)}
    assert set(listeners) == {"http", "https"}
    assert listeners["https"].address.socket_address.port_value == 9443
    assert listeners["http"].address.socket_address.port_value == 8080


def test_a_reason_in_the_secret_fragment_meta_is_honoured_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """If the compiler carries the watcher's reason (`meta["error"]`), with or without a resource."""
    cache = ResourceCache()
    unit = secret_unit(NS, "shop-tls")
    apply(cache, host("shop.example.com", "shop-tls"))
    cache.apply({unit: Fragment(unit, (), {"error": "certificate expired"})})
    assert cache.resolve_sni("shop.example.com").outcome is Outcome.BROKEN
    assert any("shop/shop-tls" in r.getMessage() and "expired" in r.getMessage() for r in caplog.records)
    good = cert("shop-tls", b"GOOD")
    cache.apply({unit: Fragment(unit, good.resources, {"error": "key does not match"})})
    assert cache.resolve_sni("shop.example.com").outcome is Outcome.BROKEN
    cache.apply({unit: good})
    assert served(cache.get(SECRET, "shop.example.com")) == ("shop.example.com", b"GOOD")
    cache.apply({unit: None})
    assert cache.resolve_sni("shop.example.com").outcome is Outcome.NO_SECRET


def test_delta_certificate_envoy_refuses_is_answered_with_removals_until_it_changes() -> None:
    cache = ResourceCache()
    apply(cache, host("*.wild.example.com", "wild-tls"), cert("wild-tls", b"BAD"))
    stream = DeltaStream(cache, hold_off=0)
    cancel = cache.watch(stream.on_change)
    stream.handle(sds(("a.wild.example.com",)))
    got, _, nonce = push(stream, ack=False)
    assert list(got) == ["a.wild.example.com"]
    nack = sds(nonce=nonce)
    nack.error_detail.CopyFrom(status_pb2.Status(code=3, message="Failed to load certificate chain"))
    stream.handle(nack)
    got, removed, nonce = push(stream)
    assert (got, removed) == ({}, ["a.wild.example.com"])  # the waiting handshake fails now
    for sni in ("b.wild.example.com", "a.wild.example.com"):  # new handshakes: refused at once
        stream.handle(sds((sni,), nonce=nonce))
        got, removed, nonce = push(stream)
        assert (got, removed) == ({}, [sni])
    assert len(stream.sni) == 0
    apply(cache, cert("wild-tls", b"GOOD"))
    stream.handle(sds(("c.wild.example.com",), nonce=nonce))
    assert push(stream)[:2] == ({"c.wild.example.com": b"GOOD"}, [])
    cancel()
