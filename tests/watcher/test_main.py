"""`python -m shardgate.watcher` as a real process: it publishes, and on SIGTERM gives the Lease up."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

from shardgate.adapters.kube import INGRESS, LEASE

from .conftest import Env, wait_for, wait_until
from .helpers import host, ingress, summary

pytestmark = pytest.mark.integration


async def test_watcher_process(env: Env) -> None:
    s = env.settings
    proc_env = {
        **os.environ,
        "SHARDGATE_KUBECONFIG": str(env.kubeconfig),
        "SHARDGATE_NATS_URL": s.nats_url,
        "SHARDGATE_REDIS_URL": s.redis_url,
        "SHARDGATE_STATUS_ADDRESS": "lb.example.net",
        "SHARDGATE_IDENTITY": "proc",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shardgate.watcher", "--lease-duration", "3", "--renew-deadline", "2",
        "--retry-period", "0.5", env=proc_env,
    )  # fmt: skip
    try:
        await env.kube.create(INGRESS, "default", ingress("web", ["p.example.com"]))
        await wait_until(lambda: len(env.log.messages) >= 1, timeout=30, what="the process to publish")
        assert summary(env.log.new()) == {(host("p.example.com"), "ingress/default/web", True)}

        async def status_written() -> bool:
            obj = await env.kube.get(INGRESS, "default", "web")
            return bool(
                obj.get("status", {}).get("loadBalancer", {}).get("ingress")
                == [{"hostname": "lb.example.net"}]
            )

        await wait_for(status_written, what="status with the host name")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        lease = await env.kube.get(LEASE, "default", "shardgate-watcher")
        assert lease["spec"]["holderIdentity"] == ""  # released for a quick takeover
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
