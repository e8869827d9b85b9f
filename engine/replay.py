"""One-time-nonce cache: a presentation may be accepted once only.

The key is the credential serial plus the presentation nonce, so one holder cannot
burn another's nonces.  An entry is kept until the presentation it came from could no
longer pass the freshness check, so memory is bounded by (accepted rate x freshness
window); a hard capacity guards against anything beyond that: when full, the cache
refuses to record (the verifier answers BUSY) instead of forgetting nonces that are
still live.  The table itself is native (engine/native/replay_table.c): the verifier's
replay stage checks a whole batch in one call, in order, under one lock.
"""

from __future__ import annotations

from engine import _core

DEFAULT_CAPACITY = 10_000_000

FRESH, REPLAYED, NO_ROOM = 0, 1, 2


class MemoryReplayCache(_core.ReplayTable):
    """The in-process replay cache.

    ``check_and_record(keys, expires_ms, now_ms)``: for each 32-byte key in order,
    FRESH (now recorded until its expiry), REPLAYED (seen before, in an earlier call or
    earlier in this one, and not expired) or NO_ROOM (not recorded: the cache is full).
    ``live(now_ms)``: how many keys are remembered.
    """
