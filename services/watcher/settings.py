"""The watcher's settings: one dataclass, read from `SHARDGATE_*` environment variables and flags.

Each field's default is explained once, in its `help`; `--help` prints them all. Flags win over the
environment, which wins over the defaults.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from shardgate import keys


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True, slots=True)
class Settings:
    kubeconfig: str | None = _opt(
        None,
        "kubeconfig path; unset: the pod's service account in a cluster, else $KUBECONFIG or ~/.kube/config",
    )
    nats_url: str = _opt("nats://127.0.0.1:4222", "NATS server with JetStream; the standard local port")
    redis_url: str = _opt("redis://127.0.0.1:6379/0", "Redis holding the published index; the standard port")
    shards: int = _opt(
        keys.DEFAULT_SHARDS, "virtual shard count; must equal the compilers' (it decides a unit's subject)"
    )
    stream: str = _opt("SHARDGATE", "the JetStream stream carrying sg.delta.<shard>")
    ingress_class: str = _opt("shardgate", "the IngressClass name whose Ingresses are ours")
    controller: str = _opt(
        "shardgate.io/ingress-controller",
        "our IngressClass controller; a default class naming it admits Ingresses without a class",
    )
    index_key: str = _opt("sg:watcher:index", "Redis hash of source → published unit hashes")
    lease_namespace: str = _opt(
        os.environ.get("POD_NAMESPACE", "default"),
        "namespace of the leader Lease: the pod's ($POD_NAMESPACE)",
    )
    lease_name: str = _opt("shardgate-watcher", "name of the leader Lease; one per watcher deployment")
    identity: str = _opt(
        f"{socket.gethostname()}-{os.getpid()}", "holderIdentity in the Lease: host name and pid are unique"
    )
    lease_duration: float = _opt(15.0, "seconds a standby waits before taking an unrenewed Lease (client-go)")
    renew_deadline: float = _opt(
        10.0, "seconds after a successful renewal that the holder stops publishing unless renewed again"
    )
    retry_period: float = _opt(2.0, "seconds between Lease renewals / acquisition attempts (client-go)")
    status_address: str = _opt(
        "", "IP or host name written to admitted Ingresses' status.loadBalancer; empty: write no status"
    )
    watch_timeout: int = _opt(300, "seconds the server keeps a watch open before we re-watch (client-go's)")
    page_size: int = _opt(500, "list page size (limit); kubectl's, small enough to keep server memory flat")
    workers: int = _opt(16, "sources published in parallel; order is kept per source, not across sources")
    secret_field_selector: str = _opt(
        "type=kubernetes.io/tls", "server-side filter for Secrets: only TLS secrets matter, skip the rest"
    )
    hosts_key: str = _opt("sg:watcher:hosts", "Redis hash of host → owning namespace and waiting claimants")
    max_hosts_per_ingress: int = _opt(
        100,
        "an Ingress naming more hosts is rejected whole: one object must not fan out to the whole cluster",
    )
    max_paths_per_host: int = _opt(
        100, "an Ingress's host with more paths is rejected: keeps one host's route table (and Envoy's) small"
    )
    max_annotation_value_bytes: int = _opt(
        4096, "longest value of an annotation we read (nginx.ingress.kubernetes.io/*, shardgate.io/*)"
    )
    max_path_length: int = _opt(1024, "longest path (or regex path) a rule may have; far above real URLs")
    regex_max_program_size: int = _opt(
        100,
        "largest RE2 program a regex path may compile to; Envoy's own default limit, so Envoy never NACKs",
    )
    max_timeout_s: int = _opt(3600, "upper bound of the proxy-*-timeout annotations (seconds): one hour")
    catch_all_namespaces: str = _opt(
        "",
        "comma-separated namespaces allowed to use the catch-all (no-host rules, defaultBackend); empty: any",
    )
    host_release_grace: float = _opt(
        60.0,
        "seconds a host stays with its owner after its last Ingress naming it is gone: a delete and "
        "re-create (kubectl replace --force, helm reinstall) must not hand the host to a waiting namespace",
    )
    namespace_rate: float = _opt(
        50.0, "changes per second one namespace may cause before it is throttled (its changes wait, in order)"
    )
    namespace_burst: float = _opt(500.0, "changes a namespace may cause at once: a large helm install passes")
    component: str = _opt("shardgate-watcher", "the source component of Kubernetes Events we write")
    log_level: str = _opt("INFO", "Python logging level")

    @classmethod
    def load(cls, argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        parser = argparse.ArgumentParser(prog="python -m shardgate.watcher", description=__doc__)
        values: dict[str, Any] = {}
        for f in fields(cls):
            default = f.default if f.default is not MISSING else None
            env_name = f"SHARDGATE_{f.name.upper()}"
            conv = _converter(default)
            if env_name in env:
                values[f.name] = conv(env[env_name])
            parser.add_argument(
                f"--{f.name.replace('_', '-')}",
                dest=f.name,
                type=conv,
                default=None,
                help=f"{f.metadata['help']} (env {env_name}; default {default!r})",
            )
        args = parser.parse_args(argv)
        values.update({k: v for k, v in vars(args).items() if v is not None})
        return cls(**values)


def _converter(default: Any) -> Any:
    if isinstance(default, bool):
        return lambda s: s.lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int
    if isinstance(default, float):
        return float
    return str
