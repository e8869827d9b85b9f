"""One-time-nonce cache: a presentation may be accepted once only.

The key is the credential serial plus the presentation nonce, so one holder cannot
burn another's nonces.  An entry is kept until the presentation it came from could no
longer pass the freshness check, so memory is bounded by (accepted rate x freshness
window), and a hard capacity guards against anything beyond that: when full, the
cache refuses to record (the verifier answers BUSY) instead of forgetting nonces
that are still live.  A cluster-wide store (Redis) implements the same interface.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Sequence
from typing import Protocol

DEFAULT_CAPACITY = 10_000_000

FRESH, REPLAYED, NO_ROOM = 0, 1, 2


class ReplayStore(Protocol):
    def check_and_record(
        self, keys: Sequence[bytes], expires_ms: Sequence[int], now_ms: int
    ) -> list[int]:
        """For each key in order: FRESH (now recorded until its expiry), REPLAYED (seen
        before, in an earlier call or earlier in this one) or NO_ROOM (not recorded)."""
        ...


class MemoryReplayCache:
    """In-process cache, bucketed by expiry second so expired nonces go in bulk."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._expiry: dict[bytes, int] = {}
        self._buckets: dict[int, list[bytes]] = {}  # expiry second -> keys
        self._heap: list[int] = []  # the bucket seconds, soonest first
        # Batches are verified on several threads: check-then-record must be atomic.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._expiry)

    def check_and_record(
        self, keys: Sequence[bytes], expires_ms: Sequence[int], now_ms: int
    ) -> list[int]:
        with self._lock:
            return self._check_and_record(keys, expires_ms, now_ms)

    def _check_and_record(
        self, keys: Sequence[bytes], expires_ms: Sequence[int], now_ms: int
    ) -> list[int]:
        self._purge(now_ms)
        expiry = self._expiry
        out = []
        for key, exp in zip(keys, expires_ms):
            if key in expiry:
                out.append(REPLAYED)
            elif len(expiry) >= self.capacity:
                out.append(NO_ROOM)
            else:
                expiry[key] = exp
                bucket = exp // 1000
                entries = self._buckets.get(bucket)
                if entries is None:
                    entries = self._buckets[bucket] = []
                    heapq.heappush(self._heap, bucket)
                entries.append(key)
                out.append(FRESH)
        return out

    def _purge(self, now_ms: int) -> None:
        now_bucket = now_ms // 1000
        heap = self._heap
        while heap and heap[0] < now_bucket:
            for key in self._buckets.pop(heapq.heappop(heap)):
                del self._expiry[key]
