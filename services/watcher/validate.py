"""Validators for every piece of user text that can reach Envoy: hosts, paths, names, ports, regexes.

Pure functions that return `None` when a value is acceptable and otherwise the reason it is not, worded
for the user who wrote it (it ends up in a Kubernetes Event). They are stricter than Envoy on purpose:
whatever passes here must never make Envoy NACK a resource, and nothing a tenant writes is copied into
the gateway's configuration unchecked.

- Hosts: RFC 1123 names (lower-cased by the caller), at most 253 characters, labels of 1–63 of
  `[a-z0-9-]` not starting or ending with `-`, with one optional leading `*.` label. IP addresses (and
  any name whose last label is all digits, which no top-level domain is) are refused: an Ingress host is
  a name, and the Kubernetes API refuses IPs too.
- Paths: absolute, printable ASCII without spaces, `?` or `#` (Envoy matches the path without the query,
  so such a rule could never match), bounded length; for Exact and Prefix also the sequences the
  Kubernetes API refuses (`//`, `/./`, `/../`, `%2f`, and a `/.` or `/..` suffix).
- Regex paths (`use-regex`): compiled with RE2 — the engine Envoy uses — and refused above a program size
  bound, measured on the pattern Envoy will get (`(?i)<path>.*`) the way Envoy measures it: what Envoy's
  `re2.max_program_size.error_level` (default 100) limits.
- Names: Service names are DNS-1035 labels, Secret names DNS-1123 subdomains, port names IANA service
  names, port numbers 1–65535.
"""

from __future__ import annotations

import re
from typing import Any

import re2

_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_HOST_RE = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*")
_DNS1035_RE = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")
_DNS1123_LABEL_RE = re.compile(_LABEL)
_DNS1123_SUBDOMAIN_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_PORT_NAME_RE = re.compile(r"[a-z0-9](?:-?[a-z0-9])*")
_PATH_CHARS_RE = re.compile(r"[!-~]*")  # printable ASCII, no space
_BAD_PATH_SEQUENCES = ("//", "/./", "/../", "%2f", "%2F")
_BAD_PATH_SUFFIXES = ("/..", "/.")

DEFAULT_MAX_PATH_LENGTH = 1024
DEFAULT_REGEX_PROGRAM_SIZE = 100  # Envoy's default re2.max_program_size.error_level


def host_error(host: Any) -> str | None:
    """Why `host` (already lower-cased) is not a valid Ingress host, or None."""
    if not isinstance(host, str) or not host:
        return "host must be a non-empty string"
    if len(host) > 253:
        return f"host {host[:64]!r}... is longer than 253 characters"
    if not _HOST_RE.fullmatch(host):
        return (
            f"invalid host {host!r}: must be an RFC 1123 name (labels of a-z, 0-9 and '-'), "
            "optionally starting with one '*.' label"
        )
    if _is_ip_like(host.removeprefix("*.")):
        return f"invalid host {host!r}: an IP address is not a host name"
    return None


def _is_ip_like(host: str) -> bool:
    """After the RFC 1123 check (no ':', so no IPv6): an IPv4 address, or any name with an all-digit last
    label, which no top-level domain has (and which `inet_aton` could read as an address)."""
    return host.rsplit(".", 1)[-1].isdigit()


def is_wildcard(host: str) -> bool:
    return host.startswith("*.")


def path_error(path: Any, exact_or_prefix: bool, max_length: int = DEFAULT_MAX_PATH_LENGTH) -> str | None:
    """Why `path` is not a valid literal path rule, or None."""
    basic = _path_basics(path, max_length)
    if basic is not None:
        return basic
    if exact_or_prefix:
        for seq in _BAD_PATH_SEQUENCES:
            if seq in path:
                return f"path {path!r} must not contain {seq!r}"
        for suffix in _BAD_PATH_SUFFIXES:
            if path.endswith(suffix):
                return f"path {path!r} must not end with {suffix!r}"
    return None


