"""One local stack per e2e module: real nats-server, redis-server, Envoy, API stand-in, our services."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import ssl
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from multidict import CIMultiDict

from shardgate.local.procs import PythonService
from shardgate.local.servers import free_port
from shardgate.local.stack import Stack, StackOptions

pytestmark = pytest.mark.e2e


def kubectl_binary() -> str:
    local = Path(sys.executable).parent / "kubectl"
    return str(local) if local.exists() else (shutil.which("kubectl") or "kubectl")


class E2E:
    def __init__(self, stack: Stack, echoes: dict[str, int]) -> None:
        self.stack = stack
        self.echoes = echoes
        self.gateway = f"http://127.0.0.1:{stack.port['gateway']}"
        self.kubeapi = f"http://127.0.0.1:{stack.port['kubeapi']}"
        self.otlp_http = f"http://127.0.0.1:{stack.port['otlp_http']}"

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        cmd = [kubectl_binary(), "--kubeconfig", str(self.stack.kubeconfig), *args]
        done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr}")
        return done.stdout

    def apply(self, yaml_text: str) -> str:
        return self.kubectl("apply", "-f", "-", stdin=yaml_text)

    async def get(self, session: aiohttp.ClientSession, host: str, path: str) -> tuple[int, Any]:
        async with session.get(self.gateway + path, headers={"Host": host}) as resp:
            body = await resp.json() if resp.content_type == "application/json" else await resp.text()
            return resp.status, body


def backend_yaml(name: str, port: int) -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: shop}}
spec:
  ports: [{{name: http, port: 80, targetPort: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: shop
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: {port}, protocol: TCP}}]
endpoints: [{{addresses: ["127.0.0.1"], conditions: {{ready: true}}}}]
"""


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    workdir = tmp_path_factory.mktemp("stack")
    stack = Stack(StackOptions(directory=workdir, shards=16), log=lambda m: None)
    echoes: dict[str, int] = {}
    services: list[PythonService] = []
    try:
        stack.start()
        for name in ("echo-a", "echo-b"):
            port = free_port()
            svc = PythonService(
                name, workdir / name, "shardgate.cli",
                args=["echo", "--name", name, "--port", str(port)], ready_ports=[port],
            )  # fmt: skip
            svc.start()
            services.append(svc)
            echoes[name] = port
        env = E2E(stack, echoes)
        env.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n")
        env.apply("\n---\n".join(backend_yaml(n, p) for n, p in echoes.items()))
        yield env
    finally:
        for svc in services:
            svc.stop(kill=True)
        stack.stop()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30.0, what: str = "") -> None:
    """Poll until `check` holds; the bound only stops a broken pipeline from hanging the suite."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            if await check():
                return
        except (TimeoutError, aiohttp.ClientError):
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached within {timeout}s: {what}")
        await asyncio.sleep(0.05)


# -- helpers for the issue-4 conformance modules (test_semantics, test_tls, test_tenancy) ----------------
#
# Each test takes a namespace of its own (`E2E.tenant`) with the two echo backends registered in it as
# Services, and hosts of its own, so tests in one module share the stack but never each other's routes.

Obj = dict[str, Any]


def service_yaml(namespace: str, name: str, port: int, ready: bool = True) -> str:
    """A Service `name` (port 80, named http) whose one endpoint is 127.0.0.1:`port`."""
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  ports: [{{name: http, port: 80, targetPort: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: {namespace}
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: {port}, protocol: TCP}}]
endpoints: [{{addresses: ["127.0.0.1"], conditions: {{ready: {"true" if ready else "false"}}}}}]
"""


def path_rule(path: str, path_type: str = "Prefix", service: str = "echo-a", port: int | str = 80) -> Obj:
    port_ref = {"number": port} if isinstance(port, int) else {"name": port}
    return {"path": path, "pathType": path_type, "backend": {"service": {"name": service, "port": port_ref}}}


def host_rule(host: str | None, *paths: Obj) -> Obj:
    rule: Obj = {"http": {"paths": list(paths)}}
    if host is not None:
        rule["host"] = host
    return rule


