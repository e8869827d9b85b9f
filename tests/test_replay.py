"""The one-time-nonce cache (native table)."""

from __future__ import annotations

import os
import random

import pytest

from engine.replay import FRESH, NO_ROOM, REPLAYED, MemoryReplayCache


def key(label: str) -> bytes:
    return label.encode().ljust(32, b".")


def test_records_then_detects_until_expiry():
    c = MemoryReplayCache()
    assert c.check_and_record([key("a"), key("b"), key("a")], [5_000, 9_000, 5_000], 1_000) == [
        FRESH,
        FRESH,
        REPLAYED,
    ]
    assert c.check_and_record([key("a")], [5_000], 5_000) == [REPLAYED]  # expiry inclusive
    # Past its expiry "a" is forgotten; "b" is still live.
    assert c.check_and_record([key("b")], [9_000], 6_000) == [REPLAYED]
    assert c.live(6_000) == 1
    assert c.check_and_record([key("a")], [12_000], 6_000) == [FRESH]
    assert c.live(6_000) == 2


def test_capacity_refuses_instead_of_forgetting():
    c = MemoryReplayCache(capacity=2)
    assert c.check_and_record([key("a"), key("b"), key("c")], [9_000] * 3, 0) == [
        FRESH,
        FRESH,
        NO_ROOM,
    ]
    assert c.check_and_record([key("a")], [9_000], 0) == [REPLAYED]
    # Once entries expire there is room again.
    assert c.check_and_record([key("c")], [20_000], 10_000) == [FRESH]


def test_against_a_dict_model_through_growth_and_expiry():
    rng = random.Random(5)
    c = MemoryReplayCache(capacity=50_000)
    model: dict[bytes, int] = {}
    pool = [os.urandom(32) for _ in range(30_000)]
    now = 1_000
    for _ in range(40):
        now += rng.randrange(0, 400)
        keys = [rng.choice(pool) for _ in range(2_000)]
        expires = [now + rng.randrange(0, 3_000) for _ in keys]
        want = []
        for k, e in zip(keys, expires):
            if model.get(k, -1) >= now:
                want.append(REPLAYED)
            else:
                model[k] = e
                want.append(FRESH)
        assert c.check_and_record(keys, expires, now) == want
        assert c.live(now) == sum(e >= now for e in model.values())


def test_bad_arguments():
    with pytest.raises(ValueError):
        MemoryReplayCache(capacity=0)
    c = MemoryReplayCache()
    with pytest.raises(ValueError, match="32 bytes"):
        c.check_and_record([b"short"], [1], 0)
    with pytest.raises(ValueError, match="differ in length"):
        c.check_and_record([key("a")], [1, 2], 0)
