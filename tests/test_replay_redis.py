"""The shared replay store on real Redis (standalone and a 3-master Cluster), from the
store's interface up to engines that share it: exactly one OK per presentation across
nodes, BUSY when the store cannot answer, the lost-store rule after a restart or a
flush, safe retries across nodes."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from realservers import RedisServer, redis_cluster, redis_server
from replay_model import model_states

from engine import _core
from engine import replay as states
from engine.redis_replay.cluster import crc16, key_slot
from engine.redis_replay.resp import StoreFailure, parse_url
from engine.redis_replay.store import KEY_PREFIX, RedisReplayStore, init_store
from engine.server.config import ConfigError
from engine.verdicts import Verdict
from engine.wire.client import Client

HORIZON_MS, SKEW_MS = 65_000, 5_000


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


def keys(n: int) -> np.ndarray:
    return np.frombuffer(os.urandom(32 * n), dtype=np.uint8).reshape(n, 32)


def store(url: str = "", seeds=(), **kwargs) -> RedisReplayStore:
    kwargs.setdefault("local", _core.ReplayTable(100_000))
    # Generous: a loaded test machine must not turn a slow answer into UNAVAILABLE
    # (the timeout has its own test).
    kwargs.setdefault("timeout_ms", 2000)
    return RedisReplayStore(
        redis_url=url, seeds=seeds, horizon_ms=HORIZON_MS, skew_ms=SKEW_MS, **kwargs
    )


@pytest.fixture
def redis(tmp_path):
    with redis_server(tmp_path / "redis") as server:
        init_store(redis_url=server.url)
        yield server


class Clock:
    """The server's clock, moved on by the test (time passing without waiting)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def ms(self) -> int:
        return int(self() * 1000)


# --- key slots --------------------------------------------------------------------------


def test_key_slots_are_redis_clusters():
    # Values from the Redis Cluster specification and CRC16/XMODEM's check value.
    assert key_slot(b"foo") == 12182
    assert key_slot(b"123456789") == 0x31C3 % 16384
    assert key_slot(b"{user1000}.following") == key_slot(b"user1000")
    # An empty tag does not count: the whole key is hashed.
    assert key_slot(b"foo{}{bar}") == crc16(b"foo{}{bar}") % 16384
    assert key_slot(b"a{b") == crc16(b"a{b") % 16384  # no closing brace: no tag


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.sampled_from([b"", KEY_PREFIX, b"a{", b"{x", b"}"]),
    rows=st.lists(
        st.binary(min_size=8, max_size=8)
        | st.sampled_from([b"{abc}xyz", b"{}{ab}cd", b"ab}c{de}"]),
        min_size=1,
        max_size=20,
    ),
)
def test_native_slots_equal_the_reference(prefix, rows):
    arr = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), 8)
    got = _core.redis_slots(prefix, arr).tolist()
    assert got == [key_slot(prefix + r) for r in rows]


# --- the store on one Redis -------------------------------------------------------------


def test_fresh_then_replayed_and_the_keys_live_until_their_expiry(redis):
    s = store(redis.url)
    now = int(time.time() * 1000)
    k = keys(20)
    expires = np.arange(20, dtype=np.uint64) + np.uint64(now + 30_000)
    assert s.check_and_record(k, expires, now) == [states.FRESH] * 20
    assert s.check_and_record(k, expires, now) == [states.REPLAYED] * 20
    # Recorded with the expiry asked for, to the millisecond (PXAT).
    for row, exp in zip(k[:3], expires[:3]):
        assert redis.command("PEXPIRETIME", KEY_PREFIX + row.tobytes()) == int(exp)
    s.close()


def test_a_fresh_store_answers_like_the_model(redis):
    """Random batches with repeats inside and across them: the store's answers are the
    reference model's (no expiry within the test, no tags)."""
    s = store(redis.url, local=None)
    rng = random.Random(7)
    pool = [os.urandom(32) for _ in range(60)]
    model: dict[bytes, int] = {}
    now = int(time.time() * 1000)
    for _ in range(25):
        rows = [rng.choice(pool) for _ in range(rng.randrange(1, 40))]
        expires = [now + 60_000] * len(rows)
        want = model_states(model, rows, expires, now, 10**9)
        arr = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), 32)
        assert s.check_and_record(arr, np.array(expires, dtype=np.uint64), now) == want
    s.close()


