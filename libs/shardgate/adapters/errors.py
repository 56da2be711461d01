"""The adapters' error hierarchy: third-party errors are translated here, at the edge.

    AdapterError
    ├── TransientError     the operation may succeed if retried (connection lost, timeout, 5xx, 429)
    ├── LeaseLost          this process no longer owns what it was writing for; stop, do not retry
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
