"""Test certificates made with `cryptography`: one CA, leaf certificates for exact and wildcard names.

Each leaf carries a serial the tests can read back from the certificate a handshake served, so a test
can tell two certificates for the same name apart (rotation). Keys are EC P-256: fast to generate.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Leaf:
    cert_pem: bytes
    key_pem: bytes
    serial: int
    names: tuple[str, ...]


class TestCA:
    __test__ = False  # not a pytest class

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shardgate test CA")])
        now = dt.datetime.now(dt.UTC)
        self.name = name
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def leaf(self, *names: str) -> Leaf:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        serial = x509.random_serial_number()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return Leaf(
            cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            serial,
            names,
        )

    def client_context(self) -> ssl.SSLContext:
        """Verifies the chain and the host name against the SNI sent, as a browser would."""
        ctx = ssl.create_default_context(cadata=self.pem.decode())
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx


@dataclass(frozen=True)
class Handshake:
    ok: bool
    serial: int | None = None
    subject_cn: str | None = None
    error: str | None = None


def handshake(ctx: ssl.SSLContext, port: int, sni: str | None, timeout: float = 5.0) -> Handshake:
    """A TLS handshake to 127.0.0.1:port with `sni` (None: no SNI, no host name check); the served
    certificate's serial and CN if it held."""
    if sni is None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw,
            ctx.wrap_socket(raw, server_hostname=sni) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        return Handshake(False, error=f"{type(exc).__name__}: {exc}")
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    return Handshake(True, cert.serial_number, str(cn))


def https_get(
    ctx: ssl.SSLContext, port: int, host: str, path: str = "/", timeout: float = 5.0
) -> tuple[int, bytes]:
    """One HTTP/1.1 GET over TLS with SNI = Host = `host`: (status, body); (0, b"") if it failed."""
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw,
            ctx.wrap_socket(raw, server_hostname=host) as tls,
        ):
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    except (OSError, ssl.SSLError):
        return 0, b""
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, body