def test_tags_make_a_repeat_for_the_same_party_only(redis):
    s = store(redis.url)
    now = int(time.time() * 1000)
    k = keys(4)
    exp = np.full(4, now + 60_000, dtype=np.uint64)
    mine = [os.urandom(16) for _ in range(4)]
    assert s.check_and_record(k, exp, now, mine) == [states.FRESH] * 4
    # The local filter has them, but with safe retries the store still decides.
    assert s.check_and_record(k, exp, now, mine) == [states.REPEAT] * 4
    other = [os.urandom(16) for _ in range(4)]
    assert s.check_and_record(k, exp, now, other) == [states.REPLAYED] * 4
    assert s.check_and_record(k, exp, now) == [states.REPLAYED] * 4  # no tag: no repeat
    off = store(redis.url, safe_retries=False)  # another node, repeats switched off
    assert off.check_and_record(k, exp, now, mine) == [states.REPLAYED] * 4
    s.close()
    off.close()


def test_without_safe_retries_the_local_filter_answers_without_the_store(redis):
    s = store(redis.url, safe_retries=False)
    now = int(time.time() * 1000)
    k = keys(10)
    exp = np.full(10, now + 60_000, dtype=np.uint64)
    assert s.check_and_record(k, exp, now) == [states.FRESH] * 10
    redis.kill()  # a local hit needs no round trip: the dead store is not asked
    assert s.check_and_record(k, exp, now) == [states.REPLAYED] * 10
    assert s.check_and_record(keys(3), exp[:3], now) == [states.UNAVAILABLE] * 3
    s.close()


def test_a_dead_store_is_unavailable_and_its_return_is_a_loss(redis):
    clock = Clock()
    s = store(redis.url, clock=clock)
    now = clock.ms()
    exp = np.full(5, now + HORIZON_MS, dtype=np.uint64)  # presentations made now
    accepted = keys(5)
    assert s.check_and_record(accepted, exp, now) == [states.FRESH] * 5
    redis.kill()
    assert s.check_and_record(keys(5), exp, now) == [states.UNAVAILABLE] * 5
    assert s.status()["state"] == "down"
    redis.start()  # empty: everything accepted before is gone

    def answers():
        return s.check_and_record(accepted, exp, now)

    # While backing off the master may still be skipped; once asked again it is up.
    deadline = time.monotonic() + 20
    got = answers()
    while states.UNAVAILABLE in got and time.monotonic() < deadline:
        got = answers()
    # The accepted five are gone from Redis, yet never accepted again: the node's own
    # table still has them, and the lost-store rule refuses whatever is that old.
    assert all(a in (states.REPLAYED, states.LOST) for a in got), got
    made_before = keys(5)
    assert s.check_and_record(made_before, exp, now) == [states.LOST] * 5
    status = s.status()
    assert status["state"] == "up" and status["lost_rule_until_ms"] is not None
    # Presentations made after the rule's reach are accepted.
    clock.offset += (SKEW_MS + 1000) / 1000
    later = clock.ms()
    exp_later = np.full(5, later + HORIZON_MS, dtype=np.uint64)
    assert s.check_and_record(keys(5), exp_later, later) == [states.FRESH] * 5
    s.close()


def test_a_flush_is_a_loss_for_every_node(redis):
    a, b = store(redis.url), store(redis.url)
    now = int(time.time() * 1000)
    exp = np.full(3, now + HORIZON_MS, dtype=np.uint64)
    assert a.check_and_record(keys(3), exp, now) == [states.FRESH] * 3
    assert b.check_and_record(keys(3), exp, now) == [states.FRESH] * 3
    assert redis.command("FLUSHALL") == "OK"
    # A key never seen by anyone, made before the flush: refused by both nodes (the
    # first to notice puts a new marker; the other sees it changed).
    assert a.check_and_record(keys(3), exp, now) == [states.LOST] * 3
    assert b.check_and_record(keys(3), exp, now) == [states.LOST] * 3
    later = now + SKEW_MS + 1
    exp_later = np.full(3, later + HORIZON_MS, dtype=np.uint64)
    assert a.check_and_record(keys(3), exp_later, later) == [states.FRESH] * 3
    assert a.metrics.losses.labels("marker missing")._value.get() == 1
    a.close()
    b.close()


