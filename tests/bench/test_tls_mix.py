"""The pipeline benchmark's TLS mix, without the stack: its certificates, its objects, its HTTPS probe and
what the report says about it.

The certificates must pass the watcher's own checks (or the gateway would never serve them), the probe
must prove which certificate a host was served with, and the objects must reference each other as a
tenant's would (a custom domain's Secret in the Ingress's namespace, created before it). The tiny run
through the real stack is in `test_pipeline.py`.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench import common, pipeline  # noqa: E402
from bench.certs import BenchCA  # noqa: E402
from bench.report_pipeline import pipeline_section  # noqa: E402
from shardgate.watcher.certs import check_certificate  # noqa: E402

PLATFORM_HOST = common.host_name(1)  # app-1.apps.bench.test
CUSTOM_HOST = common.host_name(4)  # www.tenant-4.example


@pytest.fixture(scope="module")
def ca() -> BenchCA:
    return BenchCA()


def _pem(secret: dict[str, Any], key: str) -> bytes:
    return base64.b64decode(secret["data"][key])


def test_certificates_pass_the_watchers_checks_for_exactly_their_names(ca: BenchCA) -> None:
    now = dt.datetime.now(dt.UTC)
    for host, names in ((CUSTOM_HOST, (CUSTOM_HOST,)), (pipeline.WILDCARD, ("*.apps.bench.test",))):
        secret = ca.secret("bench-4", "s", host)
        assert secret["type"] == "kubernetes.io/tls"
        checked = check_certificate(_pem(secret, "tls.crt"), _pem(secret, "tls.key"), now)
        assert checked.error is None and checked.names == names
    assert ca.leaf(CUSTOM_HOST) is ca.leaf(CUSTOM_HOST)  # signed once per run


def test_platform_hosts_name_the_wildcard_and_custom_domains_bring_their_own_secret(ca: BenchCA) -> None:
    ((path, platform),) = pipeline.host_objects("ing-1", PLATFORM_HOST, 1, ca)
    assert path == pipeline.INGRESSES
    assert platform["spec"]["tls"] == [{"hosts": [PLATFORM_HOST], "secretName": pipeline.WILDCARD_SECRET}]

    (secret_path, secret), (ingress_path, custom) = pipeline.host_objects("ing-4", CUSTOM_HOST, 4, ca)
    assert (secret_path, ingress_path) == (pipeline.SECRETS, pipeline.INGRESSES)  # the Secret first
    assert secret["metadata"]["namespace"] == custom["metadata"]["namespace"] == pipeline.namespace_of(4)
    assert custom["spec"]["tls"] == [{"hosts": [CUSTOM_HOST], "secretName": secret["metadata"]["name"]}]

    path, wildcard = pipeline.wildcard_secret(ca, pipeline.namespace_of(1))
    assert path == pipeline.SECRETS and wildcard["metadata"]["name"] == pipeline.WILDCARD_SECRET
    assert wildcard["metadata"]["namespace"] == platform["metadata"]["namespace"]

    ((_, plain),) = pipeline.host_objects("ing-4", CUSTOM_HOST, 4, None)
    assert "tls" not in plain["spec"]


def test_the_mix_is_four_in_five_on_the_wildcard() -> None:
    hosts = [common.host_name(i) for i in range(30)]
    assert pipeline.tls_mix(hosts, tls=True) == {"wildcard_cert": 24, "own_cert": 6, "plain": 0}
    assert pipeline.tls_mix(hosts, tls=False) == {"wildcard_cert": 0, "own_cert": 0, "plain": 30}
    kinds = [pipeline.kind_of(pipeline.activation_host(k)) for k in range(10)]
    assert kinds.count(pipeline.CUSTOM) == 2 and kinds[:2] == [pipeline.PLATFORM, pipeline.CUSTOM]


# -- the HTTPS probe against a TLS server that picks its certificate by SNI, as the gateway does --------


def _server_context(ca: BenchCA, tmp: Path, name: str) -> ssl.SSLContext:
    crt, key = tmp / f"{name}.crt", tmp / f"{name}.key"
    crt.write_bytes(ca.leaf(name) + ca.pem)
    key.write_bytes(ca.key_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    return ctx


@pytest.fixture
async def https_echo(ca: BenchCA, tmp_path: Path) -> AsyncIterator[int]:
    """127.0.0.1:port: the custom host's certificate for its SNI, the platform wildcard for any other
    SNI, and an echo answer naming `common.ECHO_MAIN`."""
    wildcard = _server_context(ca, tmp_path, pipeline.WILDCARD)
    custom = _server_context(ca, tmp_path, CUSTOM_HOST)

    def pick(sock: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        if server_name == CUSTOM_HOST:
            sock.context = custom

    wildcard.sni_callback = pick

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            body = b'{"name": "%s"}' % common.ECHO_MAIN.encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=wildcard)
    yield server.sockets[0].getsockname()[1]
    server.close()


async def test_https_probe_proves_which_certificate_a_host_was_served_with(
    ca: BenchCA, https_echo: int
) -> None:
    client = ca.client_context()
    platform = await common.ask(https_echo, PLATFORM_HOST, common.PROBE_PATH, client)
    assert (platform.status, platform.backend) == (200, common.ECHO_MAIN)
    assert platform.names == ("*.apps.bench.test",)
    custom = await common.ask(https_echo, CUSTOM_HOST, common.PROBE_PATH, client)
    assert (custom.status, custom.backend, custom.names) == (200, common.ECHO_MAIN, (CUSTOM_HOST,))
    # A custom domain served the wildcard (not its own certificate) is not served: the name check fails.
    other = await common.ask(https_echo, common.host_name(9), common.PROBE_PATH, client)
    assert other == common.Reply(0, None)
    # Nor is a certificate the client does not trust.
    stranger = BenchCA().client_context()
    assert (await common.ask(https_echo, PLATFORM_HOST, common.PROBE_PATH, stranger)).status == 0
    done = await common.wait_answered(https_echo, CUSTOM_HOST, common.PROBE_PATH, common.ECHO_MAIN, 5, client)
    assert done > 0


# -- the report ---------------------------------------------------------------------------------------


def _run(n: int, tls: bool) -> dict[str, Any]:
    summary = {"n": 5, "p50": 5.0, "p99": 9.0, "max": 9.0}
    activation: dict[str, Any] = {"add": summary, "post_ms": summary, "stages": {}, "traced": 0}
    load: dict[str, Any] = {"post_s": 1.0, "post_rate": n, "redis_s": 2.0, "served_s": 3.0}
    result: dict[str, Any] = {"n": n, "activation": activation, "load": load,
                              "memory_loaded": {"ours_total": 100, "envoy": 50}}  # fmt: skip
    if tls:
        load["mix"] = pipeline.tls_mix([common.host_name(i) for i in range(n)], tls=True)
        activation["by_kind"] = {"platform": {**summary, "n": 4}, "custom": {**summary, "n": 1, "p50": 7.0}}
        result["memory_loaded"]["envoy_certs"] = 52
        result["tls_check"] = {
            "custom": {"host": CUSTOM_HOST, "https_status": 200, "backend": "echo-main",
                       "cert_names": [CUSTOM_HOST], "http_status": 308},
        }  # fmt: skip
    return {"kind": "pipeline", "settings": {"n": n, "tls": tls}, "result": result}


def test_the_report_says_what_the_mix_was() -> None:
    page = pipeline_section([("a", _run(1000, False), Path("a")), ("b", _run(2000, True), Path("b"))])
    assert "| 1,000 | 1 | plain HTTP |" in page  # a run from before the mix
    assert "| 2,000 | 1 | 1,600 wildcard cert + 400 own cert |" in page
    assert "platform 5.0 / 9.0 (4) · custom 7.0 / 9.0 (1)" in page
    check = f"custom host `{CUSTOM_HOST}`: HTTPS 200 from echo-main with a certificate for `{CUSTOM_HOST}`"
    assert check in page
    assert "plain HTTP 308" in page
    assert "| 52 | [b] |" in page  # certificates Envoy holds
