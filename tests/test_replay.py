"""The one-time-nonce cache."""

from __future__ import annotations

import pytest

from engine.replay import FRESH, NO_ROOM, REPLAYED, MemoryReplayCache


def test_records_then_detects_until_expiry():
    c = MemoryReplayCache()
    assert c.check_and_record([b"a", b"b", b"a"], [5_000, 9_000, 5_000], 1_000) == [
        FRESH,
        FRESH,
        REPLAYED,
    ]
    assert c.check_and_record([b"a"], [5_000], 4_999) == [REPLAYED]
    # Past its expiry (and its bucket), "a" is forgotten; "b" is still live.
    assert c.check_and_record([b"b"], [9_000], 6_000) == [REPLAYED]
    assert len(c) == 1
    assert c.check_and_record([b"a"], [12_000], 6_000) == [FRESH]


def test_purges_out_of_order_expiries():
    c = MemoryReplayCache()
    c.check_and_record([b"late", b"early"], [50_000, 3_000], 0)
    c.check_and_record([b"x"], [20_000], 10_000)
    assert len(c) == 2  # "early" went
    c.check_and_record([], [], 60_000)
    assert len(c) == 0


def test_capacity_refuses_instead_of_forgetting():
    c = MemoryReplayCache(capacity=2)
    assert c.check_and_record([b"a", b"b", b"c"], [9_000] * 3, 0) == [FRESH, FRESH, NO_ROOM]
    assert c.check_and_record([b"a"], [9_000], 0) == [REPLAYED]
    # Once entries expire there is room again.
    assert c.check_and_record([b"c"], [20_000], 10_000) == [FRESH]


def test_bad_capacity():
    with pytest.raises(ValueError):
        MemoryReplayCache(capacity=0)
