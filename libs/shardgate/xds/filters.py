"""The HTTP filter chain every gateway listener shares, and the per-route configs that steer it.

The chain is fixed: nothing in it names a host, so adding a host never changes a listener. What a host
or a route needs differently (an allow-list, a CORS policy, the host fallback) is said in that host's
scope with `typed_per_filter_config`, keyed by the filter names below.

Every filter here is *enabled* in the chain and told per route what to do. Envoy's "disabled by default"
(`HttpFilter.disabled`) is decided when the filter chain is built, from the route the request has before
any filter ran — a request whose host first misses (`Shop.Example.com`) and is found by the fallback
scripts would then skip a filter its route enables: an allow-list bypassed by a capital letter (seen in
Envoy 1.40 with a default-disabled RBAC filter: `out.example.com` 403, `OUT.Example.com` and
`out.example.com.` 200). The filters below look at the route when they run instead.

Order: the host fallback settles the route first; RBAC (the `whitelist-source-range` allow-list) answers
403 before anything else is done for a refused client; CORS answers preflights; the router forwards.
"""

from __future__ import annotations

import ipaddress
import re

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.rbac.v3 import rbac_pb2 as rbac_config
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import any_pb2, wrappers_pb2
from google.protobuf.message import Message

from shardgate.model import Cors
from shardgate.xds import regex, wildcard

RBAC_FILTER = "envoy.filters.http.rbac"
CORS_FILTER = "envoy.filters.http.cors"
ROUTER_FILTER = "envoy.filters.http.router"


def pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _lua(script: str, named: dict[str, str] | None = None) -> lua_pb2.Lua:
    return lua_pb2.Lua(
        default_source_code=base_pb2.DataSource(inline_string=script),
        source_codes={k: base_pb2.DataSource(inline_string=v) for k, v in (named or {}).items()},
        # The scripts clear the route cache themselves, exactly when they changed the scope key.
        clear_route_cache=wrappers_pb2.BoolValue(value=False),
    )


def http_filters() -> list[hcm.HttpFilter]:
    """The shared chain, in order."""
    return [
        *(
            hcm.HttpFilter(
                name=wildcard.FALLBACK_FILTER,
                typed_config=pack(_lua(script, {wildcard.CATCH_ALL_SCRIPT: wildcard.CATCH_ALL_LUA})),
            )
            for script in (wildcard.NORMALIZE_LUA, wildcard.WILDCARD_LUA, wildcard.CATCH_ALL_LUA)
        ),
        # No rules: allow everything, unless a route says otherwise (RBACPerRoute).
        hcm.HttpFilter(name=RBAC_FILTER, typed_config=pack(rbac_pb2.RBAC())),
        # No policy: does nothing, unless a route carries a CorsPolicy.
        hcm.HttpFilter(name=CORS_FILTER, typed_config=pack(cors_pb2.Cors())),
        hcm.HttpFilter(name=ROUTER_FILTER, typed_config=pack(router_pb2.Router())),
    ]


_FALLBACK_OFF = pack(lua_pb2.LuaPerRoute(disabled=True))
_TO_CATCH_ALL = pack(lua_pb2.LuaPerRoute(name=wildcard.CATCH_ALL_SCRIPT))


def scope_filter_configs() -> dict[str, any_pb2.Any]:
    """For every scope's virtual host: a request that has a route needs no host fallback."""
    return {wildcard.FALLBACK_FILTER: _FALLBACK_OFF}


def catch_all_config() -> dict[str, any_pb2.Any]:
    """For a host scope's last route: a path the host does not serve goes to the catch-all scope."""
    return {wildcard.FALLBACK_FILTER: _TO_CATCH_ALL}


def _cidr(text: str) -> address_pb2.CidrRange | None:
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    return address_pb2.CidrRange(
        address_prefix=str(net.network_address), prefix_len=wrappers_pb2.UInt32Value(value=net.prefixlen)
    )


def allow_only(cidrs: tuple[str, ...]) -> any_pb2.Any:
    """RBAC for one route: only clients whose *connection* comes from one of the CIDRs; others get 403.

    `direct_remote_ip` is the peer of the TCP connection, which a client cannot forge with
    `X-Forwarded-For`. An entry that does not parse (validated upstream; never expected) allows nothing.
    """
    ranges = [r for r in (_cidr(c) for c in cidrs) if r is not None]
    principals = [rbac_config.Principal(direct_remote_ip=r) for r in ranges]
    policy = rbac_config.Policy(
        permissions=[rbac_config.Permission(any=True)],
        principals=principals or [rbac_config.Principal(not_id=rbac_config.Principal(any=True))],
    )
    rules = rbac_config.RBAC(action=rbac_config.RBAC.ALLOW, policies={"whitelist-source-range": policy})
    return pack(rbac_pb2.RBACPerRoute(rbac=rbac_pb2.RBAC(rules=rules)))


def origin_matcher(origin: str) -> string_pb2.StringMatcher:
    """An allowed origin as nginx matches it: case-insensitive; `https://*.example.com` is one label.

    The wildcard form becomes an RE2 pattern of escaped literals (its program grows with the domain's
    length); a pattern Envoy would refuse raises `regex.RegexRefused`.
    """
    scheme, sep, rest = origin.partition("://")
    if not sep or not rest.startswith("*."):
        return string_pb2.StringMatcher(exact=origin, ignore_case=True)
    host, _, port = rest[2:].partition(":")
    pattern = "(?i)" + re.escape(f"{scheme}://") + r"[^./:]+\." + re.escape(host)
    if port:
        pattern += re.escape(f":{port}")
    # Envoy refuses `ignore_case` on a regex matcher: the pattern says it instead.
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=regex.checked(pattern)))


def cors_policy(cors: Cors) -> any_pb2.Any:
    """nginx `enable-cors`: origins as `origin_matcher` says (`*` allows any origin)."""
    return pack(
        cors_pb2.CorsPolicy(
            allow_origin_string_match=[origin_matcher(o) for o in cors.allow_origins],
            allow_methods=cors.allow_methods,
            allow_headers=cors.allow_headers,
            expose_headers=cors.expose_headers,
            max_age=str(cors.max_age_s),
            allow_credentials=wrappers_pb2.BoolValue(value=cors.allow_credentials),
        )
    )