def ingress(
    name: str,
    namespace: str,
    *rules: Obj,
    annotations: dict[str, str] | None = None,
    tls: list[Obj] | None = None,
    default_backend: str | None = None,
    ingress_class: str | None = "shardgate",
) -> str:
    """An Ingress manifest (JSON, which `kubectl apply` reads like YAML)."""
    spec: Obj = {}
    if ingress_class is not None:
        spec["ingressClassName"] = ingress_class
    if rules:
        spec["rules"] = list(rules)
    if tls:
        spec["tls"] = tls
    if default_backend is not None:
        spec["defaultBackend"] = {"service": {"name": default_backend, "port": {"number": 80}}}
    meta: Obj = {"name": name, "namespace": namespace}
    if annotations:
        meta["annotations"] = annotations
    body = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}
    return json.dumps(body)


class Reply:
    """One answer through the gateway; `json` is the echo backend's report when the backend answered."""

    def __init__(self, status: int, headers: Any, text: str) -> None:
        self.status = status
        self.headers = headers
        self.text = text
        try:
            self.json: Obj | None = json.loads(text) if text.startswith("{") else None
        except ValueError:
            self.json = None

    @property
    def backend(self) -> str | None:
        return self.json.get("name") if self.json else None

    def __repr__(self) -> str:
        return f"Reply({self.status}, {dict(self.headers)!r}, {self.text[:300]!r})"


async def request(
    e2e: E2E,
    http: aiohttp.ClientSession,
    host: str,
    path: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> Reply:
    """One plain-HTTP request through the gateway, redirects not followed (they are what some tests see)."""
    async with http.request(
        method, e2e.gateway + path, headers={"Host": host, **(headers or {})}, allow_redirects=False
    ) as resp:
        return Reply(resp.status, resp.headers, await resp.text())


def _tenant_events(e2e: E2E, namespace: str) -> list[Obj]:
    items: list[Obj] = json.loads(e2e.kubectl("get", "events", "-n", namespace, "-o", "json"))["items"]
    return items


def event_lines(e2e: E2E, namespace: str) -> str:
    """`kubectl get events` as a user reads it, for assertion messages."""
    return e2e.kubectl("get", "events", "-n", namespace)


async def wait_event(
    e2e: E2E, namespace: str, kind: str, name: str, *words: str, timeout: float = 10.0
) -> Obj:
    """The first Event about `kind`/`name` whose message contains every one of `words` (case-insensitive)."""
    found: list[Obj] = []

    async def seen() -> bool:
        for event in _tenant_events(e2e, namespace):
            involved = event.get("involvedObject") or {}
            message = str(event.get("message", "")).lower()
            if (
                involved.get("kind") == kind
                and involved.get("name") == name
                and all(w.lower() in message for w in words)
            ):
                found.append(event)
                return True
        return False

    try:
        await eventually(seen, timeout=timeout, what=f"an Event on {kind} {namespace}/{name} with {words}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; events now:\n{event_lines(e2e, namespace)}") from None
    return found[0]


async def tenant(e2e: E2E, http: aiohttp.ClientSession, namespace: str) -> str:
    """A namespace of the test's own with Services echo-a and echo-b (the module's echo processes).

    Returns once both backends answer through the gateway (a probe Ingress, `probe.<namespace>.test`),
    so a test's assertions are about its routes, not about its Services' endpoints still arriving.
    """
    e2e.apply(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {namespace}}}\n")
    e2e.apply("\n---\n".join(service_yaml(namespace, n, p) for n, p in e2e.echoes.items()))
    probe = f"probe.{namespace}.test"
    paths = [path_rule(f"/{name}", "Prefix", name) for name in e2e.echoes]
    e2e.apply(ingress("zz-probe", namespace, host_rule(probe, *paths)))
    for name in e2e.echoes:
        await wait_served(e2e, http, probe, f"/{name}", name)
    return namespace


def https_port(e2e: E2E) -> int:
    """The gateway's HTTPS port as the stack publishes it (`stack.port`, or `gateway.https` in state)."""
    for key in ("https", "gateway_https"):
        if key in e2e.stack.port:
            return int(e2e.stack.port[key])
    https = e2e.stack.to_state().get("gateway", {}).get("https")
    if not https:
        raise AssertionError("the local stack exposes no HTTPS port for the gateway")
    return int(str(https).rsplit(":", 1)[1])


