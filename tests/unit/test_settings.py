"""settings_from_env: one naming and conversion rule for every service's settings."""

from __future__ import annotations

from dataclasses import dataclass

from shardgate.settings import settings_from_env


@dataclass(frozen=True)
class Example:
    nats_url: str = "nats://127.0.0.1:4222"
    shards: int = 64
    resync_s: float = 2.0
    verbose: bool = False
    names: tuple[str, ...] = ()


def test_each_field_from_its_variable_converted_by_its_default_type() -> None:
    env = {
        "SHARDGATE_NATS_URL": "nats://nats:4222",
        "SHARDGATE_SHARDS": "256",
        "SHARDGATE_RESYNC_S": "0.5",
        "SHARDGATE_VERBOSE": "yes",
        "SHARDGATE_NAMES": " a.com, ,b.com ",
    }
    assert settings_from_env(Example, env) == Example("nats://nats:4222", 256, 0.5, True, ("a.com", "b.com"))


def test_unset_or_empty_keeps_the_default() -> None:
    assert settings_from_env(Example, {"SHARDGATE_SHARDS": "  ", "OTHER": "x"}) == Example()
