"""The replay table shared by forked worker processes (ReplayTable(capacity, shared=True),
engine/native/replay_table.h): the answers of the private table and of the model, one
FRESH per key across racing processes, and a process killed holding the lock.

Processes are forked with os.fork and report through pipes; the parent waits on those
pipes with a deadline (a hang is a failure, never a wait), and nothing sleeps."""

from __future__ import annotations

import contextlib
import os
import pickle
import random
import select
import signal
import struct
import time

import pytest
from replay_model import model_states

from engine.replay import FRESH, NO_ROOM, REPLAYED, MemoryReplayCache

# A hung child (a lock never given back) fails the test after this long; it is no
# threshold of speed: the children's work takes well under a second unsanitized.
DEADLINE_S = 180

# ESC_REPLAY_DIE_* (replay_table.h).
DIE_KEYS, DIE_MIGRATE, DIE_START_RECORDED, DIE_START_HALF = 1, 2, 3, 4
DIE_END_RECORDED, DIE_END_HALF, DIE_RELEASE = 5, 6, 7


def _send(fd: int, obj) -> None:
    data = pickle.dumps(obj)
    data = struct.pack("<I", len(data)) + data
    while data:
        data = data[os.write(fd, data) :]


def _frames(data: bytes) -> list:
    out, i = [], 0
    while i + 4 <= len(data):
        (n,) = struct.unpack_from("<I", data, i)
        if i + 4 + n > len(data):
            break  # cut short by a death
        out.append(pickle.loads(data[i + 4 : i + 4 + n]))
        i += 4 + n
    return out


