"""A Python reading of the replay store contract, the model the native table and every
ReplayStore are tested against (tests/test_replay.py, tests/test_replay_store.py)."""

from __future__ import annotations

from engine.replay import FRESH, NO_ROOM, REPLAYED


def model_states(model: dict[bytes, int], keys, expires, now: int, capacity: int) -> list[int]:
    """check_and_record's answers for ``keys`` at ``now``, updating ``model`` (key ->
    expiry): a key whose expiry is not before ``now`` is live; a full store (capacity
    live keys) records nothing more."""
    want, live = [], sum(v >= now for v in model.values())
    for k, e in zip(keys, expires):
        if model.get(k, -1) >= now:
            want.append(REPLAYED)
        elif live >= capacity:
            want.append(NO_ROOM)
        else:
            model[k] = e  # replaces an expired record, if any
            live += e >= now
            want.append(FRESH)
    return want
