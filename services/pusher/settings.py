"""Pusher settings, read from the environment (flags override in `main`)."""

from __future__ import annotations

from dataclasses import dataclass

from shardgate.keys import DEFAULT_SHARDS
from shardgate.settings import settings_from_env


@dataclass(frozen=True)
class Settings:
    nats_url: str = "nats://127.0.0.1:4222"
    """Where change notices arrive (core NATS `sg.changed.*`)."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    """Where the compiled fragments, revisions and change logs are read."""
    shards: int = DEFAULT_SHARDS
    """Must equal the compilers' shard count."""
    xds_addr: str = "127.0.0.1:18000"
    """host:port of the ADS gRPC server the gateway Envoys connect to."""
    gateway_http_address: str = "0.0.0.0"
    """Address the gateways' HTTP listener binds (served as an LDS resource)."""
    gateway_http_port: int = 8080
    """Port the gateways' HTTP listener binds."""
    gateway_https_port: int = 8443
    """Port the gateways' HTTPS listener binds (same address as HTTP); certificates are chosen by SNI."""
    tls_prefetch: tuple[str, ...] = ()
    """SNIs whose certificates a gateway fetches when its HTTPS listener loads, so the first handshake
    after an Envoy restart does not wait an SDS round trip. Part of the listener: changing it is a
    listener update on every gateway, so keep it to a few hot names (comma-separated in the env)."""
    max_wildcard_sni: int = 4096
    """Per gateway stream, how many SNIs answered through a *wildcard* host a gateway may hold; past it
    the oldest is evicted (Envoy refetches it on its next handshake, one round trip). Clients can invent
    any number of names under a wildcard: this bounds what they cost (~25 KB each in Envoy)."""
    resync_s: float = 2.0
    """How often revisions are compared with Redis to catch a lost notice."""
    metrics_port: int = 0
    """Prometheus /metrics port; 0 disables it."""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Each field from `SHARDGATE_<FIELD>` (see `shardgate.settings`)."""
        return settings_from_env(cls, env)