def _fork(body, *args) -> tuple[int, int]:
    """Runs body(send, *args) in a child; returns (pid, the read end of its pipe).  The
    child never returns into pytest: it exits 0 when body returns, 70 if it raised."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            os.close(r)
            body(lambda obj: _send(w, obj), *args)
            code = 0
        except BaseException as e:  # reported to the parent, which fails the test
            with contextlib.suppress(BaseException):
                _send(w, ("error", repr(e)))
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def _collect(children: list[tuple[int, int]]) -> list[tuple[list, int]]:
    """Every child's messages and wait status, read concurrently until each pipe
    closes; a child still running at the deadline is killed and fails the test."""
    bufs = {r: bytearray() for _, r in children}
    open_fds = set(bufs)
    deadline = time.monotonic() + DEADLINE_S
    while open_fds:
        left = deadline - time.monotonic()
        ready = select.select(list(open_fds), [], [], max(left, 0))[0] if left > 0 else []
        if not ready:
            for pid, _ in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for pid, r in children:
                os.waitpid(pid, 0)
                os.close(r)
            pytest.fail("a process hung on the shared table")
        for r in ready:
            chunk = os.read(r, 1 << 16)
            if chunk:
                bufs[r] += chunk
            else:
                open_fds.discard(r)
    out = []
    for pid, r in children:
        os.close(r)
        _, status = os.waitpid(pid, 0)
        msgs = _frames(bytes(bufs[r]))
        errors = [m[1] for m in msgs if isinstance(m, tuple) and m[0] == "error"]
        assert not errors, errors
        out.append((msgs, status))
    return out


def _in_child(fn, *args):
    """fn(*args) run in a forked child with a deadline: what it returns."""
    [(msgs, status)] = _collect([_fork(lambda send: send(("result", fn(*args))))])
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    return msgs[-1][1]


# --- the same answers as the private table and the model ---------------------------


def _sequence(rng, pool, steps, capacity, big_calls):
    """Calls (keys, expires, now): small ones with repeats, time mostly creeping with
    jumps (so that entries expire, sweeps run and migrations drop the dead); with
    big_calls nothing expires (the live limit is then exact) and some calls are far
    larger than the capacity (the sizing bound)."""
    now = 1_000
    for _ in range(steps):
        now += rng.choice([0, 1, 7, 40]) if rng.random() < 0.995 else rng.randrange(2_000, 9_000)
        n = rng.choice([0, 1, 3, 8, 25])
        if big_calls and rng.random() < 0.01:
            n = 3 * capacity
        keys = [rng.choice(pool) for _ in range(n)]
        if n > 1 and rng.random() < 0.3:
            keys[rng.randrange(n)] = keys[0]
        life = [10**12 for _ in keys] if big_calls else [rng.randrange(1, 3_000) for _ in keys]
        yield keys, [now + x for x in life], now


@pytest.mark.parametrize(
    ("capacity", "pool_size", "big_calls"),
    [(1_000_000, 20_000, False), (2_880, 4_000, True), (300, 3_000, True)],
)
def test_shared_answers_as_private_and_model(capacity, pool_size, big_calls):
    rng = random.Random(capacity)
    pool = [os.urandom(32) for _ in range(pool_size)]
    shared, private = MemoryReplayCache(capacity, shared=True), MemoryReplayCache(capacity)
    assert shared.shared and not private.shared
    model: dict[bytes, int] = {}
    max_slots = MemoryReplayCache._max_slots(capacity)
    migrations = refused = 0
    was_migrating = False
    for step, (keys, expires, now) in enumerate(_sequence(rng, pool, 4_000, capacity, big_calls)):
        want = model_states(model, keys, expires, now, capacity)
        assert shared.check_and_record(keys, expires, now) == want, step
        assert private.check_and_record(keys, expires, now) == want, step
        # (Their upkeep differs: each has its own hash seed, so its own occupancy.)
        up = shared._upkeep()
        assert up["slots"] <= max_slots and private._upkeep()["slots"] <= max_slots
        migrations += up["migrating"] and not was_migrating
        was_migrating = bool(up["migrating"])
        refused += NO_ROOM in want
        if step % 50 == 0:
            assert shared.live(now) == private.live(now) == sum(e >= now for e in model.values())
    assert migrations >= (4 if capacity > 1_000 else 1)
    assert (refused > 0) == big_calls


def test_max_slots_bounds_the_sizing_rule():
    # A call far larger than the capacity: no table beyond the bound (the shared
    # halves), and no call refused wholesale for lack of memory.
    for capacity in [1, 100, 3_000, 20_000]:
        bound = MemoryReplayCache._max_slots(capacity)
        assert bound >= 1024 and bound & (bound - 1) == 0
        assert bound * 7 // 16 >= capacity and (bound == 1024 or bound * 7 // 32 < capacity)
        for shared in (False, True):
            c = MemoryReplayCache(capacity, shared=shared)
            model: dict[bytes, int] = {}
            for now in range(1, 4):
                keys = [os.urandom(32) for _ in range(4 * capacity + 2_000)]
                expires = [10**12] * len(keys)
                assert c.check_and_record(keys, expires, now) == model_states(
                    model, keys, expires, now, capacity
                )
                assert c._upkeep()["slots"] <= bound
            assert c.live(10) == capacity


def test_capacity_beyond_any_memory():
    # Private: the limit is never reached, so the table only grows as keys come.  Shared:
    # no region can be reserved for it: refused when made, not when it fills.
    huge = 2**64 - 1
    assert MemoryReplayCache._max_slots(huge) == 0
    c = MemoryReplayCache(huge)
    keys = [os.urandom(32) for _ in range(5_000)]
    assert c.check_and_record(keys, [10**12] * len(keys), 1) == [FRESH] * len(keys)
    assert c.check_and_record(keys[:10], [10**12] * 10, 2) == [REPLAYED] * 10
    with pytest.raises(MemoryError):
        MemoryReplayCache(huge, shared=True)


# --- across processes ---------------------------------------------------------------


def _racer(send, table, keys, seed, go_fd, die=None):
    """Checks every key once, in its own random order, in small batches; reports each
    batch before checking it ("inflight") and its FRESH keys after."""
    rng = random.Random(seed)
    order = list(keys)
    rng.shuffle(order)
    os.read(go_fd, 1)  # everyone starts together
    if die is not None:
        MemoryReplayCache._die_at(*die)
    migrating, i = 0, 0
    while i < len(order):
        n = rng.choice([1, 2, 5, 16, 40])
        batch = order[i : i + n]
        if rng.random() < 0.2:
            batch = [*batch, batch[0]]  # repeated within the call: REPLAYED there
        i += n
        send(("inflight", batch))
        states = table.check_and_record(batch, [10**12] * len(batch), 1_000)
        assert set(states) <= {FRESH, REPLAYED}
        migrating += table._upkeep()["migrating"]
        send(("fresh", [k for k, s in zip(batch, states) if s == FRESH]))
    send(("migrating", migrating))


def _race(table, keys, k, die_child=None, die=None):
    go_r, go_w = os.pipe()
    children = [
        _fork(_racer, table, keys, seed, go_r, die if seed == die_child else None)
        for seed in range(k)
    ]
    os.close(go_r)
    os.write(go_w, b"g" * k)
    os.close(go_w)
    return _collect(children)


def test_each_key_fresh_in_exactly_one_process_through_migrations():
    # Starts at its smallest (1,024 slots), so the racing children migrate it often.
    keys = [os.urandom(32) for _ in range(6_000)]
    table = MemoryReplayCache(100_000, shared=True)
    assert table._upkeep()["slots"] == 1024
    results = _race(table, keys, 4)
    fresh_in: dict[bytes, int] = {}
    migrating = 0
    for msgs, status in results:
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
        for kind, value in msgs:
            if kind == "fresh":
                for key in value:
                    fresh_in[key] = fresh_in.get(key, 0) + 1
            elif kind == "migrating":
                migrating += value
    assert set(fresh_in) == set(keys) and set(fresh_in.values()) == {1}
    assert migrating > 0  # checks made while a migration was under way
    # The parent sees what the children recorded: the same memory.
    assert table.live(1_000) == len(keys)
    assert table._upkeep()["slots"] >= 8192
    assert table.check_and_record(keys[:100], [10**12] * 100, 1_000) == [REPLAYED] * 100


def test_a_process_killed_holding_the_lock_while_others_race():
    keys = [os.urandom(32) for _ in range(4_000)]
    table = MemoryReplayCache(100_000, shared=True)
    # Child 0 kills itself holding the lock, mid-call, at its 300th key.
    results = _race(table, keys, 4, die_child=0, die=(DIE_KEYS, 299))
    (dead_msgs, dead_status), *survivors = results
    assert os.WIFSIGNALED(dead_status) and os.WTERMSIG(dead_status) == signal.SIGKILL
    fresh_in: dict[bytes, int] = {}
    for msgs, _ in results:
        for kind, value in msgs:
            if kind == "fresh":
                for key in value:
                    fresh_in[key] = fresh_in.get(key, 0) + 1
    for msgs, status in survivors:
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
        assert msgs[-1][0] == "migrating"  # went through all its keys
    # The call it died in: those keys may be recorded without any FRESH answer sent.
    assert dead_msgs[-1][0] == "inflight"
    in_flight = set(dead_msgs[-1][1])
    assert set(fresh_in.values()) == {1}  # never accepted twice
    assert set(keys) - set(fresh_in) <= in_flight
    assert table._upkeep()["owner_deaths"] == 1
    # Every key is recorded: none was forgotten.
    assert table.check_and_record(keys, [10**12] * len(keys), 1_000) == [REPLAYED] * len(keys)


def _calls(rng, start, count, now):
    """count calls of 60 new keys, some short-lived, time moving on: the table grows
    from its first size through migrations (start, end, the retired table given back),
    and dead entries are dropped."""
    calls = []
    for _ in range(count):
        now += rng.choice([1, 5, 30])
        keys = [os.urandom(32) for _ in range(60)]
        if start and rng.random() < 0.5:
            keys[0] = rng.choice(start)  # recorded before (live or expired)
        calls.append((keys, [now + rng.choice([200, 10**9]) for _ in keys], now))
        start = [*start, *keys[1:4]]
    return calls


def _dying(send, table, calls, point, after):
    MemoryReplayCache._die_at(point, after)
    for i, (keys, expires, now) in enumerate(calls):
        send(("inflight", i))
        send(("states", i, table.check_and_record(keys, expires, now)))
    send(("survived",))


@pytest.mark.parametrize(
    ("point", "after"),
    [
        (DIE_KEYS, 150),
        (DIE_MIGRATE, 40),
        (DIE_START_RECORDED, 0),
        (DIE_START_HALF, 0),
        (DIE_START_HALF, 2),
        (DIE_END_RECORDED, 0),
        (DIE_END_HALF, 0),
        (DIE_END_HALF, 1),
        (DIE_RELEASE, 0),
    ],
)
def test_killed_at_each_point_nothing_recorded_is_lost(point, after):
    rng = random.Random(point * 10 + after)
    capacity = 200_000
    table = MemoryReplayCache(capacity, shared=True)
    model: dict[bytes, int] = {}
    first = [os.urandom(32) for _ in range(300)]
    assert table.check_and_record(first, [10**12] * 300, 1_000) == [FRESH] * 300
    model_states(model, first, [10**12] * 300, 1_000, capacity)
    calls = _calls(rng, first, 120, 1_000)

    [(msgs, status)] = _collect([_fork(_dying, table, calls, point, after)])
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
        "the death point was not reached",
        msgs[-1:],
    )
    answered = {m[1]: m[2] for m in msgs if m[0] == "states"}
    dead_call = msgs[-1][1]
    assert msgs[-1][0] == "inflight" and set(answered) == set(range(dead_call))
    for i in range(dead_call):  # what it answered before dying was right
        keys, expires, now = calls[i]
        assert answered[i] == model_states(model, keys, expires, now, capacity), i

    def survivor():
        # The first to lock after the death: it must not hang, and sees the death.
        keys, expires, now = calls[dead_call]
        got = []
        for k, e in zip(keys, expires):  # one by one: which of them the dead call recorded
            known = model.get(k, -1) >= now
            [s] = table.check_and_record([k], [e], now)
            assert s == REPLAYED if known else s in (FRESH, REPLAYED), k
            got.append(s)
            model_states(model, [k], [e], now, capacity)  # recorded now, either way
        # Everything answered FRESH before the death is still there...
        now = calls[dead_call][2]
        live = [k for k, e in model.items() if e >= now]
        assert table.check_and_record(live, [10**12] * len(live), now) == [REPLAYED] * len(live)
        # ...and the table goes on exactly as the model, through more migrations.
        for keys, expires, t in _calls(rng, live, 80, now):
            want = model_states(model, keys, expires, t, capacity)
            assert table.check_and_record(keys, expires, t) == want
        up = table._upkeep()
        return up["owner_deaths"], table.live(t), sum(e >= t for e in model.values()), got

    deaths, live, want_live, got = _in_child(survivor)
    assert deaths == 1 and live == want_live
    if point == DIE_KEYS:  # the keys before the death were recorded, the others not
        assert got == [REPLAYED] * (after + 1 - 60 * dead_call) + [FRESH] * (
            60 * (dead_call + 1) - after - 1
        )


def test_private_table_stays_private_across_fork():
    private = MemoryReplayCache(1_000)
    a, b = os.urandom(32), os.urandom(32)
    assert private.check_and_record([a], [10**12], 1) == [FRESH]

    def child(send):
        # Its own copy: what the parent recorded before the fork, nothing after.
        send(private.check_and_record([a, b], [10**12] * 2, 1))

    for msgs, status in _collect([_fork(child), _fork(child)]):
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
        assert msgs == [[REPLAYED, FRESH]]  # b is FRESH in each: no copy sees another's
    assert private.check_and_record([b], [10**12], 1) == [FRESH]  # not the children's
    assert private._upkeep()["owner_deaths"] == 0
