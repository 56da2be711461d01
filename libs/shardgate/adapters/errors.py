"""The adapters' error hierarchy: third-party errors are translated here, at the edge.

    AdapterError
    ├── TransientError     the operation may succeed if retried (connection lost, timeout, 5xx, 429)
    ├── LeaseLost          this process no longer owns what it was writing for; stop, do not retry
    ├── UnloadedSources    a commit assumed a unit had no stored sources, and it had: read them, replan
    └── PermanentError     retrying cannot help (malformed request, refused by the server)

Callers retry only `TransientError` (with tenacity), and always log the object's key with the rest.
"""

from __future__ import annotations


class AdapterError(Exception):
    pass


class TransientError(AdapterError):
    pass


class LeaseLost(AdapterError):
    pass


class PermanentError(AdapterError):
    pass


class UnloadedSources(AdapterError):
    """A shard commit was refused, writing nothing, because units it assumed to have no stored
    contributions do have some (`Commit.assumed_empty`): the caller reads them and plans again."""

    def __init__(self, shard: int, units: list[str]) -> None:
        super().__init__(f"shard {shard}: units with stored contributions not read: {', '.join(units)}")
        self.units = units