def test_a_store_without_a_marker_is_taken_for_a_lost_one(tmp_path):
    with redis_server(tmp_path / "r") as r:  # not initialised
        s = store(r.url)
        now = int(time.time() * 1000)
        exp = np.full(2, now + HORIZON_MS, dtype=np.uint64)
        assert s.check_and_record(keys(2), exp, now) == [states.LOST] * 2
        with pytest.raises(StoreFailure, match="already initialised"):
            init_store(redis_url=r.url)
        s.close()


def test_init_store_refuses_a_store_holding_nonces(tmp_path):
    with redis_server(tmp_path / "r") as r:
        assert r.command("SET", KEY_PREFIX + b"x" * 32, "1") == "OK"
        with pytest.raises(StoreFailure, match="holds replay keys"):
            init_store(redis_url=r.url)


def test_a_paused_store_times_out_and_recovers(redis):
    s = store(redis.url, timeout_ms=50)
    now = int(time.time() * 1000)
    exp = np.full(4, now + 60_000, dtype=np.uint64)

    def answered() -> list[int]:
        # A slow machine (the sanitizer run) may miss 50 ms on a live Redis too: asked
        # again until it answers, which a paused one never does.
        deadline = time.monotonic() + 20
        got = s.check_and_record(keys(4), exp, now)
        while got != [states.FRESH] * 4 and time.monotonic() < deadline:
            got = s.check_and_record(keys(4), exp, now)
        return got

    assert answered() == [states.FRESH] * 4
    redis.proc.send_signal(signal.SIGSTOP)
    try:
        assert s.check_and_record(keys(4), exp, now) == [states.UNAVAILABLE] * 4
        assert s.metrics.errors.labels("timeout")._value.get() >= 1
    finally:
        redis.proc.send_signal(signal.SIGCONT)
    assert answered() == [states.FRESH] * 4
    s.close()


def test_a_full_store_answers_unavailable_and_forgets_nothing(tmp_path):
    r = RedisServer(tmp_path / "full").start()
    try:
        init_store(redis_url=r.url)
        used = int(str(r.command("INFO", "memory")).split("used_memory:")[1].split()[0])
        assert r.command("CONFIG", "SET", "maxmemory", str(used + 200_000)) == "OK"
        s = store(r.url)
        now = int(time.time() * 1000)
        accepted = []
        for _ in range(200):
            k = keys(200)
            got = np.array(s.check_and_record(k, np.full(200, now + 60_000, np.uint64), now))
            accepted.append(k[got == states.FRESH])
            if (got == states.UNAVAILABLE).any():
                break
        else:
            pytest.fail("Redis never reported itself full")
        assert s.metrics.errors.labels("oom")._value.get() >= 1
        every = np.concatenate(accepted)
        # A full Redis refuses every write, checks of recorded keys included: room
        # again, another node (asking Redis for each key) finds every one recorded.
        assert r.command("CONFIG", "SET", "maxmemory", "0") == "OK"
        fresh_store = store(r.url, local=None)
        answers = fresh_store.check_and_record(
            every, np.full(len(every), now + 60_000, np.uint64), now
        )
        assert set(answers) == {states.REPLAYED}  # nothing accepted was forgotten
        s.close()
        fresh_store.close()
    finally:
        r.stop()


def test_settings_that_cannot_work_are_refused(pki):
    from serving import server_config

    from engine.server.server import Server

    for settings_ in (
        {"replay.redis_url": "http://127.0.0.1:1"},
        {"replay.redis_url": "redis://127.0.0.1:1/zero"},
        {"replay.redis_cluster_nodes": ["127.0.0.1"]},
        {"replay.redis_url": "redis://h:1", "replay.redis_cluster_nodes": ["h:2"]},
        {"replay.redis_url": "redis://h:1", "replay.redis_timeout_ms": 0},
    ):
        with pytest.raises(ConfigError):
            Server(server_config(pki, **settings_))
    assert parse_url("unix:///run/redis.sock?db=3").path == "/run/redis.sock"
    assert parse_url("rediss://:pw@h:6380/2").tls


