"""The pool of shared values: equal values come back as one instance; unused ones are swept."""

from __future__ import annotations

from shardgate.model import Backend, PathRule, PathType
from shardgate.watcher.shared import Shared


def test_equal_values_share_one_instance_and_unused_ones_are_swept() -> None:
    pool = Shared(first_sweep=4)
    a = pool.share(Backend("web", 80))
    assert pool.share(Backend("web", 80)) is a
    rule = pool.share(PathRule("/", PathType.PREFIX, a))
    assert pool.share(PathRule("/", PathType.PREFIX, Backend("web", 80))) is rule
    held = [pool.share(Backend(f"svc-{i}", 80)) for i in range(2)]  # 4 values kept: a sweep
    assert len(pool) == 4
    pool.share(Backend("gone", 1))  # used by nobody once shared
    for i in range(20):
        pool.share(Backend(f"tmp-{i}", 1))
    # Everything still used is kept (and still shared); what nobody holds went in the sweeps.
    assert pool.share(Backend("web", 80)) is a and pool.share(Backend("svc-1", 80)) is held[1]
    assert pool.share(PathRule("/", PathType.PREFIX, a)) is rule
    assert len(pool) < 12
