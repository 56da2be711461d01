"""An Ingress's annotations (`model.IngressOptions`) as the pieces of an Envoy route.

The options arrive parsed and validated by the watcher, so their *types* are trusted. What Envoy would
refuse is still checked here, because one NACKed resource stops the whole push it travels in: a regex
Envoy's RE2 would not compile or would find too large, a rewrite naming a capture group the path does not
have, a redirect URL without a host. Such a route raises `RouteRejected` with the reason; the host's
other routes are compiled and the reason is reported in the fragment's meta.

The meaning of each annotation is in `docs/ANNOTATIONS.md`.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

from shardgate.merge import Route
from shardgate.model import IngressOptions, PathType
from shardgate.xds import filters, regex
from shardgate.xds.clusters import duration

# nginx `proxy_read_timeout` default, the time allowed between two reads from the backend; the listener's
# stream idle timeout (listeners.py) is set to it.
DEFAULT_READ_TIMEOUT_S = 60.0

ACME_CHALLENGE = "/.well-known/acme-challenge"  # never redirected to HTTPS (nginx's default exemption)

_REDIRECT_CODES = {
    301: rc.RedirectAction.MOVED_PERMANENTLY,
    302: rc.RedirectAction.FOUND,
    303: rc.RedirectAction.SEE_OTHER,
    307: rc.RedirectAction.TEMPORARY_REDIRECT,
    308: rc.RedirectAction.PERMANENT_REDIRECT,
}
_RE2_META = set(".^$*+?()[]{}|\\")


class RouteRejected(ValueError):
    """A route that would make Envoy refuse its scope; the message says why, for the Ingress's owner."""


def re2_escape(text: str) -> str:
    return "".join("\\" + c if c in _RE2_META else c for c in text)


def checked_regex(pattern: str) -> str:
    try:
        return regex.checked(pattern)
    except regex.RegexRefused as exc:
        raise RouteRejected(str(exc)) from exc


def _regex(pattern: str) -> regex_pb2.RegexMatcher:
    return regex_pb2.RegexMatcher(regex=checked_regex(pattern))


def uses_regex(route: Route) -> bool:
    """nginx `use-regex`: the path of a Prefix (or ImplementationSpecific) rule is a regex; Exact stays."""
    return route.options.use_regex and route.path_type is PathType.PREFIX


def envoy_path_regex(path: str) -> str:
    """The regex Envoy gets for a `use-regex` path, as nginx's `location ~* ^<path>`: anchored at the
    start (Envoy matches the whole path), case-insensitive, any rest of the path. Validation should bound
    *this* pattern's RE2 program size, not the bare path's: it is what Envoy compiles.
    """
    return f"(?i){path}.*"


def route_match(route: Route) -> rc.RouteMatch:
    """Exact is `path`; Prefix matches whole path elements (`/foo` matches `/foo/x`, not `/foobar`)."""
    if route.path_type is PathType.EXACT:
        return rc.RouteMatch(path=route.path)
    if uses_regex(route):
        return rc.RouteMatch(safe_regex=_regex(envoy_path_regex(route.path)))
    if route.path == "/":
        return rc.RouteMatch(prefix="/")
    return rc.RouteMatch(path_separated_prefix=route.path)


_CAPTURE = re.compile(r"\$(\d)|\$\{(\d)\}")


def rewrite(route: Route, action: rc.RouteAction) -> None:
    """`rewrite-target`: with use-regex as nginx (captures `$1` become RE2 `\\1`), else a prefix rewrite.

    Without a regex the matched prefix is replaced and the rest of the path kept: `/foo` → `/new` makes
    `/foo/bar` `/new/bar`; an Exact path is replaced whole.
    """
    target = route.options.rewrite_target
    if target is None:
        return
    if uses_regex(route):
        # The same pattern as the match: the route matched the whole path, so its leftmost match is all of it.
        pattern = envoy_path_regex(route.path)
        groups = regex.groups(checked_regex(pattern))
        wanted = [int(a or b) for a, b in _CAPTURE.findall(target)]
        if any(g > groups for g in wanted):
            raise RouteRejected(f"rewrite-target {target!r} names a group the path {route.path!r} lacks")
        substitution = _CAPTURE.sub(lambda m: "\\" + (m.group(1) or m.group(2)), target.replace("\\", "\\\\"))
        action.regex_rewrite.CopyFrom(
            regex_pb2.RegexMatchAndSubstitute(pattern=_regex(pattern), substitution=substitution)
        )
    elif route.path_type is PathType.EXACT:
        action.prefix_rewrite = target
    elif route.path == "/":
        if target != "/":
            action.prefix_rewrite = target.rstrip("/") + "/"
    elif target.rstrip("/"):
        action.prefix_rewrite = target.rstrip("/")
    else:
        # To the root: `/foo` and `/foo/` become `/`, `/foo/bar` becomes `/bar`.
        action.regex_rewrite.CopyFrom(
            regex_pb2.RegexMatchAndSubstitute(
                pattern=_regex(f"^{re2_escape(route.path)}/?"), substitution="/"
            )
        )