# --- engines sharing the store ----------------------------------------------------------


async def _answered(client: Client, p: bytes, context=None):
    """A verdict on the card: BUSY (the node's admission, on a loaded machine) is asked
    again, as a client would."""
    for _ in range(50):
        result = await client.verify(p, context=context)
        if result.verdict != Verdict.BUSY:
            return result
        await asyncio.sleep(0.01)
    raise AssertionError(f"BUSY 50 times: {result}")


async def _both(port_a: int, port_b: int, presentations, context=None):
    """Each presentation sent to both nodes at once (64 pairs in flight); the pairs of
    answers."""
    window = asyncio.Semaphore(64)
    async with (
        await Client.connect("127.0.0.1", port_a) as a,
        await Client.connect("127.0.0.1", port_b) as b,
    ):

        async def pair(p: bytes):
            async with window:
                return await asyncio.gather(_answered(a, p, context), _answered(b, p, context))

        return await asyncio.gather(*(pair(p) for p in presentations))


def _exactly_once(pairs):
    for first, second in pairs:
        verdicts = sorted([first.verdict, second.verdict])
        assert verdicts == [Verdict.OK, Verdict.REPLAYED], (first, second)


def test_two_nodes_accept_each_presentation_once(start_server, scenarios, redis):
    nodes = [
        start_server(replay__redis_url=redis.url, replay__redis_timeout_ms=2000) for _ in range(2)
    ]
    presentations = scenarios.presentations([Verdict.OK] * 1500, int(time.time() * 1000))
    pairs = run(_both(nodes[0].port, nodes[1].port, presentations))
    _exactly_once(pairs)
    oks = [sum(p[k].verdict == Verdict.OK for p in pairs) for k in range(2)]
    assert all(oks), oks  # both nodes accepted some: the race was real
    status = nodes[0].server.status()["replay_store"]
    assert status["kind"] == "redis" and status["state"] == "up"


def test_a_restarted_node_does_not_accept_again(start_server, scenarios, redis):
    first = start_server(replay__redis_url=redis.url, replay__redis_timeout_ms=2000)
    presentations = scenarios.presentations([Verdict.OK] * 50, int(time.time() * 1000))

    async def send(port):
        async with await Client.connect("127.0.0.1", port) as c:
            return await c.verify_batch(presentations)

    assert [r.verdict for r in run(send(first.port))] == [Verdict.OK] * 50
    first.stop()
    again = start_server(
        replay__redis_url=redis.url, replay__redis_timeout_ms=2000
    )  # an empty local table
    assert [r.verdict for r in run(send(again.port))] == [Verdict.REPLAYED] * 50


def test_redis_killed_mid_run_is_busy_then_the_lost_store_rule(start_server, scenarios, redis):
    clock = Clock()
    node = start_server(replay__redis_url=redis.url, replay__redis_timeout_ms=2000, clock=clock)

    async def go():
        async with await Client.connect("127.0.0.1", node.port) as c:
            before = scenarios.presentations([Verdict.OK] * 40, clock.ms())
            ok = await c.verify_batch(before[:20])
            assert [r.verdict for r in ok] == [Verdict.OK] * 20, (ok[0], await c.status())
            redis.kill()
            down = await c.verify_batch(before[20:])
            # Nothing that could not be checked is OK: BUSY, saying why.
            assert {r.verdict for r in down} == {Verdict.BUSY}
            assert {r.reason for r in down} == {"replay_store_unavailable"}
            status = await c.status()
            assert status["replay_store"]["state"] == "down"
            redis.start()  # back, and empty
            deadline = time.monotonic() + 20
            again = await c.verify_batch(before)
            while Verdict.BUSY in {r.verdict for r in again} and time.monotonic() < deadline:
                again = await c.verify_batch(before)
            # The twenty accepted are refused (the node's own table, or the rule); the
            # twenty never accepted were made before the loss: refused too.
            assert {r.verdict for r in again} == {Verdict.REPLAYED}
            assert any("lost its data" in (r.reason or "") for r in again[20:])
            clock.offset += (SKEW_MS + 1000) / 1000
            after = scenarios.presentations([Verdict.OK] * 10, clock.ms())
            fine = await c.verify_batch(after)
            assert [r.verdict for r in fine] == [Verdict.OK] * 10
            assert (await c.status())["replay_store"]["state"] == "up"

    run(go())


