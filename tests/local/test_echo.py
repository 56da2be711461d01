"""`shardgate echo` answers any method on any path with JSON about the request."""

from __future__ import annotations

import json
import subprocess
import urllib.request

from shardgate.local.servers import free_port, wait_for_port

from .conftest import CLI


def test_echo_answers_json() -> None:
    port = free_port()
    proc = subprocess.Popen([*CLI, "echo", "--name", "blue", "--port", str(port)], stdout=subprocess.PIPE)
    try:
        wait_for_port(port, timeout=20)
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/some/path?q=1", data=b"x", method="PUT", headers={"Host": "shop.test"}
        )
        with urllib.request.urlopen(req, timeout=5) as response:
            assert response.status == 200
            body = json.loads(response.read())
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    assert body["name"] == "blue"
    assert body["host"] == "shop.test"
    assert body["path"] == "/some/path?q=1"
    assert body["method"] == "PUT"
    assert body["headers"]["Host"] == "shop.test"
