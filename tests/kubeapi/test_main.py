"""``python -m shardgate.kubeapi`` as the local stack runs it: a URL line, a usable kubeconfig."""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import yaml


def test_module_entry_point_serves_and_writes_kubeconfig(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kc" / "config"
    proc = subprocess.Popen(
        [sys.executable, "-m", "shardgate.kubeapi", "--port", "0", "--kubeconfig", str(kubeconfig)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("shardgate kubeapi listening on http://127.0.0.1:"), line
        url = line.split()[-1]
        config = yaml.safe_load(kubeconfig.read_text())
        assert config["clusters"][0]["cluster"]["server"] == url
        assert config["current-context"] == config["contexts"][0]["name"]
        with urllib.request.urlopen(f"{url}/api/v1/namespaces/default", timeout=5) as response:
            assert b'"name":"default"' in response.read()
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