def test_safe_retries_across_nodes(start_server, scenarios, redis):
    a = start_server(replay__redis_url=redis.url, replay__redis_timeout_ms=2000)
    b = start_server(replay__redis_url=redis.url, replay__redis_timeout_ms=2000)
    off = start_server(
        replay__redis_url=redis.url, replay__redis_timeout_ms=2000, replay__safe_retries=False
    )
    network = {"merchant_id": "m-0042", "terminal_id": "t-7"}

    async def go():
        ps = scenarios.presentations([Verdict.OK] * 3, int(time.time() * 1000))
        async with await Client.connect("127.0.0.1", a.port) as ca:
            first = [await ca.verify(p, context=network) for p in ps]
        assert [r.verdict for r in first] == [Verdict.OK] * 3
        assert not any(r.repeat for r in first)
        async with await Client.connect("127.0.0.1", b.port) as cb:
            retry = await cb.verify_batch(ps, context=network)  # the answer was lost: again
            assert [r.verdict for r in retry] == [Verdict.OK] * 3
            assert all(r.repeat for r in retry)
            assert [r.claims for r in retry] == [r.claims for r in first]
            other = await cb.verify(ps[0], context={"merchant_id": "m-0042", "terminal_id": "t-8"})
            assert other.verdict == Verdict.REPLAYED and not other.repeat
            anonymous = await cb.verify(ps[1])
            assert anonymous.verdict == Verdict.REPLAYED
        async with await Client.connect("127.0.0.1", off.port) as co:
            refused = await co.verify(ps[2], context=network)
            assert refused.verdict == Verdict.REPLAYED and not refused.repeat

    run(go())


def test_a_cluster_of_three_masters_accepts_each_presentation_once(
    start_server, scenarios, tmp_path
):
    with redis_cluster(tmp_path / "cluster") as cluster:
        init_store(seeds=cluster.seeds)
        nodes = [
            start_server(replay__redis_cluster_nodes=cluster.seeds, replay__redis_timeout_ms=2000)
            for _ in range(2)
        ]
        presentations = scenarios.presentations([Verdict.OK] * 600, int(time.time() * 1000))
        pairs = run(_both(nodes[0].port, nodes[1].port, presentations))
        _exactly_once(pairs)
        sizes = [int(n.command("DBSIZE")) for n in cluster.nodes]
        assert all(size > 1 for size in sizes), sizes  # keys on every master (+ its marker)
        assert sum(sizes) == 600 + 3
        status = nodes[0].server.status()["replay_store"]
        assert status["kind"] == "redis_cluster" and len(status["masters"]) == 3


def test_an_evicting_redis_is_never_used(tmp_path):
    """allkeys-lru would forget live nonces when full: the store refuses the master."""
    with redis_server(tmp_path / "r") as r:
        init_store(redis_url=r.url)
        assert r.command("CONFIG", "SET", "maxmemory-policy", "allkeys-lru") == "OK"
        s = store(r.url)
        now = int(time.time() * 1000)
        exp = np.full(2, now + 60_000, dtype=np.uint64)
        assert s.check_and_record(keys(2), exp, now) == [states.UNAVAILABLE] * 2
        assert "noeviction" in s.status()["masters"][0]["last_error"]
        s.close()


def test_the_replay_store_command(tmp_path):
    import json
    import subprocess
    import sys

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "engine", "replay-store", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    with redis_server(tmp_path / "r") as r:
        before = cli("status", "--redis-url", r.url)
        assert before.returncode == 1  # no marker yet: a node would apply the rule
        assert json.loads(before.stdout)["masters"][0]["marker"] is None
        done = cli("init", "--redis-url", r.url)
        assert done.returncode == 0 and r.address in done.stdout
        after = cli("status", "--redis-url", r.url)
        assert after.returncode == 0, after.stdout
        master = json.loads(after.stdout)["masters"][0]
        assert master["marker"] and master["maxmemory_policy"] == "noeviction"
        again = cli("init", "--redis-url", r.url)
        assert again.returncode == 2 and "already initialised" in again.stderr
    assert cli("init", "--redis-url", "http://nowhere").returncode == 2


