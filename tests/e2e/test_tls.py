"""TLS end to end (issue 4): HTTPS through real Envoy, certificates delivered by SDS, chosen by SNI.

The tests trust only a CA they generate; every HTTPS request verifies the chain and the hostname against
the SNI it sends, so a 200 over HTTPS proves the gateway presented that host's own certificate. Secrets
and Ingresses go in with the stock `kubectl`; rejections are read back with `kubectl get events`.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import string
from urllib.parse import urlsplit

import aiohttp
import pytest

from .conftest import (
    E2E,
    CertAuthority,
    Handshake,
    eventually,
    host_rule,
    https_port,
    https_request,
    ingress,
    path_rule,
    request,
    tenant,
    tls_secret,
    wait_event,
    wait_served,
)

pytestmark = pytest.mark.e2e

A, B = "echo-a", "echo-b"
NGINX = "nginx.ingress.kubernetes.io/"


@pytest.fixture(scope="module")
def ca() -> CertAuthority:
    return CertAuthority()


async def wait_https(
    e2e: E2E, ca: CertAuthority, host: str, backend: str, serial: int | None = None, path: str = "/"
) -> Handshake:
    """Wait until HTTPS to `host` verifies, is answered 200 by `backend` and (if given) shows `serial`."""
    last: list[object] = []

    async def served() -> bool:
        try:
            shake = await https_request(e2e, ca, host, path)
        except (ssl.SSLError, OSError, aiohttp.ClientError) as exc:
            last[:] = [exc]
            return False
        last[:] = [shake.reply, shake.serial]
        return (
            shake.reply.status == 200
            and shake.reply.backend == backend
            and (serial is None or shake.serial == serial)
        )

    try:
        await eventually(served, timeout=10, what=f"https://{host}{path} served by {backend}")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}; last: {last!r}; events:\n{e2e.kubectl('get', 'events', '-A')}"
        ) from None
    return await https_request(e2e, ca, host, path)


def tls_ingress(
    name: str, ns: str, hosts_backends: dict[str, str], secrets: dict[str, str], **kw: object
) -> str:
    rules = [host_rule(h, path_rule("/", "Prefix", b)) for h, b in hosts_backends.items()]
    tls = [{"hosts": [h], "secretName": s} for h, s in secrets.items()]
    return ingress(name, ns, *rules, tls=tls, **kw)  # type: ignore[arg-type]


async def test_https_serves_each_hosts_own_certificate(
    e2e: E2E, ca: CertAuthority, http: aiohttp.ClientSession
) -> None:
    ns = await tenant(e2e, http, "tls-own")
    one, two = "one.own.tls.test", "two.own.tls.test"
    crt1, key1, serial1 = ca.issue(one)
    crt2, key2, serial2 = ca.issue(two)
    e2e.apply(tls_secret(ns, "one", crt1, key1))
    e2e.apply(tls_secret(ns, "two", crt2, key2))
    e2e.apply(tls_ingress("own", ns, {one: A, two: B}, {one: "one", two: "two"}))
    first = await wait_https(e2e, ca, one, A)
    second = await wait_https(e2e, ca, two, B)
    assert (first.serial, first.names) == (serial1, [one])
    assert (second.serial, second.names) == (serial2, [two])
    assert first.reply.json and first.reply.json["host"] == one and first.reply.json["path"] == "/"
    assert first.reply.json["headers"].get("X-Forwarded-Proto") == "https"

    # Nobody gets a certificate for a name no Secret covers: the handshake fails (it cannot verify).
    with pytest.raises((ssl.SSLError, aiohttp.ClientError, OSError)):
        await https_request(e2e, ca, "nobody.own.tls.test")
    # ...and a host's certificate is never offered for another name: the SNI decides, not the Host header.
    shake = await https_request(e2e, ca, one, "/")
    assert shake.serial == serial1


async def test_secret_update_rotates_the_certificate_and_nothing_else(
    e2e: E2E, ca: CertAuthority, http: aiohttp.ClientSession
) -> None:
    ns = await tenant(e2e, http, "tls-rotate")
    rot, stay = "rot.rotate.tls.test", "stay.rotate.tls.test"
    crt_old, key_old, serial_old = ca.issue(rot)
    crt_stay, key_stay, serial_stay = ca.issue(stay)
    e2e.apply(tls_secret(ns, "rot", crt_old, key_old))
    e2e.apply(tls_secret(ns, "stay", crt_stay, key_stay))
    e2e.apply(tls_ingress("rotate", ns, {rot: A, stay: B}, {rot: "rot", stay: "stay"}))
    await wait_https(e2e, ca, rot, A, serial_old)
    await wait_https(e2e, ca, stay, B, serial_stay)

    crt_new, key_new, serial_new = ca.issue(rot)
    e2e.apply(tls_secret(ns, "rot", crt_new, key_new))
    seen_stay: list[int] = []

    async def rotated() -> bool:
        seen_stay.append((await https_request(e2e, ca, stay)).serial)  # the other host, all along
        return (await https_request(e2e, ca, rot)).serial == serial_new

    await eventually(rotated, timeout=10, what="the new certificate served after the Secret update")
    assert set(seen_stay) == {serial_stay}
    shake = await https_request(e2e, ca, rot)
    assert shake.reply.status == 200 and shake.reply.backend == A


async def test_broken_secret_is_reported_and_other_hosts_keep_working(
    e2e: E2E, ca: CertAuthority, http: aiohttp.ClientSession
) -> None:
    ns = await tenant(e2e, http, "tls-broken")
    good, mismatched, garbage, expired = (
        f"{n}.broken.tls.test" for n in ("good", "mismatch", "garbage", "expired")
    )
    crt_m, _, _ = ca.issue(mismatched)
    _, other_key, _ = ca.issue(mismatched)  # a valid key, but not the certificate's
    crt_e, key_e, _ = ca.issue(expired, expired=True)
    e2e.apply(tls_secret(ns, "mismatch", crt_m, other_key))
    e2e.apply(tls_secret(ns, "garbage", b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n", b"nor this"))
    e2e.apply(tls_secret(ns, "expired", crt_e, key_e))
    e2e.apply(
        tls_ingress(
            "broken",
            ns,
            {mismatched: A, garbage: A, expired: A},
            {mismatched: "mismatch", garbage: "garbage", expired: "expired"},
        )
    )
    # Each broken Secret is told about, with its own key, where `kubectl get events` shows it.
    for secret in ("mismatch", "garbage", "expired"):
        await wait_event(e2e, ns, "Secret", secret)
    listing = e2e.kubectl("get", "events", "-n", ns)
    assert all(s in listing for s in ("secret/mismatch", "secret/garbage", "secret/expired")), listing

    # A good host added after them activates over HTTPS: the listener is not down, nothing is blocked.
    crt_g, key_g, serial_g = ca.issue(good)
    e2e.apply(tls_secret(ns, "good", crt_g, key_g))
    e2e.apply(tls_ingress("good", ns, {good: B}, {good: "good"}))
    await wait_https(e2e, ca, good, B, serial_g)
    # The broken hosts never present the broken material (a verified handshake would mean they did).
    for host in (mismatched, expired):
        with pytest.raises((ssl.SSLError, aiohttp.ClientError, OSError)):
            await https_request(e2e, ca, host)

    # Fixing the Secret brings its host up.
    crt_fix, key_fix, serial_fix = ca.issue(mismatched)
    e2e.apply(tls_secret(ns, "mismatch", crt_fix, key_fix))
    await wait_https(e2e, ca, mismatched, A, serial_fix)


async def test_one_wildcard_certificate_serves_many_hosts(
    e2e: E2E, ca: CertAuthority, http: aiohttp.ClientSession
) -> None:
    ns = await tenant(e2e, http, "tls-wild")
    crt, key, serial = ca.issue("*.wc.tls.test")
    e2e.apply(tls_secret(ns, "wildcard", crt, key))
    # A wildcard host with the wildcard certificate, and two exact hosts sharing the same Secret.
    e2e.apply(
        ingress(
            "wild",
            ns,
            host_rule("*.wc.tls.test", path_rule("/", "Prefix", A)),
            host_rule("exact.wc.tls.test", path_rule("/", "Prefix", B)),
            tls=[{"hosts": ["*.wc.tls.test", "exact.wc.tls.test"], "secretName": "wildcard"}],
        )
    )
    for host, backend in (("a.wc.tls.test", A), ("b.wc.tls.test", A), ("exact.wc.tls.test", B)):
        shake = await wait_https(e2e, ca, host, backend)
        assert shake.serial == serial and shake.names == ["*.wc.tls.test"], host
        assert shake.reply.json and shake.reply.json["host"] == host
    # A wildcard certificate covers one label only: a deeper name gets no certificate that verifies.
    with pytest.raises((ssl.SSLError, aiohttp.ClientError, OSError)):
        await https_request(e2e, ca, "x.y.wc.tls.test")


async def test_ssl_redirect_and_force_ssl_redirect(
    e2e: E2E, ca: CertAuthority, http: aiohttp.ClientSession
) -> None:
    ns = await tenant(e2e, http, "tls-redirect")
    secure, optout, forced = (
        "secure.redirect.tls.test",
        "optout.redirect.tls.test",
        "forced.redirect.tls.test",
    )
    crt, key, _ = ca.issue(secure, optout)
    e2e.apply(tls_secret(ns, "cert", crt, key))
    e2e.apply(tls_ingress("secure", ns, {secure: A}, {secure: "cert"}))
    e2e.apply(
        tls_ingress(
            "optout", ns, {optout: A}, {optout: "cert"}, annotations={NGINX + "ssl-redirect": "false"}
        )
    )
    e2e.apply(
        ingress(
            "forced",
            ns,
            host_rule(forced, path_rule("/", "Prefix", B)),
            annotations={NGINX + "force-ssl-redirect": "true"},
        )
    )
    await wait_https(e2e, ca, secure, A)

    async def redirects(host: str) -> bool:
        reply = await request(e2e, http, host, "/some/path?q=1")
        location = urlsplit(reply.headers.get("Location", ""))
        return (
            reply.status == 308
            and location.scheme == "https"
            and location.hostname == host
            and location.path == "/some/path"
        )

    # A TLS host is redirected from HTTP to HTTPS by default (nginx's ssl-redirect default).
    await eventually(lambda: redirects(secure), timeout=10, what="HTTP → HTTPS redirect for a TLS host")
    # ssl-redirect: "false" serves the TLS host over plain HTTP too.
    await wait_served(e2e, http, optout, "/some/path", A)
    await wait_https(e2e, ca, optout, A)
    # force-ssl-redirect redirects even a host without TLS.
    await eventually(lambda: redirects(forced), timeout=10, what="force-ssl-redirect without TLS")


async def test_random_server_names_do_not_hurt_real_hosts(
    e2e: E2E, ca: CertAuthority, http: aiohttp.ClientSession
) -> None:
    """A client sending random SNI names gets no certificate, and real hosts keep handshaking."""
    ns = await tenant(e2e, http, "tls-flood")
    real = "real.flood.tls.test"
    crt, key, serial = ca.issue(real)
    e2e.apply(tls_secret(ns, "real", crt, key))
    e2e.apply(tls_ingress("real", ns, {real: A}, {real: "real"}))
    await wait_https(e2e, ca, real, A, serial)

    port = https_port(e2e)
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    limit = asyncio.Semaphore(50)
    outcomes: list[str] = []

    async def random_handshake() -> None:
        name = "".join(random.choices(string.ascii_lowercase, k=12)) + ".random.tls.test"
        async with limit:
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port, ssl=insecure, server_hostname=name), 10
                )
            except (ssl.SSLError, OSError, TimeoutError) as exc:
                outcomes.append(type(exc).__name__)
                return
            outcomes.append("certificate")  # even unverified, a random name must get nothing
            writer.close()

    flood = asyncio.gather(*(random_handshake() for _ in range(400)))
    # While the flood runs, the real host keeps its certificate and its answers.
    while not flood.done():
        shake = await https_request(e2e, ca, real)
        assert shake.serial == serial and shake.reply.backend == A
        await asyncio.sleep(0.05)
    await flood
    assert len(outcomes) == 400 and "certificate" not in outcomes, sorted(set(outcomes))
    # ...and a TLS host added after the flood still activates.
    late = "late.flood.tls.test"
    crt2, key2, serial2 = ca.issue(late)
    e2e.apply(tls_secret(ns, "late", crt2, key2))
    e2e.apply(tls_ingress("late", ns, {late: B}, {late: "late"}))
    await wait_https(e2e, ca, late, B, serial2)