def _path_basics(path: Any, max_length: int) -> str | None:
    if not isinstance(path, str) or not path.startswith("/"):
        return f"path {path!r} must start with '/'"
    if len(path) > max_length:
        return f"path {path[:64]!r}... is longer than {max_length} characters"
    if not _PATH_CHARS_RE.fullmatch(path):
        return f"path {path!r} may only contain printable ASCII without spaces (percent-encode the rest)"
    if "?" in path or "#" in path:
        return f"path {path!r} must not contain '?' or '#': paths are matched without the query"
    return None


def regex_error(
    pattern: Any,
    max_length: int = DEFAULT_MAX_PATH_LENGTH,
    max_program_size: int = DEFAULT_REGEX_PROGRAM_SIZE,
) -> tuple[str | None, int]:
    """Why `pattern` is not an acceptable regex path (or None), and its number of capture groups."""
    if not isinstance(pattern, str) or not pattern.startswith("/"):
        return f"regex path {pattern!r} must start with '/'", 0
    if len(pattern) > max_length:
        return f"regex path {pattern[:64]!r}... is longer than {max_length} characters", 0
    if not _PATH_CHARS_RE.fullmatch(pattern):
        return f"regex path {pattern!r} may only contain printable ASCII without spaces", 0
    options = re2.Options()
    options.log_errors = False
    options.max_mem = 1 << 20  # compile in a bounded amount of memory, whatever the pattern
    try:
        compiled = re2.compile(pattern, options)
        size = envoy_program_size(envoy_path_regex(pattern))
    except re2.error as exc:
        detail = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
        return f"regex path {pattern!r} does not compile as RE2: {detail}", 0
    if size > max_program_size:
        return (
            f"regex path {pattern!r} is too complex for the gateway (RE2 program size {size} > "
            f"{max_program_size})",
            0,
        )
    return None, int(compiled.groups)


def envoy_path_regex(path: str) -> str:
    """The pattern Envoy gets for a `use-regex` path (`shardgate.xds.options.envoy_path_regex`, nginx's
    `location ~* ^<path>`): its size, not the bare path's, is what Envoy bounds."""
    return f"(?i){path}.*"


def envoy_program_size(pattern: str) -> int:
    """The RE2 program size Envoy computes: the pattern compiled as Latin-1 bytes, as measured against
    Envoy 1.40 in `shardgate.xds.regex` (not imported here: it would load every Envoy proto into the
    watcher; a test keeps the two equal)."""
    options = re2.Options()
    options.encoding = re2.Options.Encoding.LATIN1
    options.log_errors = False
    options.max_mem = 1 << 20
    return int(re2.compile(pattern.encode("latin-1"), options).programsize)


def service_name_error(name: Any) -> str | None:
    if not isinstance(name, str) or len(name) > 63 or not _DNS1035_RE.fullmatch(name):
        return f"invalid service name {name!r}: must be a DNS-1035 label"
    return None


def secret_name_error(name: Any) -> str | None:
    if not isinstance(name, str) or len(name) > 253 or not _DNS1123_SUBDOMAIN_RE.fullmatch(name):
        return f"invalid secret name {name!r}: must be a DNS-1123 subdomain"
    return None


def object_key_error(namespace: Any, name: Any) -> str | None:
    """Namespace and name as the API server allows them; also what keeps our keys unambiguous."""
    if not isinstance(namespace, str) or len(namespace) > 63 or not _DNS1123_LABEL_RE.fullmatch(namespace):
        return f"invalid namespace {namespace!r}"
    if not isinstance(name, str) or len(name) > 253 or not _DNS1123_SUBDOMAIN_RE.fullmatch(name):
        return f"invalid name {name!r}"
    return None


def port_number_error(port: Any) -> str | None:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        return f"port {port!r} is not a number in 1-65535"
    return None


def port_name_error(name: Any) -> str | None:
    """IANA service names: 1–15 of a-z, 0-9 and '-', at least one letter, no '--', no '-' at the ends."""
    if (
        not isinstance(name, str)
        or not 1 <= len(name) <= 15
        or not _PORT_NAME_RE.fullmatch(name)
        or not any(c.isalpha() for c in name)
    ):
        return f"invalid port name {name!r}: must be an IANA service name (e.g. 'http')"
    return None