_replies = st.recursive(
    st.none() | st.integers(-(2**20), 2**20) | st.binary(max_size=12) | st.just(b"127.0.0.1"),
    lambda inner: st.lists(inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=500, deadline=None)
@given(reply=_replies)
def test_any_cluster_slots_reply_is_read_or_refused_cleanly(reply):
    """What a node (or anything on its address) answers to CLUSTER SLOTS either makes a
    slot map or raises one of BAD_REPLY, which the store turns into UNAVAILABLE."""
    from engine.redis_replay.cluster import BAD_REPLY, SLOTS, SlotMap

    try:
        m = SlotMap.from_cluster_slots(reply)
    except BAD_REPLY:
        return
    assert m.owner.shape == (SLOTS,)
    assert int(m.owner.max()) < len(m.masters)


def test_a_real_cluster_slots_reply_is_read(tmp_path):
    from engine.redis_replay.cluster import SlotMap

    with redis_cluster(tmp_path / "c") as cluster:
        import socket

        import hiredis

        from engine.redis_replay.resp import pack

        reader = hiredis.Reader()
        with socket.create_connection(("127.0.0.1", cluster.nodes[0].port)) as s:
            s.sendall(pack(b"CLUSTER", b"SLOTS"))
            while (reply := reader.gets()) is False:
                reader.feed(s.recv(65536))
        m = SlotMap.from_cluster_slots(reply)
        assert m.complete and sorted(p for _, p in m.masters) == sorted(
            n.port for n in cluster.nodes
        )


@settings(max_examples=200, deadline=None)
@given(
    rows=st.integers(0, 40),
    tagged=st.lists(st.booleans(), min_size=40, max_size=40),
    expiry=st.integers(0, 2**64 - 1),
    marker=st.binary(min_size=1, max_size=40),
)
def test_the_native_pipeline_is_the_commands_packed_one_by_one(rows, tagged, expiry, marker):
    from engine.redis_replay.resp import pack
    from engine.redis_replay.store import NO_TAG

    k = keys(rows)
    exp = np.array([expiry - i % 7 if expiry >= 7 else i for i in range(rows)], dtype=np.uint64)
    tags = [os.urandom(16) if tagged[i] else None for i in range(rows)]
    want = pack(b"GET", marker) + b"".join(
        pack(b"SET", KEY_PREFIX + k[i].tobytes(), tags[i] or NO_TAG, b"NX", b"PXAT",
             b"%d" % int(exp[i]), b"GET")
        for i in range(rows)
    )  # fmt: skip
    assert _core.redis_set_nx_pipeline(marker, KEY_PREFIX, k, exp, tags, NO_TAG) == want
    untagged = pack(b"GET", marker) + b"".join(
        pack(b"SET", KEY_PREFIX + k[i].tobytes(), NO_TAG, b"NX", b"PXAT", b"%d" % int(exp[i]),
             b"GET")
        for i in range(rows)
    )  # fmt: skip
    assert _core.redis_set_nx_pipeline(marker, KEY_PREFIX, k, exp, None, NO_TAG) == untagged


def test_the_native_answers():
    from engine.redis_replay.resp import ReplyError

    mine, other = os.urandom(16), os.urandom(16)
    replies = [None, mine, other, b"1", ReplyError("OOM full"), mine]
    states_, errors = _core.redis_set_nx_answers(replies, [mine, mine, mine, None, mine, None])
    assert states_.tolist() == [
        states.FRESH, states.REPEAT, states.REPLAYED, states.REPLAYED, states.UNAVAILABLE,
        states.REPLAYED,  # the same bytes, but this request has no tag: never a repeat
    ]  # fmt: skip
    assert errors == [4]
    assert _core.redis_set_nx_answers([None, b"x"], None)[0].tolist() == [0, 1]
