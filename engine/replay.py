"""One-time nonces: a presentation may be accepted once only.

The key is the credential serial plus the presentation nonce (32 bytes), so one holder
cannot burn another's nonces.  An entry is kept until the presentation it came from
could no longer pass the freshness check, so memory is bounded by (accepted rate x
freshness window); a hard capacity guards against anything beyond that: when full, a
store refuses to record (the verifier answers BUSY) instead of forgetting nonces that
are still live.

``ReplayStore`` is the seam the verifier's replay stage goes through, as
``RevocationSource`` is for revocation: the in-process native table
(``MemoryReplayCache``) is one implementation, a store shared by a fleet of nodes is
another.  The stage asks for a whole batch in one call, keys in presentation order,
and a key repeated within the batch is REPLAYED from its second occurrence on, exactly
as one-by-one calls would be.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from engine import _core

# Per-key answers of ReplayStore.check_and_record.
FRESH = 0  # not seen before: now recorded until its expiry
REPLAYED = 1  # recorded before (earlier in this call, or in an earlier one) and not expired
NO_ROOM = 2  # not recorded: the store is full of live keys (the verifier answers BUSY)
UNAVAILABLE = 3  # not recorded: the store could not be asked (BUSY: fail closed, retry)
# Recorded before with this call's tag: the same relying party retrying the same
# presentation (OK again, marked repeat: docs/PROTOCOL.md, "Safe retries").
REPEAT = 4
# Refused under the lost-store rule: the store lost nonces, and this presentation is
# old enough to have been accepted before the loss (REPLAYED; engine.redis_replay).
LOST = 5
STATES = (FRESH, REPLAYED, NO_ROOM, UNAVAILABLE, REPEAT, LOST)


class ReplayStore(Protocol):
    def check_and_record(
        self,
        keys: npt.NDArray[np.uint8],
        expires_ms: npt.NDArray[np.uint64],
        now_ms: int,
        tags: Sequence[bytes | None] | None = None,
    ) -> Sequence[int]:
        """For each 32-byte key (a row of ``keys``, shape (n, 32)) in order, one of
        ``STATES``; a FRESH key stays recorded until ``expires_ms`` of its row (unix
        ms).  ``tags`` (one per key, or None; a None entry: nobody known) say who is
        asking: a store with safe retries records a key's tag and answers REPEAT to
        the same tag later; others ignore them.  A store that cannot answer says
        UNAVAILABLE for the keys concerned rather than raising."""
        ...


class MemoryReplayCache(_core.ReplayTable):
    """The in-process replay store, a native table (engine/native/replay_table.c)
    checked and updated under one lock.

    The verifier hands it a batch without leaving C (``VerifyBatch.replay``); through
    ``check_and_record`` (the ReplayStore interface) it answers FRESH, REPLAYED or
    NO_ROOM, never UNAVAILABLE; it keeps no tags (``tags`` is ignored), so it
    never answers REPEAT.  ``live(now_ms)``: how many keys are remembered.

    ``MemoryReplayCache(capacity, shared=True)`` is one table for several processes:
    it lives in shared memory and must be created BEFORE the worker processes are
    forked (os.fork, or multiprocessing's 'fork' start method); the children use it
    (the parent may too), and a key is FRESH in exactly one of them.  A worker killed
    while checking leaves at worst the keys of its unanswered call recorded (a later
    REPLAYED for a presentation never accepted), never a recorded key forgotten; the
    others go on (a robust process-shared lock).  A process spawned rather than forked
    does not see it.  Without ``shared`` the table is private to the process (a forked
    child gets its own copy).
    """
