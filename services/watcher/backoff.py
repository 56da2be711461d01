"""How long to wait before trying again: shared by the followers, the publish workers and the takeover.

Full jitter, so that replicas and kinds that failed together do not retry together.
"""

from __future__ import annotations

import random


class Backoff:
    """Exponential backoff with full jitter, reset after a success."""

    def __init__(self, initial: float = 0.2, cap: float = 10.0) -> None:
        self.initial, self.cap, self.attempt = initial, cap, 0

    def reset(self) -> None:
        self.attempt = 0

    def next(self) -> float:
        delay = min(self.cap, self.initial * 2**self.attempt)
        self.attempt += 1
        return random.uniform(delay / 2, delay)
