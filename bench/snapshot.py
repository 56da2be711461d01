"""A frozen copy of the code at one commit, importable as `shardgate`, for long benchmark runs.

The repository's working tree is shared with engineers editing it while a benchmark runs; the local
stack spawns its services (and, in the cold-start phase, restarts them) with whatever is on disk at that
moment. A run that must say which code it measured runs on a snapshot instead: `git archive <rev>` into
a directory, laid out the way the editable install maps it (`libs/shardgate` is the package,
`services/<name>` are its subpackages), and put first on PYTHONPATH, which the stack's children inherit.

    PYTHONPATH=$(.venv/bin/python -m bench.snapshot HEAD) .venv/bin/python -m bench.pipeline ...

Prints the directory to put on PYTHONPATH. Writes nothing in the repository.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("cli", "compiler", "kubeapi", "local", "pusher", "watcher")


def snapshot(rev: str = "HEAD", base: Path = Path("/tmp")) -> Path:
    commit = subprocess.run(
        ["git", "rev-parse", rev], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    target = base / f"shardgate-snapshot-{commit[:12]}"
    pkg = target / "pkg"
    if (pkg / "shardgate").exists():
        return pkg
    tree = target / "tree"
    tree.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")
    pkg.mkdir(exist_ok=True)
    (pkg / "shardgate").symlink_to(tree / "libs" / "shardgate")
    for name in SERVICES:
        link = tree / "libs" / "shardgate" / name
        if not link.exists():
            link.symlink_to(tree / "services" / name)
    (target / "COMMIT").write_text(commit + "\n")
    return pkg


if __name__ == "__main__":
    print(snapshot(sys.argv[1] if len(sys.argv) > 1 else "HEAD"))
