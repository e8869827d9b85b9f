"""pytest-benchmark: the one-time-nonce table (engine/native/replay_table.c).

    .venv/bin/python -m pytest bench/test_replay_bench.py

The server's traffic shape: batches of 20 fresh keys, each kept 65 s, the clock moving
with a fixed rate of keys per second.  One round is 20,000 calls on a table that keeps
its state across rounds, so growth, migrations and the sweeps of expired entries fall
inside the timed rounds (divide by 400,000 for a key; the keys are made beforehand).
"""

from __future__ import annotations

import os

import numpy as np

from engine.replay import MemoryReplayCache

RATE = 21_773  # keys per second
WINDOW_MS = 65_000
BATCH = 20


def test_replay_steady_traffic(benchmark, quick):
    calls = 2_000 if quick else 20_000
    table = MemoryReplayCache()
    batches = [[os.urandom(32) for _ in range(BATCH)] for _ in range(calls)]
    step_ms = BATCH * 1000 / RATE
    clock = {"call": 0}

    def run():
        check, c0 = table.check_and_record, clock["call"]
        for i, keys in enumerate(batches):
            now = 1_000_000 + int((c0 + i) * step_ms)
            check(keys, [now + WINDOW_MS] * BATCH, now)
        clock["call"] = c0 + calls

    benchmark.group = f"replay table, {BATCH} keys a call"
    benchmark.pedantic(run, rounds=5 if quick else 20, iterations=1)
    assert table.live(1_000_000 + int(clock["call"] * step_ms)) > 0


def _slot_keys() -> tuple[bytes, np.ndarray]:
    from engine.redis_replay.store import KEY_PREFIX

    keys = np.frombuffer(os.urandom(128 * 32), dtype=np.uint8).reshape(128, 32)
    return KEY_PREFIX, keys


def test_redis_slots_native(benchmark):
    """A batch's Redis Cluster slots in the core: 128 keys, one call."""
    from engine import _core
    from engine.redis_replay.cluster import key_slot

    prefix, keys = _slot_keys()
    benchmark.group = "redis cluster slots, 128 keys"
    slots = benchmark(_core.redis_slots, prefix, keys)
    assert slots.tolist() == [key_slot(prefix + k.tobytes()) for k in keys]


def test_redis_slots_python_reference(benchmark):
    """The same 128 slots with the Python reference, looped per key."""
    from engine.redis_replay.cluster import key_slot

    prefix, keys = _slot_keys()
    rows = [k.tobytes() for k in keys]
    benchmark.group = "redis cluster slots, 128 keys"
    slots = benchmark(lambda: [key_slot(prefix + k) for k in rows])
    assert len(slots) == 128