class CertAuthority:
    """A throwaway certificate authority: the tests trust only it, so a verified handshake proves which
    certificate the gateway chose."""

    def __init__(self, name: str = "shardgate e2e CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.now(UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, *names: str, days: int = 30, expired: bool = False) -> tuple[bytes, bytes, int]:
        """(cert PEM, key PEM, serial) for a leaf naming `names` (DNS SANs, wildcards allowed)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        start, end = (
            (now - timedelta(days=10), now - timedelta(days=1))
            if expired
            else (now - timedelta(hours=1), now + timedelta(days=days))
        )
        serial = x509.random_serial_number()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return cert.public_bytes(serialization.Encoding.PEM), key_pem, serial

    def client_context(self) -> ssl.SSLContext:
        """Verifies the chain against this CA only, and the hostname against the SNI sent."""
        ctx = ssl.create_default_context(cadata=self.pem.decode())
        ctx.check_hostname = True
        return ctx

    def server_context(self, *names: str) -> ssl.SSLContext:
        """For a TLS backend of our own (backend-protocol HTTPS)."""
        cert_pem, key_pem, _ = self.issue(*names)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as tmp:
            crt, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
            crt.write_bytes(cert_pem)
            key.write_bytes(key_pem)
            ctx.load_cert_chain(crt, key)
        return ctx


def tls_secret(namespace: str, name: str, cert_pem: bytes, key_pem: bytes) -> str:
    data = {"tls.crt": base64.b64encode(cert_pem).decode(), "tls.key": base64.b64encode(key_pem).decode()}
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
    }
    return json.dumps(body)


class Handshake:
    """One HTTPS request: the certificate the gateway presented (already verified) and the answer."""

    def __init__(self, serial: int, names: list[str], reply: Reply) -> None:
        self.serial = serial
        self.names = names
        self.reply = reply


async def https_request(
    e2e: E2E, ca: CertAuthority, host: str, path: str = "/", timeout: float = 5.0
) -> Handshake:
    """GET https://`host``path` through the gateway's HTTPS port: SNI and Host are `host`, the chain and
    the hostname are verified against `ca`. A fresh connection (and handshake) every time, so a rotation
    is seen at once; plain HTTP/1.1 over the TLS stream, so the presented certificate is at hand."""
    port = https_port(e2e)

    async def exchange() -> Handshake:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ca.client_context(), server_hostname=host
        )
        try:
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            raw = await reader.read()
        finally:
            writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers: CIMultiDict[str] = CIMultiDict()
        for line in lines:
            name, _, value = line.partition(":")
            headers.add(name.strip(), value.strip())
        if headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = _dechunk(body)
        cert = x509.load_der_x509_certificate(der)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        reply = Reply(int(status_line.split()[1]), headers, body.decode("utf-8", "replace"))
        return Handshake(cert.serial_number, names.get_values_for_type(x509.DNSName), reply)

    return await asyncio.wait_for(exchange(), timeout)


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def wait_served(
    e2e: E2E,
    http: aiohttp.ClientSession,
    host: str,
    path: str,
    backend: str,
    timeout: float = 10.0,
    headers: dict[str, str] | None = None,
) -> Reply:
    """Wait until `host``path` is answered 200 by `backend`; the reply is returned for further checks."""
    last: list[Reply] = []

    async def answered() -> bool:
        reply = await request(e2e, http, host, path, headers=headers)
        last[:] = [reply]
        return reply.status == 200 and reply.backend == backend

    try:
        await eventually(answered, timeout=timeout, what=f"{host}{path} served by {backend}")
    except AssertionError as exc:
        events = e2e.kubectl("get", "events", "-A")
        raise AssertionError(f"{exc}; last answer {last[0] if last else None!r}; events:\n{events}") from None
    return last[0]


async def envoy_config(e2e: E2E, http: aiohttp.ClientSession, resource: str | None = None) -> str:
    """Envoy's own config dump (admin API): what the gateway really runs, for "nothing reached it" checks."""
    params = {"resource": resource} if resource else {}
    async with http.get(f"http://127.0.0.1:{e2e.stack.port['admin']}/config_dump", params=params) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.text()
