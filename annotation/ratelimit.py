"""A token bucket per application key, in the server's memory.

Each key may send `rate_per_minute` requests a minute on average and a burst of up to that many at
once (the bucket holds one minute's worth). In memory, not in SQLite: a rate limit that costs a write
transaction per request would itself be the bottleneck, and `rlhf annotate serve` is one process, so
one bucket per key is exact. A restart refills the buckets, which is harmless.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._buckets: dict[int, _Bucket] = {}
        self._lock = threading.Lock()

    def allow(self, key_id: int, rate_per_minute: float) -> tuple[bool, float]:
        """Take one token from the key's bucket: (allowed, seconds until the next token when refused)."""
        capacity = max(1.0, rate_per_minute)
        per_second = rate_per_minute / 60.0
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(key_id)
            if bucket is None:
                bucket = self._buckets[key_id] = _Bucket(tokens=capacity, updated=now)
            bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated) * per_second)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return True, 0.0
            return False, (1.0 - bucket.tokens) / per_second if per_second > 0 else 60.0
