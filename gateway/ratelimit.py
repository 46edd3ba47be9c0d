"""Token buckets per write key, counted in events: a batch spends one token per call.

In memory, per gateway process: with several replicas each holds its own buckets, so the
platform-wide limit is the setting times the replicas.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable


class RateLimiter:
    """``rate`` tokens a second refill each key's bucket, up to ``burst``."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        # key digest -> (tokens, when they were counted)
        self._buckets: dict[bytes, tuple[float, float]] = {}

    def _tokens(self, key: str) -> tuple[bytes, float, float]:
        # Keyed by a digest: the write key itself is not kept around a second time.
        digest = hashlib.sha256(key.encode()).digest()
        now = self.clock()
        tokens, then = self._buckets.get(digest, (float(self.burst), now))
        return digest, min(float(self.burst), tokens + (now - then) * self.rate), now

    def wait(self, key: str, count: int) -> float:
        """Seconds until ``key`` has ``count`` tokens; 0 when it has them now. Takes nothing."""
        _, tokens, _ = self._tokens(key)
        return max(0.0, (count - tokens) / self.rate)

    def take(self, key: str, count: int) -> float:
        """Spend ``count`` tokens of ``key`` and return 0, or, when it has too few, spend
        nothing and return the seconds until it has enough."""
        digest, tokens, now = self._tokens(key)
        if tokens < count:
            return (count - tokens) / self.rate
        self._buckets[digest] = (tokens - count, now)
        return 0.0


def whole_seconds(wait: float) -> int:
    """A wait as the whole seconds of ``Retry-After``: rounded up, at least 1."""
    return max(1, math.ceil(wait))