def timeouts(options: IngressOptions, action: rc.RouteAction) -> None:
    """No limit on the whole response (Envoy's default 15 s would cut long downloads and streams that
    work behind nginx); idleness is bounded instead, as nginx bounds the time between two reads.

    Unannotated routes rely on the connection manager's stream idle timeout (DEFAULT_READ_TIMEOUT_S,
    nginx's `proxy_read_timeout` default) and carry nothing more: a retry policy costs ~0.6 KB of Envoy
    memory per route (measured), too much to spend on every route of 100k hosts.
    `proxy-read-timeout`: `per_try_idle_timeout` of an attempt (no retries), 504 when it passes.
    `proxy-send-timeout` has no exact Envoy twin: the stream's idle timeout is raised to cover both, so
    neither side waiting within its own limit is cut by it.
    """
    action.timeout.CopyFrom(duration_pb2.Duration())  # 0: no limit on the whole response
    read = options.read_timeout_s if options.read_timeout_s and options.read_timeout_s > 0 else None
    send = options.send_timeout_s if options.send_timeout_s and options.send_timeout_s > 0 else None
    if read is not None:
        action.retry_policy.CopyFrom(
            rc.RetryPolicy(num_retries=wrappers_pb2.UInt32Value(value=0), per_try_idle_timeout=duration(read))
        )
    if read is not None or send is not None:
        action.idle_timeout.CopyFrom(
            duration(max(read or DEFAULT_READ_TIMEOUT_S, send or DEFAULT_READ_TIMEOUT_S))
        )


def wants_ssl_redirect(route: Route, host_has_tls: bool) -> bool:
    """nginx: redirect HTTP to HTTPS when the host has TLS (unless ssl-redirect=false), or when forced."""
    if route.path.startswith(ACME_CHALLENGE):
        return False
    return route.options.force_ssl_redirect or (host_has_tls and route.options.ssl_redirect is not False)


def ssl_redirect() -> rc.RedirectAction:
    return rc.RedirectAction(https_redirect=True, response_code=rc.RedirectAction.PERMANENT_REDIRECT)


def scheme_is_http() -> rc.HeaderMatcher:
    """`:scheme` is overwritten by the connection manager with the listener's own, so it can be trusted."""
    return rc.HeaderMatcher(name=":scheme", string_match=string_pb2.StringMatcher(exact="http"))


def permanent_redirect(url: str, code: int) -> rc.RedirectAction:
    """nginx `return <code> <url>`: to exactly that URL (the request's path and query are not kept)."""
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:
        raise RouteRejected(f"permanent-redirect {url!r}: {exc}") from exc
    if parts.scheme not in ("http", "https") or not host:
        raise RouteRejected(f"permanent-redirect {url!r} is not an absolute http(s) URL")
    if code not in _REDIRECT_CODES:
        raise RouteRejected(f"permanent-redirect-code {code} is not one of {sorted(_REDIRECT_CODES)}")
    action = rc.RedirectAction(
        scheme_redirect=parts.scheme,
        host_redirect=f"[{host}]" if ":" in host else host,
        path_redirect=(parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
        strip_query=not parts.query,
        response_code=_REDIRECT_CODES[code],
    )
    if port is not None:
        action.port_redirect = port
    return action


def app_root_redirect(path: str) -> rc.Route:
    """nginx `app-root`: a request for exactly `/` is sent (302) to the application's root."""
    if not path.startswith("/"):
        raise RouteRejected(f"app-root {path!r} is not a path")
    return rc.Route(
        match=rc.RouteMatch(path="/"),
        redirect=rc.RedirectAction(path_redirect=path, response_code=rc.RedirectAction.FOUND),
    )


def filter_configs(options: IngressOptions) -> dict[str, any_pb2.Any]:
    """Per-route settings of the shared filters: the allow-list and the CORS policy."""
    out: dict[str, any_pb2.Any] = {}
    if options.whitelist_source_range:
        out[filters.RBAC_FILTER] = filters.allow_only(options.whitelist_source_range)
    if options.cors is not None:
        try:
            out[filters.CORS_FILTER] = filters.cors_policy(options.cors)
        except regex.RegexRefused as exc:
            raise RouteRejected(f"cors-allow-origin: {exc}") from exc
    return out
