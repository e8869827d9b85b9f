"""The one-time-nonce cache (native table)."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
from replay_model import model_states as _model_states

from engine import _core
from engine.replay import FRESH, NO_ROOM, REPLAYED, MemoryReplayCache
from engine.tools.scenarios import BUILDABLE
from engine.verdicts import Verdict
from engine.verifier import VerifierConfig, trust_table

# The table's tests run on a private table and on a shared one (tests/test_replay_shared.py
# has the shared one's own tests: across processes).
both = pytest.mark.parametrize("shared", [False, True], ids=["private", "shared"])


def key(label: str) -> bytes:
    return label.encode().ljust(32, b".")


@both
def test_records_then_detects_until_expiry(shared):
    c = MemoryReplayCache(shared=shared)
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


@both
def test_capacity_refuses_instead_of_forgetting(shared):
    c = MemoryReplayCache(capacity=2, shared=shared)
    assert c.check_and_record([key("a"), key("b"), key("c")], [9_000] * 3, 0) == [
        FRESH,
        FRESH,
        NO_ROOM,
    ]
    assert c.check_and_record([key("a")], [9_000], 0) == [REPLAYED]
    # Once entries expire there is room again.
    assert c.check_and_record([key("c")], [20_000], 10_000) == [FRESH]


@both
def test_against_a_dict_model_through_growth_and_expiry(shared):
    rng = random.Random(5)
    c = MemoryReplayCache(capacity=50_000, shared=shared)
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


# The table grows and drops expired entries by migrating a bounded number of slots per
# call into a new table while the old one answers look-ups, and counts live entries with
# an incremental sweep (engine/native/replay_table.h).  These drive it through many
# migrations with small calls, so that keys come back while they sit in the old table.


def _batch(rng, pool, now, n, horizon):
    keys = [rng.choice(pool) for _ in range(n)]
    if n > 1 and rng.random() < 0.3:
        keys[rng.randrange(n)] = keys[0]  # the same key twice in one call
    return keys, [now + rng.randrange(1, horizon) for _ in keys]


@both
def test_model_through_many_migrations_with_expiry_and_jumps(shared):
    rng = random.Random(11)
    c = MemoryReplayCache(capacity=1_000_000, shared=shared)
    model: dict[bytes, int] = {}
    pool = [os.urandom(32) for _ in range(20_000)]
    now, migrations, while_migrating, old_hits = 1_000, 0, 0, 0
    was_migrating = False
    for step in range(4_000):
        now += rng.choice([0, 1, 7, 40]) if rng.random() < 0.995 else rng.randrange(2_000, 9_000)
        keys, expires = _batch(rng, pool, now, rng.choice([0, 1, 3, 8, 25]), 3_000)
        known = {k for k in keys if k in model}
        want = _model_states(model, keys, expires, now, c.capacity)
        assert c.check_and_record(keys, expires, now) == want, step
        up = c._upkeep()
        if was_migrating:
            while_migrating += 1
            old_hits += len(known)
        migrations += up["migrating"] and not was_migrating
        was_migrating = up["migrating"]
        if step % 10 == 0:
            live = sum(e >= now for e in model.values())
            assert up["live_bound"] >= live and c.live(now) == live
    assert migrations >= 5 and while_migrating >= 100 and old_hits >= 500


@both
def test_live_limit_exact_while_nothing_expires(shared):
    # With no entry expiring the live bound is exact: NO_ROOM exactly at the limit, also
    # while a migration is under way (the table of 4096 slots begins one near 2868 keys).
    rng = random.Random(3)
    capacity = 2_880
    c = MemoryReplayCache(capacity=capacity, shared=shared)
    model: dict[bytes, int] = {}
    pool = [os.urandom(32) for _ in range(4_000)]
    now, refused_while_migrating = 1_000, 0
    for step in range(2_500):
        now += rng.randrange(0, 3)
        keys = [rng.choice(pool) for _ in range(rng.choice([1, 2, 5, 12]))]
        expires = [10**12] * len(keys)
        migrating = c._upkeep()["migrating"]
        want = _model_states(model, keys, expires, now, capacity)
        got = c.check_and_record(keys, expires, now)
        assert got == want, step
        migrating = migrating and c._upkeep()["migrating"]
        refused_while_migrating += migrating and NO_ROOM in got
    assert len(model) == capacity and refused_while_migrating > 0


@both
def test_live_limit_with_expiry_never_exceeded_and_room_comes_back(shared):
    rng = random.Random(8)
    capacity = 3_000
    c = MemoryReplayCache(capacity=capacity, shared=shared)
    model: dict[bytes, int] = {}
    recent: list[bytes] = []
    now, refused = 1_000, 0
    for step in range(4_000):
        now += rng.choice([1, 2, 5])
        if rng.random() < 0.002:
            now += 5_000
        keys = [os.urandom(32) for _ in range(rng.choice([1, 4, 16]))]
        if recent and rng.random() < 0.5:
            keys[0] = rng.choice(recent)  # live or expired, maybe still in the old table
        expires = [now + rng.randrange(1_000, 4_000) for _ in keys]
        got = c.check_and_record(keys, expires, now)
        model = {k: v for k, v in model.items() if v >= now}  # the same answers from here
        for k, e, s in zip(keys, expires, got):
            if k in model:
                assert s == REPLAYED, step  # nothing live is forgotten
            elif s == FRESH:
                assert len(model) < capacity, step  # the limit is hard
                model[k] = e
                recent = [*recent[-499:], k]
            else:
                assert s == NO_ROOM
                refused += 1
        bound = c._upkeep()["live_bound"]
        assert bound >= len(model)
        assert any(s == NO_ROOM for s in got) <= (bound >= capacity)
    assert refused > 0
    # Everything expires: within a second and one sweep's worth of calls there is room.
    now += 10_000
    got = []
    for _ in range(capacity):
        now += 1
        got = c.check_and_record([os.urandom(32)], [now + 100_000], now)
        if got == [FRESH]:
            break
    assert got == [FRESH]


@both
def test_upkeep_per_call_is_bounded(shared):
    # Without timing: the slots a call migrates and counts never exceed the budgets for
    # its number of keys, though migrations and sweeps cover far more in all.
    rng = random.Random(2)
    c = MemoryReplayCache(capacity=40_000, shared=shared)
    now, moved, counted, seen_migrations = 1_000, 0, 0, 0
    for _ in range(6_000):
        now += rng.choice([1, 3, 10, 200])
        n = rng.choice([0, 1, 4, 20, 20, 64])
        keys = [os.urandom(32) for _ in range(n)]
        c.check_and_record(keys, [now + rng.randrange(1, 20_000) for _ in keys], now)
        up = c._upkeep()
        move, count = MemoryReplayCache._budgets(n)
        assert up["moved"] <= move and up["counted"] <= count
        moved += up["moved"]
        counted += up["counted"]
        seen_migrations += up["migrating"]
    assert moved > 50 * MemoryReplayCache._budgets(64)[0]
    assert counted > 10 * MemoryReplayCache._budgets(64)[1] and seen_migrations > 100


def test_counting_sweep_keeps_insertions_behind_it():
    # A sweep that counts live entries over several calls must count the keys recorded
    # behind its cursor meanwhile, or the limit could be overrun once it ends.
    capacity = 30_000
    c = MemoryReplayCache(capacity=capacity)
    model: dict[bytes, int] = {}
    now = 1_000
    for i in range(298):  # 20,000 short-lived, 9,800 long-lived; under the limit
        keys = [os.urandom(32) for _ in range(100)]
        expires = [now + 10 if i < 200 else 10**12 for _ in keys]
        assert _model_states(model, keys, expires, now, capacity) == [FRESH] * 100
        assert c.check_and_record(keys, expires, now) == [FRESH] * 100
    now += 1_000  # the short-lived expire; the table still counts them
    keys = [os.urandom(32) for _ in range(200)]  # near the limit: a sweep begins
    assert c.check_and_record(keys, [10**12] * 200, now) == [FRESH] * 200
    assert c._upkeep()["counting"]
    _model_states(model, keys, [10**12] * 200, now, capacity)
    while c._upkeep()["counting"]:  # until it ends the table is at its (stale) limit
        assert c.check_and_record([], [], now) == []
    for _ in range(2_010):  # to the limit and past it, exactly
        now += 1
        keys = [os.urandom(32) for _ in range(10)]
        expires = [10**12] * 10
        assert c.check_and_record(keys, expires, now) == _model_states(
            model, keys, expires, now, capacity
        )
    assert sum(v >= now for v in model.values()) == capacity


# --- the replay stage of a batch: in C (VerifyBatch.replay) or through a store outside
# the process (replay_candidates, the store's check_and_record, set_replay_states).


@pytest.fixture(scope="module")
def stage(pki, scenarios, now_s):
    """(checked(presentations, now_ms) -> a checked VerifyBatch, horizon_ms, a pool of
    presentations of every outcome made at now_s)."""
    cfg = VerifierConfig()
    table = trust_table(pki.trust_list)

    def checked(presentations, now_ms):
        batch = _core.VerifyBatch(presentations)
        batch.check(table, now_ms, cfg.freshness_ms, cfg.skew_ms, 1)
        return batch

    pool = scenarios.presentations([v for v in BUILDABLE for _ in range(5)], now_s * 1000)
    return checked, cfg.freshness_ms + cfg.skew_ms, pool


@pytest.mark.parametrize("capacity", [6, 10_000])
@pytest.mark.parametrize("seed", range(3))
def test_replay_through_the_seam_gives_the_verdicts_of_replay(stage, now_s, seed, capacity):
    checked, horizon, pool = stage
    rng = random.Random(seed)
    native, store = MemoryReplayCache(capacity), MemoryReplayCache(capacity)
    seen = set()
    for step in range(6):
        now_ms = now_s * 1000 + 500 * step
        items = [rng.choice(pool) for _ in range(rng.choice([0, 1, 20, 60]))]  # repeats
        a, b = checked(items, now_ms), checked(items, now_ms)
        if items:  # an earlier stage decided some items
            decided = rng.sample(range(len(items)), len(items) // 4)
            a.set_verdict(decided, Verdict.CARD_REVOKED)
            b.set_verdict(decided, Verdict.CARD_REVOKED)
        a.replay(native, now_ms, horizon)
        idx, keys, expires = b.replay_candidates(horizon)
        b.set_replay_states(idx, store.check_and_record(keys, expires, now_ms))
        assert a.verdicts().tolist() == b.verdicts().tolist(), step
        assert native.live(now_ms) == store.live(now_ms)
        seen.update(a.verdicts().tolist())
    assert Verdict.REPLAYED in seen and Verdict.OK in seen
    assert (Verdict.BUSY in seen) == (capacity < 100)


def test_replay_candidates_are_the_undecided_items_keys(stage, now_s):
    checked, horizon, pool = stage
    batch = checked(pool, now_s * 1000)
    batch.set_verdict([0, 1], Verdict.CARD_REVOKED)
    idx, keys, expires = batch.replay_candidates(horizon)
    assert idx.dtype == np.intp and keys.dtype == np.uint8 and expires.dtype == np.uint64
    assert keys.shape == (len(idx), 32) and expires.shape == idx.shape
    assert idx.tolist() == [i for i, v in enumerate(batch.verdicts()) if v == 0]
    assert 0 < len(idx) < len(pool)
    for j, i in enumerate(idx.tolist()):
        f = batch.fields(i)
        assert keys[j].tobytes() == f.serial + f.nonce
        assert int(expires[j]) == f.timestamp_ms + horizon


def test_set_replay_states(stage, now_s):
    checked, _, pool = stage
    ok = pool[BUILDABLE.index(Verdict.OK) * 5 :][:5]
    batch = checked(ok, now_s * 1000)
    batch.set_verdict([4], Verdict.CARD_REVOKED)
    before = batch.verdicts().tolist()
    assert before == [0, 0, 0, 0, Verdict.CARD_REVOKED]

    for idx, states, error in [
        ([0], [6], ValueError),  # not a state
        ([0, 1], [1, -1], ValueError),
        ([0], [1.0], ValueError),
        ([0], ["1"], ValueError),
        ([0, 1], [1], ValueError),  # lengths differ
        ([[0]], [[1]], ValueError),
        ([0, 5], [1, 1], IndexError),
        ([-1], [1], IndexError),
    ]:
        with pytest.raises(error):
            batch.set_replay_states(idx, states)
        assert batch.verdicts().tolist() == before, (idx, states)  # nothing changed

    batch.set_replay_states([], [])
    batch.set_replay_states([0, 1, 2, 3, 4], [0, 1, 2, 3, 1])
    assert batch.verdicts().tolist() == [
        0,  # fresh
        Verdict.REPLAYED,
        Verdict.BUSY,  # no room
        Verdict.BUSY,  # the store could not be asked
        Verdict.CARD_REVOKED,  # decided before: kept
    ]
    batch.set_replay_states([1, 2], [2, 1])  # only items still without a verdict change
    assert batch.verdicts().tolist()[1:3] == [Verdict.REPLAYED, Verdict.BUSY]
    assert batch.repeats().tolist() == []


def test_set_replay_states_repeat_and_lost(stage, now_s):
    """4: a safe retry (OK again, marked repeat); 5: the lost-store rule (REPLAYED)."""
    checked, _, pool = stage
    ok = pool[BUILDABLE.index(Verdict.OK) * 5 :][:4]
    batch = checked(ok, now_s * 1000)
    batch.set_verdict([3], Verdict.CARD_REVOKED)
    batch.set_replay_states([0, 1, 2, 3], [4, 5, 0, 4])
    assert batch.verdicts().tolist() == [0, Verdict.REPLAYED, 0, Verdict.CARD_REVOKED]
    assert batch.repeats().tolist() == [0]  # a decided item is never a repeat


def test_the_replay_stage_runs_after_the_check():
    batch = _core.VerifyBatch([b"not checked"])
    with pytest.raises(RuntimeError, match="not been checked"):
        batch.replay_candidates(1_000)
    with pytest.raises(RuntimeError, match="not been checked"):
        batch.replay(_core.ReplayTable(), 0, 1_000)


@pytest.mark.parametrize("shared", [False, True])
def test_seen_looks_up_without_recording(shared):
    """The first-level filter's look-up: live records only, and nothing is recorded."""
    table = _core.ReplayTable(1000, shared=shared)
    keys = [os.urandom(32) for _ in range(6)]
    assert table.check_and_record(keys[:3], [2_000, 2_000, 500], 100) == [0, 0, 0]
    assert table.seen(keys, 1_000).tolist() == [True, True, False, False, False, False]
    assert table.seen(keys, 100).tolist() == [True, True, True, False, False, False]
    # Nothing was recorded by looking: the unseen keys are still fresh.
    assert table.check_and_record(keys[3:], [2_000] * 3, 1_000) == [0, 0, 0]
    with pytest.raises(ValueError, match="32 bytes"):
        table.seen([b"short"], 0)
