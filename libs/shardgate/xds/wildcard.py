"""How a request finds its host's scope: exact, then one-label wildcard, then the catch-all.

Scoped routes select a scope by an exact string key and have no fallback scope (notes/facts.md), so the
fallback is built from filters, in the design measured in Envoy 1.40:

1. An *early header mutation* (it runs before Envoy picks a route or builds the filter chain) copies
   `:authority` into the internal header `x-shardgate-scope`, overwriting whatever the client sent; the
   scope key is that header up to a `:` (the port). Browsers send lower-case hosts, so almost every
   request is a hit here and no script runs.
2. Three small Lua filters, all named FALLBACK_FILTER and *disabled in every scope's virtual host*
   (`LuaPerRoute.disabled`, checked when each filter runs, against the route the request has at that
   moment — not when the filter chain is built), so each runs only while the request still has no route:
   - `normalize`: lower-case, strip the port and one trailing dot; if that changed the key, retry;
   - `wildcard`: `bar.foo.com` → `*.foo.com` (exactly one extra label: `a.bar.foo.com` becomes
     `*.bar.foo.com`, which a `*.foo.com` scope does not answer), retry;
   - `catch_all`: `*` — the scope of host-less rules and `spec.defaultBackend`.
   Each retry rewrites the header and clears the route cache, which makes Envoy select the scope again.
3. A path that no route of a host's scope matches also goes to the catch-all: the scope ends with a
   404 route that enables the `catch_all` script by name (the Kubernetes meaning of a default backend:
   "requests that don't match any rule"); the first fallback filter runs it, and the others then find the
   catch-all's route and stay off. A wildcard scope never takes over a path an exact host lacks.

One Lua filter cannot do the whole walk: a script sees the route the request had when the filter started,
not the one its own `clearRouteCache()` leads to (tried in Envoy 1.40), hence one filter per step.
Measured cost on this machine (loopback, a local redirect as the answer, 2k scopes): an exact host
~55 µs per request; each fallback step adds ~8-15 µs (normalize ~70 µs, wildcard ~75-100 µs, catch-all
~75-100 µs).

Every scope's route configuration removes the internal header before the request goes upstream.
"""

from __future__ import annotations

from shardgate.model import CATCH_ALL_HOST

SCOPE_HEADER = "x-shardgate-scope"

FALLBACK_FILTER = "shardgate.host"
"""The name of all three fallback filters. `typed_per_filter_config` is keyed by filter name, so one
`LuaPerRoute(disabled)` per scope switches off all three: measured at 20k hosts in Envoy 1.40, three
differently named entries cost ~2.5 KB of Envoy memory per host, one costs ~0.8 KB (Envoy accepts
repeated HTTP filter names; tests/pusher/test_routing_envoy.py would show if a later Envoy did not)."""

CATCH_ALL_SCRIPT = "catch_all"
"""The name under which the catch-all script is also registered, for a scope's last (404) route."""


def scope_key(host: str) -> str:
    """The scope key of a host unit: the host itself, lower-case (`*.foo.com` and `*` included)."""
    return host.lower()


def is_catch_all(host: str) -> bool:
    return host == CATCH_ALL_HOST


# The scripts read and write only SCOPE_HEADER and read `:authority`; they never see user text from
# configuration. `clearRouteCache()` makes Envoy select the scope again from the rewritten header.
NORMALIZE_LUA = f"""
function envoy_on_request(handle)
  local headers = handle:headers()
  local host = string.lower(headers:get(":authority") or "")
  if string.sub(host, 1, 1) == "[" then
    host = string.match(host, "^%[[^%]]*%]") or host
  else
    host = string.match(host, "^[^:]*")
  end
  if string.sub(host, -1) == "." then
    host = string.sub(host, 1, -2)
  end
  if host ~= headers:get("{SCOPE_HEADER}") then
    headers:replace("{SCOPE_HEADER}", host)
    handle:clearRouteCache()
  end
end
"""

WILDCARD_LUA = f"""
function envoy_on_request(handle)
  local headers = handle:headers()
  local host = headers:get("{SCOPE_HEADER}") or ""
  local parent = string.match(host, "^[^.*:]+%.([^:]+)$")
  if parent ~= nil then
    headers:replace("{SCOPE_HEADER}", "*." .. parent)
    handle:clearRouteCache()
  end
end
"""

CATCH_ALL_LUA = f"""
function envoy_on_request(handle)
  local headers = handle:headers()
  if headers:get("{SCOPE_HEADER}") ~= "{CATCH_ALL_HOST}" then
    headers:replace("{SCOPE_HEADER}", "{CATCH_ALL_HOST}")
    handle:clearRouteCache()
  end
end
"""
