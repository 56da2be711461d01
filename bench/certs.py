"""The benchmark's certificates: one bench CA, the platform wildcard and one leaf per custom domain.

The pipeline benchmark serves every host over TLS, as a real platform does: hosts under the platform
domain share one wildcard certificate, and each custom domain brings its own. At N = 100k that is 20k
custom certificates, made fresh for every run (they must be valid now, and nothing is kept on disk), so
generation has to be cheap:

- **EC P-256 keys.** An RSA-2048 key takes tens of milliseconds to generate, an EC key tens of
  microseconds, and Envoy serves both.
- **One leaf key for every leaf.** Each certificate still has its own subject, SAN, serial and
  signature, and each Secret carries the key with its certificate, so the watcher checks every pair and
  Envoy loads every certificate as it would in a cluster; only the private key's bytes repeat. What
  remains per certificate is building and signing it (~0.2 ms: about 4 s for 20k on a loaded 2-core
  machine, measured with `python -m bench.certs 20000`).
- **Short validity** (a few days, starting an hour back for clock skew): long enough for any run, short
  enough that nothing a run leaves behind is worth keeping.

Each leaf is made once per `BenchCA` and cached by name, so a host's Secret can be built again (a retry,
a re-run of a phase) without signing again.

The test helpers under `tests/` (`tests/pusher/tls_certs.py`, `tests/e2e/conftest.py`,
`tests/watcher/helpers.py`) make a new key per leaf and are modules of their test packages, not
importable from here; this module is the benchmark's own.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import ssl
import time
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 3
TLS_SECRET_TYPE = "kubernetes.io/tls"


# Key usage and key identifiers: what OpenSSL's strict chain verification (Python 3.13's default
# context) asks of a CA and its leaves; older verifiers ignore them.
_CA_USAGE = x509.KeyUsage(
    digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
    key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
)  # fmt: skip


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class BenchCA:
    """A throwaway CA that the benchmark's probes trust alone, so a verified handshake proves that the
    gateway presented the certificate made for that host (or the platform wildcard)."""

    def __init__(self, name: str = "shardgate bench CA", days: int = VALID_DAYS) -> None:
        now = dt.datetime.now(dt.UTC)
        self._start, self._end = now - dt.timedelta(hours=1), now + dt.timedelta(days=days)
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._subject = _name(name)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self._subject)
            .issuer_name(self._subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._start)
            .not_valid_after(self._end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_CA_USAGE, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self._aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key())
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        self._leaf_public = leaf_key.public_key()
        self.key_pem = leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        self._serial = 1
        self._leaves: dict[str, bytes] = {}

    def leaf(self, name: str) -> bytes:
        """The certificate PEM for exactly `name` (one DNS SAN; `*.parent` for a wildcard), signed once."""
        pem = self._leaves.get(name)
        if pem is None:
            self._serial += 1
            cert = (
                x509.CertificateBuilder()
                .subject_name(_name(name))
                .issuer_name(self._subject)
                .public_key(self._leaf_public)
                .serial_number(self._serial)
                .not_valid_before(self._start)
                .not_valid_after(self._end)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(self._aki, critical=False)
                .sign(self._key, hashes.SHA256())
            )
            pem = self._leaves[name] = cert.public_bytes(serialization.Encoding.PEM)
        return pem

    def secret(self, namespace: str, name: str, host: str) -> dict[str, Any]:
        """A `kubernetes.io/tls` Secret for `host`: its certificate followed by the CA's (`tls.crt` holds
        a chain, as an ACME issuer's leaf + intermediate, so the handshake carries two certificates) and
        the shared leaf key."""
        return tls_secret(namespace, name, self.leaf(host) + self.pem, self.key_pem)

    def client_context(self) -> ssl.SSLContext:
        """Trusts this CA only and checks the host name against the SNI sent, as a browser would. One
        context serves every probe: each probe still opens a new connection with a full handshake (Python
        resumes a TLS session only when asked to, and the gateway has resumption off)."""
        ctx = ssl.create_default_context(cadata=self.pem.decode())
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx


def tls_secret(namespace: str, name: str, cert_pem: bytes, key_pem: bytes) -> dict[str, Any]:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": TLS_SECRET_TYPE,
        "metadata": {"name": name, "namespace": namespace},
        "data": {"tls.crt": b64(cert_pem), "tls.key": b64(key_pem)},
    }


def generation_seconds(count: int) -> float:
    """Seconds to make a CA and `count` custom-domain certificates, as the bulk load at N = 5 × count does."""
    t0 = time.perf_counter()
    ca = BenchCA()
    for i in range(count):
        ca.leaf(f"www.tenant-{i}.example")
    return time.perf_counter() - t0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="time the generation of custom-domain certificates")
    parser.add_argument("count", type=int, nargs="?", default=20_000)
    count = parser.parse_args().count
    seconds = generation_seconds(count)
    print(f"{count} certificates in {seconds:.2f} s ({seconds / max(count, 1) * 1e6:.0f} µs each)")
