"""Pure parts of status writing, and settings from env and flags."""

from __future__ import annotations

from shardgate.watcher.settings import Settings
from shardgate.watcher.status import load_balancer_entry, wanted_status


def test_load_balancer_entry() -> None:
    assert load_balancer_entry("10.0.0.1") == [{"ip": "10.0.0.1"}]
    assert load_balancer_entry("fd00::1") == [{"ip": "fd00::1"}]
    assert load_balancer_entry("lb.example.com") == [{"hostname": "lb.example.com"}]


def test_wanted_status_table() -> None:
    ours = [{"ip": "10.0.0.1"}]
    other = [{"ip": "192.0.2.9"}]
    cases = [
        # admitted, current, address, wanted
        (True, [], "10.0.0.1", ours),
        (True, ours, "10.0.0.1", None),  # already right: no write (this closes the write loop)
        (True, other, "10.0.0.1", ours),
        (False, ours, "10.0.0.1", []),  # stopped being ours: clear what we wrote
        (False, other, "10.0.0.1", None),  # someone else's status: leave it
        (False, [], "10.0.0.1", None),
        (True, [], "", None),  # no address configured: no status at all
    ]
    for admitted, current, address, wanted in cases:
        assert wanted_status(admitted, current, address) == wanted, (admitted, current, address)


def test_settings_env_then_flags() -> None:
    env = {"SHARDGATE_NATS_URL": "nats://n:1", "SHARDGATE_SHARDS": "16", "SHARDGATE_LEASE_DURATION": "3.5"}
    s = Settings.load(["--shards", "32", "--status-address", "1.2.3.4"], env)
    assert s.nats_url == "nats://n:1" and s.shards == 32 and s.lease_duration == 3.5
    assert s.status_address == "1.2.3.4" and s.ingress_class == "shardgate"
    assert Settings.load([], {}).kubeconfig is None


def test_tenancy_settings_from_env() -> None:
    env = {
        "SHARDGATE_NAMESPACE_RATE": "5",
        "SHARDGATE_HOST_RELEASE_GRACE": "2.5",
        "SHARDGATE_CATCH_ALL_NAMESPACES": "platform,ingress",
        "SHARDGATE_MAX_HOSTS_PER_INGRESS": "10",
    }
    s = Settings.load([], env)
    assert s.namespace_rate == 5.0 and s.host_release_grace == 2.5 and s.max_hosts_per_ingress == 10
    assert s.catch_all_namespaces == "platform,ingress" and s.regex_max_program_size == 100
