"""Checking a `kubernetes.io/tls` Secret's certificate and key before any of it reaches Envoy.

Envoy refuses a bad certificate by NACKing the whole SDS response, and a NACK keeps it on its last good
configuration — for every secret in that response. So the watcher checks each Secret itself and sends
either a usable certificate or an explicit error (`TlsCertificate.error`, no PEM), which the compiler
turns into "no certificate for this secret" and a reason, while every other secret flows on.

Checked, with `cryptography`: the chain parses as PEM (leaf first); the key parses (unencrypted); the key
is the leaf's key; the key type is one Envoy serves (RSA of 2048–8192 bits, ECDSA on P-256/P-384/P-521);
the leaf is not expired at the time the watcher observed the Secret (the caller passes that time:
this module has no clock). The leaf's DNS SANs, lower-cased, become `names`, which the control plane
uses to answer SNI lookups, wildcard certificates included.

A usable certificate's PEM is not kept by the watcher once published; when it expires, `expired_error`
words the error from its notAfter alone, as checking the PEM again would.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from shardgate.model import TlsCertificate

_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_ns(when: datetime) -> int:
    """`when` in epoch nanoseconds, exactly (no float on the way: `not_after` gets it back)."""
    return (when - _EPOCH) // timedelta(microseconds=1) * 1000


def not_after(expires_ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=expires_ns // 1000)


def expired_error(expires: datetime) -> str:
    """The error of a certificate checked after its notAfter."""
    return f"certificate expired at {expires.isoformat()}"


def check_certificate(cert_pem: bytes, key_pem: bytes, now: datetime) -> TlsCertificate:
    """The Secret's certificate as the compiler should see it: usable, or an error and no PEM."""
    return check_certificate_expiry(cert_pem, key_pem, now)[0]


def check_certificate_expiry(
    cert_pem: bytes, key_pem: bytes, now: datetime
) -> tuple[TlsCertificate, datetime | None]:
    """`check_certificate`, and when a usable certificate expires (to check it again then)."""
    error, names = _check(cert_pem, key_pem, now)
    if error is not None:
        return TlsCertificate(b"", b"", error=error), None
    return TlsCertificate(cert_pem, key_pem, names=names), x509.load_pem_x509_certificates(cert_pem)[
        0
    ].not_valid_after_utc


def _check(cert_pem: bytes, key_pem: bytes, now: datetime) -> tuple[str | None, tuple[str, ...]]:
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        return f"tls.crt is not a PEM certificate chain ({exc})", ()
    leaf = chain[0]
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        return f"tls.key is not an unencrypted PEM private key ({type(exc).__name__})", ()
    except Exception as exc:  # cryptography raises UnsupportedAlgorithm for unknown key types
        return f"tls.key cannot be loaded ({type(exc).__name__})", ()
    if isinstance(key, rsa.RSAPrivateKey):
        if not 2048 <= key.key_size <= 8192:
            return f"RSA key of {key.key_size} bits: the gateway serves 2048-8192", ()
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, _CURVES):
            return f"ECDSA key on {key.curve.name}: the gateway serves P-256, P-384 and P-521", ()
    else:
        return f"{type(key).__name__.removeprefix('_')} keys are not served: use RSA or ECDSA", ()
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        return "tls.key does not match the certificate in tls.crt", ()
    if now > leaf.not_valid_after_utc:
        return expired_error(leaf.not_valid_after_utc), ()
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    return None, tuple(sorted({n.lower().rstrip(".") for n in names}))
