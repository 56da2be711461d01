"""nginx-compatible annotations → `model.IngressOptions`, each value parsed and checked.

Pure. `parse_annotations` returns the options and a list of errors; any error rejects the whole Ingress
(annotations apply to every host of the Ingress, so there is no smaller unit to reject). The rules:

- Supported (`nginx.ingress.kubernetes.io/<name>`, the table in docs/ARCHITECTURE.md): each value is
  parsed strictly (booleans as Go's `strconv.ParseBool` reads them, integers as decimal digits, CIDRs
  normalized, URLs and header names checked character by character) and bounded.
- Refused, with a reason: every `*-snippet` / `*-snippets` annotation under any prefix, and the nginx
  annotations whose value ingress-nginx pastes into its configuration as raw text. shardgate has no
  field that could carry free text into Envoy, so these could not be honoured safely anyway; refusing
  them (instead of ignoring them) tells the user their configuration is not in effect.
- Refused too: access-control annotations shardgate does not implement (`auth-*`,
  `denylist-source-range`, `satisfy`). Ignoring them would serve unprotected what the user meant to
  protect: fail closed.
- Any other nginx annotation is not supported and is ignored; the caller logs it (see `ignored`).
- Every value we read (nginx and `shardgate.io/` prefixes) is bounded by `max_value_bytes`; other
  prefixes (e.g. kubectl's last-applied-configuration) are none of our business and are not bounded.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shardgate.model import Canary, Cors, IngressOptions

from .validate import DEFAULT_MAX_PATH_LENGTH

NGINX = "nginx.ingress.kubernetes.io/"
SHARDGATE = "shardgate.io/"
HOST_SHARING = f"{SHARDGATE}allow-host-sharing-with"

_RAW_TEXT = {"modsecurity-transaction-id", "lua-resty-waf-extra-rules", "auth-tls-match-cn"}
_FAIL_CLOSED_PREFIXES = ("auth-",)
_FAIL_CLOSED = {"denylist-source-range", "satisfy"}
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}
_BACKEND_PROTOCOLS = ("HTTP", "HTTPS", "GRPC", "GRPCS")
_REDIRECT_CODES = (301, 302, 303, 307, 308)  # the codes Envoy's RedirectAction can send
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}")  # an RFC 9110 token (header names, methods)
_HEADER_VALUE_RE = re.compile(r"[!-~]{1,256}")
_URL_RE = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+(?:/[!-~]*)?")
_ORIGIN_RE = re.compile(r"https?://(?:\*\.)?[a-z0-9.\-]+(?::[0-9]{1,5})?")
_CAPTURE_RE = re.compile(r"\$(\d+)")
_NAMESPACE_RE = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")

DEFAULT_MAX_VALUE_BYTES = 4096
DEFAULT_MAX_TIMEOUT_S = 3600
MAX_CORS_AGE_S = 365 * 24 * 3600
MAX_WEIGHT_TOTAL = 1_000_000


@dataclass(slots=True)
class Parsed:
    options: IngressOptions = field(default_factory=IngressOptions)
    errors: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # unsupported nginx annotations, for a log line
    sharing: frozenset[str] = frozenset()  # namespaces allowed to share this Ingress's hosts


def parse_annotations(
    annotations: Any,
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    max_timeout_s: int = DEFAULT_MAX_TIMEOUT_S,
    max_path_length: int = DEFAULT_MAX_PATH_LENGTH,
) -> Parsed:
    out = Parsed()
    if annotations is None:
        return out
    if not isinstance(annotations, dict):
        out.errors.append("metadata.annotations is not an object")
        return out
    values: dict[str, str] = {}
    for key, value in sorted(annotations.items()):
        if not isinstance(key, str):
            continue
        name = key.rpartition("/")[2]
        if name.endswith(("-snippet", "-snippets")):
            out.errors.append(f"annotation {key} is refused: snippets would put user text into the gateway")
            continue
        if not key.startswith((NGINX, SHARDGATE)):
            continue
        if not isinstance(value, str):
            out.errors.append(f"annotation {key}: value is not a string")
            continue
        if len(value.encode()) > max_value_bytes:
            out.errors.append(f"annotation {key}: value is longer than {max_value_bytes} bytes")
            continue
        if key.startswith(SHARDGATE):
            if key == HOST_SHARING:
                out.sharing = _namespaces(value, key, out.errors)
            else:
                out.ignored.append(key)
            continue
        if name in _RAW_TEXT:
            out.errors.append(f"annotation {key} is refused: its value would be copied into the gateway")
        elif name.startswith(_FAIL_CLOSED_PREFIXES) or name in _FAIL_CLOSED:
            out.errors.append(
                f"annotation {key} is not supported and restricts access: refusing the Ingress rather "
                "than serving it unprotected"
            )
        elif name in _PARSERS:
            values[name] = value
        else:
            out.ignored.append(key)
    if out.errors:
        return out
    reader = _Reader(values, out.errors, max_timeout_s, max_path_length)
    options = {name: fn(reader) for name, fn in _FIELDS.items()}
    if not out.errors:
        out.options = IngressOptions(**{k: v for k, v in options.items() if v is not _ABSENT})
    return out


_ABSENT: Any = object()


class _Reader:
    """Typed access to the supported annotations; every failure appends a reason."""

    def __init__(self, values: Mapping[str, str], errors: list[str], max_timeout_s: int, max_path: int):
        self.values = values
        self.errors = errors
        self.max_timeout_s = max_timeout_s
        self.max_path = max_path

    def has(self, name: str) -> bool:
        return name in self.values

    def _fail(self, name: str, value: str, why: str) -> Any:
        self.errors.append(f"annotation {NGINX}{name}: {value[:100]!r} {why}")
        return _ABSENT

    def boolean(self, name: str) -> Any:
        if name not in self.values:
            return _ABSENT
        value = self.values[name].strip()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        return self._fail(name, value, 'is not a boolean ("true" or "false")')

    def integer(self, name: str, low: int, high: int) -> Any:
        if name not in self.values:
            return _ABSENT
        value = self.values[name].strip()
        if not value.isascii() or not value.isdigit() or len(value) > 10 or not low <= int(value) <= high:
            return self._fail(name, value, f"is not an integer in {low}-{high}")
        return int(value)

    def choice(self, name: str, allowed: tuple[str, ...]) -> Any:
        if name not in self.values:
            return _ABSENT
        value = self.values[name].strip().upper()
        if value not in allowed:
            return self._fail(name, value, f"is not one of {', '.join(allowed)}")
        return value

    def path(self, name: str, captures: bool) -> Any:
        if name not in self.values:
            return _ABSENT
        value = self.values[name].strip()
        if not value.startswith("/") or len(value) > self.max_path or not re.fullmatch(r"[!-~]+", value):
            return self._fail(name, value, "is not a path (starts with '/', printable ASCII, no spaces)")
        if "#" in value or (not captures and "$" in value):
            return self._fail(name, value, "must not contain '#'" + ("" if captures else " or '$'"))
        if captures and any(not 1 <= int(n) <= 9 for n in _CAPTURE_RE.findall(value)):
            return self._fail(name, value, "may only refer to capture groups $1-$9")
        return value

    def url(self, name: str) -> Any:
        if name not in self.values:
            return _ABSENT
        value = self.values[name].strip()
        if len(value) > self.max_path or not _URL_RE.fullmatch(value):
            return self._fail(name, value, "is not an absolute http(s) URL in printable ASCII")
        return value

    def token(self, name: str) -> Any:
        if name not in self.values:
            return _ABSENT
        value = self.values[name].strip()
        if not _TOKEN_RE.fullmatch(value):
            return self._fail(name, value, "is not a valid header name")
        return value.lower()

    def header_value(self, name: str) -> Any:
        if name not in self.values:
            return _ABSENT
        value = self.values[name].strip()
        if not _HEADER_VALUE_RE.fullmatch(value):
            return self._fail(name, value, "must be 1-256 printable ASCII characters without spaces")
        return value

    def tokens(self, name: str, upper: bool = False) -> Any:
        """A comma-separated list of tokens, normalized to `a, b, c`."""
        if name not in self.values:
            return _ABSENT
        items = [v.strip() for v in self.values[name].split(",") if v.strip()]
        if not items:
            return self._fail(name, self.values[name], "is empty")
        for item in items:
            if not _TOKEN_RE.fullmatch(item):
                return self._fail(name, item, "is not a valid token")
        return ", ".join(i.upper() if upper else i for i in items)

    def origins(self, name: str) -> Any:
        if name not in self.values:
            return _ABSENT
        items = [v.strip() for v in re.split(r"[,\s]+", self.values[name]) if v.strip()]
        if not items:
            return self._fail(name, self.values[name], "is empty")
        for item in items:
            if item != "*" and not _ORIGIN_RE.fullmatch(item.lower()):
                return self._fail(name, item, "is not '*' or an origin like https://example.com[:port]")
        return tuple("*" if i == "*" else i.lower() for i in items)

    def cidrs(self, name: str) -> Any:
        if name not in self.values:
            return _ABSENT
        items = [v.strip() for v in self.values[name].split(",") if v.strip()]
        if not items:
            return self._fail(name, self.values[name], "names no CIDR (an empty allow-list is ambiguous)")
        out: list[str] = []
        for item in items:
            try:
                network = ipaddress.ip_network(item, strict=False)
            except ValueError:
                return self._fail(name, item, "is not an IP address or CIDR")
            if str(network) not in out:
                out.append(str(network))
        return tuple(out)


def _namespaces(value: str, key: str, errors: list[str]) -> frozenset[str]:
    items = {v.strip() for v in value.split(",") if v.strip()}
    bad = sorted(i for i in items if not _NAMESPACE_RE.fullmatch(i) or len(i) > 63)
    if bad:
        errors.append(f"annotation {key}: {', '.join(bad)[:100]} are not namespace names")
        return frozenset()
    return frozenset(items)


def _canary(r: _Reader) -> Any:
    enabled = r.boolean("canary")
    total = r.integer("canary-weight-total", 1, MAX_WEIGHT_TOTAL)
    total = 100 if total is _ABSENT else total
    weight = r.integer("canary-weight", 0, total)
    header = r.token("canary-by-header")
    value = r.header_value("canary-by-header-value")
    if enabled is not True:
        return _ABSENT
    if value is not _ABSENT and header is _ABSENT:
        r.errors.append(f"annotation {NGINX}canary-by-header-value needs {NGINX}canary-by-header")
        return _ABSENT
    return Canary(
        weight=None if weight is _ABSENT else weight,
        weight_total=total,
        header=None if header is _ABSENT else header,
        header_value=None if value is _ABSENT else value,
    )


def _cors(r: _Reader) -> Any:
    enabled = r.boolean("enable-cors")
    values: dict[str, Any] = {
        "allow_origins": r.origins("cors-allow-origin"),
        "allow_methods": r.tokens("cors-allow-methods", upper=True),
        "allow_headers": r.tokens("cors-allow-headers"),
        "expose_headers": r.tokens("cors-expose-headers"),
        "allow_credentials": r.boolean("cors-allow-credentials"),
        "max_age_s": r.integer("cors-max-age", 0, MAX_CORS_AGE_S),
    }
    if enabled is not True:
        return _ABSENT
    if isinstance(values["allow_headers"], str):
        values["allow_headers"] = values["allow_headers"].replace(", ", ",")
    if isinstance(values["expose_headers"], str):
        values["expose_headers"] = values["expose_headers"].replace(", ", ",")
    return Cors(**{k: v for k, v in values.items() if v is not _ABSENT})


def _timeout(name: str) -> Callable[[_Reader], Any]:
    def read(r: _Reader) -> Any:
        value = r.integer(name, 1, r.max_timeout_s)
        return value if value is _ABSENT else float(value)

    return read


def _redirect_code(r: _Reader) -> Any:
    code = r.integer("permanent-redirect-code", 300, 399)
    if code is not _ABSENT and code not in _REDIRECT_CODES:
        r.errors.append(f"annotation {NGINX}permanent-redirect-code: {code} is not one of {_REDIRECT_CODES}")
        return _ABSENT
    return code


_FIELDS: dict[str, Callable[[_Reader], Any]] = {
    "rewrite_target": lambda r: r.path("rewrite-target", captures=True),
    "use_regex": lambda r: r.boolean("use-regex"),
    "ssl_redirect": lambda r: r.boolean("ssl-redirect"),
    "force_ssl_redirect": lambda r: r.boolean("force-ssl-redirect"),
    "canary": _canary,
    "backend_protocol": lambda r: r.choice("backend-protocol", _BACKEND_PROTOCOLS),
    "connect_timeout_s": _timeout("proxy-connect-timeout"),
    "read_timeout_s": _timeout("proxy-read-timeout"),
    "send_timeout_s": _timeout("proxy-send-timeout"),
    "whitelist_source_range": lambda r: r.cidrs("whitelist-source-range"),
    "cors": _cors,
    "permanent_redirect": lambda r: r.url("permanent-redirect"),
    "permanent_redirect_code": _redirect_code,
    "app_root": lambda r: r.path("app-root", captures=False),
}

_PARSERS = frozenset(
    {
        "rewrite-target", "use-regex", "ssl-redirect", "force-ssl-redirect", "canary", "canary-weight",
        "canary-weight-total", "canary-by-header", "canary-by-header-value", "backend-protocol",
        "proxy-connect-timeout", "proxy-read-timeout", "proxy-send-timeout", "whitelist-source-range",
        "enable-cors", "cors-allow-origin", "cors-allow-methods", "cors-allow-headers",
        "cors-allow-credentials", "cors-expose-headers", "cors-max-age", "permanent-redirect",
        "permanent-redirect-code", "app-root",
    }
)  # fmt: skip
"""The supported annotation names (under `nginx.ingress.kubernetes.io/`)."""


def capture_refs(rewrite_target: str) -> int:
    """The highest `$N` a rewrite target refers to (0 when none)."""
    return max((int(n) for n in _CAPTURE_RE.findall(rewrite_target)), default=0)
