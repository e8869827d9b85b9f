"""The fleet's shared replay store (engine.redis_replay) against the in-process table,
and its client against redis-py, all against real redis-server processes started here
(no persistence, ``noeviction``, free loopback ports; engine/tools/redis_process.py).

Rows, each subject and baseline measured in the same run, in alternating rounds (the
median round counts, the notes give the spread):

1. store round trip per batch: ``RedisReplayStore.check_and_record`` (as the server
   configures it: the native table in front, safe retries on, anonymous keys) for
   batches of 1, 32 and 128 fresh keys against one Redis, baseline the in-process
   ``MemoryReplayCache.check_and_record`` on the same keys;
2. client speed on one connection, batch 128: the store's path (the pipeline packed
   and its answers read in the core, ``_core.redis_set_nx_pipeline``; one blocking
   socket, hiredis parsing) against
   redis-py's ``pipeline(transaction=False)`` issuing the same
   ``SET key 1 NX PXAT expiry GET`` commands (redis-py parses with hiredis here);
3. the engine end to end (``python -m engine serve``) with ``replay.redis_url`` set (on
   a Redis ``init_store`` marked) against the same server with the in-process table,
   driven by the load generator as bench/compare_server.py drives it (its functions):
   peak (closed loop) and an open loop at half the in-process peak: CPU per request
   (the server's ``status`` cpu_s over each run, divided by the requests answered)
   and p99; the brief's bound: the shared store costs at most a tenth of a request's
   CPU (ratio in-process / Redis at least 1 / 1.1);
4. Redis Cluster, batch 128: the store with 3 masters (each batch split into one
   pipeline per master, all sent before any is read) against the store on one Redis;
5. one, two and three engine nodes behind HAProxy (engine.tools.fleet, the shipped
   deploy/haproxy.cfg, PROXY protocol, the shared Redis) against one node reached
   directly with the same store: peak (closed loop) and CPU per request of the nodes
   and HAProxy together.  On a 2-core machine every node shares the same core, so this
   shows what the balancer and more processes cost, not how a fleet scales.

Where the machine has two cores or more, the timed client (this process for rows 1, 2
and 4, the engine server for row 3) runs on core 0 and every redis-server and the load
generator on core 1 (``taskset``), so the figures are the client's cost with Redis's
work beside it, not on top of it.  Between the rounds of rows 1, 2 and 4 the Redis
keys are dropped (the store's markers kept), so memory stays bounded; every answer is
checked (FRESH for every fresh key, the verdict each presentation was built to draw
end to end).  The sizing figures (memory per live nonce, Redis CPU per key) come out
in the notes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable

import numpy as np

from bench import compare_server as cs
from bench.harness import Row
from engine.tools.redis_process import RedisProcess, redis_cluster, redis_server

TOPIC = "fleet"
WORK = cs.ROOT / "var" / "bench" / "fleet"
HORIZON_MS = 65_000  # freshness 60 s + skew 5 s: the server's defaults
SKEW_MS = 5_000
BATCHES = (1, 32, 128)
CLIENT_BATCH = 128
CPU_TARGET = round(1 / 1.1, 3)  # at most +10% CPU per request
MEMORY_KEYS = 100_000
# The store's round-trip timeout here (the server's default is 50 ms): this measures
# what the store costs, not the timeout policy, and on a shared 2-core host a Redis
# that shares its core with the load generator sometimes answers later than 50 ms (a
# timeout makes the store answer UNAVAILABLE, BUSY, and the row invalid).
TIMEOUT_MS = 1000


@dataclasses.dataclass(frozen=True)
class Plan:
    rounds: int  # alternating rounds of each micro-benchmark; the median counts
    round_s: float  # timed seconds of each round
    load: cs.Plan
    presign_rps: int  # closed loop: requests signed ahead per second, before a rate is known


FULL = Plan(
    rounds=5,
    round_s=0.4,
    load=cs.Plan(warmup_s=1.0, peak_s=4.0, open_s=6.0, peak_rounds=2, open_rounds=2),
    presign_rps=50_000,
)
QUICK = Plan(rounds=2, round_s=0.05, load=cs.QUICK, presign_rps=40_000)


def _pins() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the timed client's core, Redis's and the load generator's core)."""
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ("taskset", "-c", "0"), ("taskset", "-c", "1")
    return (), ()


@contextlib.contextmanager
def _on_core0(pinned: bool):
    """This process on core 0 while it times a client (restored afterwards)."""
    if not pinned:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _keys(calls: int, batch: int) -> np.ndarray:
    return np.frombuffer(os.urandom(calls * batch * 32), dtype=np.uint8).reshape(calls, batch, 32)


def _alternate(
    fns: dict[str, Callable[[np.ndarray], int]],
    batch: int,
    plan: Plan,
    between: Callable[[], None],
    cpu: Callable[[], float],
) -> tuple[dict[str, list[float]], int, dict[str, int], dict[str, float], dict[str, float]]:
    """Seconds per call of each ``fn`` (called with one batch of fresh keys, returning
    how many answers were wrong), per round, in alternating rounds; and the wrong
    answers in all; per ``fn``, the keys timed, the CPU seconds ``cpu`` (Redis's) grew by
    inside the timed rounds, and this thread's own CPU seconds in them (the client's).
    Keys are made before each round's clock starts."""
    per_call: dict[str, float] = {}
    wrong = 0
    for name, fn in fns.items():  # calibration (and warm-up): how many calls fill a round
        keys = _keys(20, batch)
        t0 = time.perf_counter()
        for i in range(20):
            wrong += fn(keys[i])
        per_call[name] = (time.perf_counter() - t0) / 20
    between()
    out: dict[str, list[float]] = {name: [] for name in fns}
    timed = dict.fromkeys(fns, 0)
    spent = dict.fromkeys(fns, 0.0)
    own = dict.fromkeys(fns, 0.0)
    for _ in range(plan.rounds):
        for name, fn in fns.items():
            calls = int(min(max(plan.round_s / per_call[name], 10), 50_000))
            keys = _keys(calls, batch)
            c0, o0 = cpu(), time.thread_time()
            t0 = time.perf_counter()
            for i in range(calls):
                wrong += fn(keys[i])
            out[name].append((time.perf_counter() - t0) / calls)
            spent[name] += cpu() - c0
            own[name] += time.thread_time() - o0
            timed[name] += calls * batch
            between()
    return out, wrong, timed, spent, own


def _spread_us(values: list[float]) -> str:
    return " / ".join(f"{v * 1e6:,.1f}" for v in values)


def _fresh_check(answers) -> int:
    return sum(1 for a in answers if a != 0)


def _redis_store(**kw):
    from engine.redis_replay import RedisReplayStore
    from engine.replay import MemoryReplayCache

    store = RedisReplayStore(
        horizon_ms=HORIZON_MS,
        skew_ms=SKEW_MS,
        timeout_ms=TIMEOUT_MS,
        local=MemoryReplayCache(),
        **kw,
    )
    store.connect()
    return store


def _store_fn(store) -> Callable[[np.ndarray], int]:
    def fn(keys: np.ndarray) -> int:
        now = int(time.time() * 1000)
        expires = np.full(len(keys), now + HORIZON_MS, dtype=np.uint64)
        return _fresh_check(store.check_and_record(keys, expires, now))

    return fn


# --- rows 1, 2, 4: the store and the clients ---------------------------------------------------


def _store_rows(redis: RedisProcess, plan: Plan, pinned: bool) -> list[Row]:
    from engine.redis_replay import init_store
    from engine.replay import MemoryReplayCache

    init_store(redis_url=redis.url)
    store = _redis_store(redis_url=redis.url)
    memory = [MemoryReplayCache()]

    def between() -> None:
        # Fresh tables each round (the keys here never expire within a run, and a
        # table holds 10 million), Redis emptied: every round starts alike.
        memory[0] = MemoryReplayCache()
        store.local = MemoryReplayCache()
        redis.empty_keeping_markers()

    def in_memory(keys: np.ndarray) -> int:
        return _store_fn(memory[0])(keys)

    rows = []
    try:
        for batch in BATCHES:
            with _on_core0(pinned):
                times, wrong, timed, spent, own = _alternate(
                    {"redis": _store_fn(store), "memory": in_memory},
                    batch,
                    plan,
                    between,
                    redis.cpu_s,
                )
            r_us = statistics.median(times["redis"]) * 1e6
            m_us = statistics.median(times["memory"]) * 1e6
            rows.append(
                Row(
                    TOPIC,
                    f"store round trip, batch {batch}, one Redis",
                    "RedisReplayStore",
                    r_us,
                    "MemoryReplayCache",
                    m_us,
                    unit="us/batch",
                    higher_is_better=False,
                    valid=not wrong,
                    note=(
                        f"median of {plan.rounds} alternating rounds: RedisReplayStore "
                        f"{batch * 1e6 / r_us:,.0f} keys/s ({_spread_us(times['redis'])} us), "
                        f"MemoryReplayCache {batch * 1e6 / m_us:,.0f} keys/s "
                        f"({_spread_us(times['memory'])} us); the store with the native "
                        "table in front, safe retries on, anonymous keys (no tags); "
                        "client CPU (this thread) per batch: RedisReplayStore "
                        f"{own['redis'] * 1e6 * batch / max(timed['redis'], 1):,.1f} us, "
                        "MemoryReplayCache "
                        f"{own['memory'] * 1e6 * batch / max(timed['memory'], 1):,.1f} us; "
                        "redis-server CPU in the timed rounds: "
                        f"{spent['redis'] * 1e6 / max(timed['redis'], 1):.2f} us per key; "
                        + (f"{wrong} WRONG ANSWERS" if wrong else "every key FRESH")
                    ),
                )
            )
    finally:
        store.close()
    return rows


def _client_row(redis: RedisProcess, plan: Plan, pinned: bool) -> Row:
    import redis as redis_py

    from engine import _core
    from engine.redis_replay.resp import Connection, parse_url
    from engine.redis_replay.store import KEY_PREFIX, MARKER_KEY, NO_TAG

    conn = Connection(parse_url(redis.url))
    conn.connect(time.monotonic() + 5)
    client = redis_py.Redis(host="127.0.0.1", port=redis.port, db=0)
    parser = type(client.connection_pool.get_connection("PING")._parser).__name__

    def hand(keys: np.ndarray) -> int:
        # The store's own path: the pipeline packed and its answers read in the core
        # (the marker's GET at its head, as every batch of the store sends it).
        exp = np.full(len(keys), int(time.time() * 1000) + HORIZON_MS, dtype=np.uint64)
        cmds = _core.redis_set_nx_pipeline(MARKER_KEY, KEY_PREFIX, keys, exp, None, NO_TAG)
        replies = conn.call(cmds, len(keys) + 1, time.monotonic() + 5)
        states_, _ = _core.redis_set_nx_answers(replies[1:], None)
        return int((states_ != 0).sum())

    def with_redis_py(keys: np.ndarray) -> int:
        exp = int(time.time() * 1000) + HORIZON_MS
        pipe = client.pipeline(transaction=False)
        for k in keys:
            pipe.set(KEY_PREFIX + k.tobytes(), NO_TAG, nx=True, pxat=exp, get=True)
        replies = pipe.execute()
        return sum(1 for r in replies if r is not None)

    try:
        with _on_core0(pinned):
            times, wrong, timed, spent, own = _alternate(
                {"hand": hand, "redis-py": with_redis_py},
                CLIENT_BATCH,
                plan,
                redis.empty_keeping_markers,
                redis.cpu_s,
            )
    finally:
        conn.close()
        client.close()
    h = CLIENT_BATCH / statistics.median(times["hand"])
    p = CLIENT_BATCH / statistics.median(times["redis-py"])
    return Row(
        TOPIC,
        f"client, one connection, pipelines of {CLIENT_BATCH} SET NX PXAT GET",
        "the store's RESP (core) + hiredis",
        h,
        f"redis-py {redis_py.__version__} pipeline",
        p,
        unit="keys/s",
        valid=not wrong,
        note=(
            f"median of {plan.rounds} alternating rounds; us per pipeline: the store's "
            f"{_spread_us(times['hand'])}, redis-py {_spread_us(times['redis-py'])} "
            f"(its parser: {parser}); both make the same key bytes from the same array "
            "and check every reply is nil; client CPU per key: the store's "
            f"{own['hand'] * 1e6 / max(timed['hand'], 1):.2f} us, redis-py "
            f"{own['redis-py'] * 1e6 / max(timed['redis-py'], 1):.2f} us; "
            "redis-server CPU in the timed rounds per key: "
            f"the store's {spent['hand'] * 1e6 / max(timed['hand'], 1):.2f} us, redis-py "
            f"{spent['redis-py'] * 1e6 / max(timed['redis-py'], 1):.2f} us"
            + (f"; {wrong} WRONG ANSWERS" if wrong else "")
        ),
    )


def _cluster_row(redis: RedisProcess, plan: Plan, pinned: bool, redis_pin) -> Row:
    from engine.redis_replay import init_store
    from engine.replay import MemoryReplayCache

    with redis_cluster(WORK / "cluster", 3, prefix=redis_pin) as cluster:
        init_store(seeds=cluster.seeds)
        clustered = _redis_store(seeds=cluster.seeds)
        single = _redis_store(redis_url=redis.url)

        def between() -> None:
            clustered.local = MemoryReplayCache()
            single.local = MemoryReplayCache()
            cluster.empty_keeping_markers()
            redis.empty_keeping_markers()

        try:
            with _on_core0(pinned):
                times, wrong, timed, spent, own = _alternate(
                    {"cluster": _store_fn(clustered), "single": _store_fn(single)},
                    CLIENT_BATCH,
                    plan,
                    between,
                    lambda: cluster.cpu_s() + redis.cpu_s(),
                )
        finally:
            clustered.close()
            single.close()
    c = CLIENT_BATCH / statistics.median(times["cluster"])
    s = CLIENT_BATCH / statistics.median(times["single"])
    return Row(
        TOPIC,
        f"Redis Cluster, 3 masters, batch {CLIENT_BATCH}",
        "RedisReplayStore(seeds=...)",
        c,
        "RedisReplayStore, one Redis",
        s,
        unit="keys/s",
        valid=not wrong,
        note=(
            f"median of {plan.rounds} alternating rounds; us per batch: cluster "
            f"{_spread_us(times['cluster'])}, one Redis {_spread_us(times['single'])}; "
            "client CPU per key: cluster "
            f"{own['cluster'] * 1e6 / max(timed['cluster'], 1):.2f} us, one Redis "
            f"{own['single'] * 1e6 / max(timed['single'], 1):.2f} us; "
            f"redis-server CPU per key timed: the 3 masters "
            f"{spent['cluster'] * 1e6 / max(timed['cluster'], 1):.2f} us, the one "
            f"{spent['single'] * 1e6 / max(timed['single'], 1):.2f} us; all "
            "Redis processes on one core here" + (f"; {wrong} WRONG ANSWERS" if wrong else "")
        ),
    )


def _memory_per_nonce(redis: RedisProcess) -> str:
    """used_memory growth per key, for the two values the store writes."""
    from engine.redis_replay.resp import Connection, pack, parse_url
    from engine.redis_replay.store import KEY_PREFIX, NO_TAG

    out = []
    for label, value in (("no tag", NO_TAG), ("16-byte tag", b"t" * 16)):
        redis.command_raw("FLUSHALL", "SYNC")
        before = int(redis.info("memory")["used_memory"])
        exp = b"%d" % (int(time.time() * 1000) + 600_000)
        keys = _keys(1, MEMORY_KEYS)[0]
        cmds = b"".join(
            pack(b"SET", KEY_PREFIX + k.tobytes(), value, b"NX", b"PXAT", exp, b"GET") for k in keys
        )
        conn = Connection(parse_url(redis.url))
        conn.connect(time.monotonic() + 5)
        try:
            conn.call(cmds, MEMORY_KEYS, time.monotonic() + 30)
        finally:
            conn.close()
        mem = redis.info("memory")
        dbsize = redis.command_raw("DBSIZE")
        per = (int(mem["used_memory"]) - before) / MEMORY_KEYS
        out.append(f"{per:.0f} B ({label}, {dbsize:,} keys)")
    redis.command_raw("FLUSHALL", "SYNC")
    return (
        f"memory per live nonce (INFO used_memory growth over {MEMORY_KEYS:,} keys "
        f"{KEY_PREFIX.decode()}<32 bytes> with an expiry): " + ", ".join(out)
    )


# --- row 3: the engine end to end ---------------------------------------------------------------


def _engine_rows(redis: RedisProcess, plan: Plan, server_pin, load_pin) -> list[Row]:
    from engine.redis_replay import init_store

    redis.command_raw("FLUSHALL", "SYNC")
    init_store(redis_url=redis.url)
    corpus_dir = cs.corpus()
    cfg = cs.engine_config(corpus_dir)
    lp = plan.load
    servers: dict[str, cs.ServerProcess] = {}
    redis_cpu: dict[int, float] = {}
    try:
        serve = [*server_pin, *cs._py("-m", "engine", "serve", "--config", str(cfg))]
        servers["memory"] = cs.ServerProcess("fleet-memory", serve)
        servers["redis"] = cs.ServerProcess(
            "fleet-redis",
            [
                *serve,
                "--set",
                f"replay.redis_url={redis.url}",
                "--set",
                f"replay.redis_timeout_ms={TIMEOUT_MS}",
            ],
        )
        st = cs.engine_status(servers["redis"].port)["replay_store"]
        if st.get("kind") != "redis" or st.get("state") != "up":
            raise RuntimeError(f"the Redis-backed server's replay store: {st}")

        def runner(name, mode, seconds, label):
            def go(r):
                c0 = redis.cpu_s()
                x = cs.load(
                    servers[name],
                    corpus_dir,
                    mode(r),
                    seconds,
                    lp,
                    f"fleet-{name}-{label}-{r + 1}",
                    status=True,
                    prefix=load_pin,
                )
                redis_cpu[id(x)] = redis.cpu_s() - c0
                return x

            return go

        peak: dict[str, list[cs.Load]] = {"memory": [], "redis": []}

        def closed(name):
            def mode(r):
                done = peak[name]
                rate = max(x.throughput for x in done) * 1.3 if done else plan.presign_rps
                n = int(rate * (lp.warmup_s + lp.peak_s)) + cs.CONCURRENCY
                return ["--concurrency", str(cs.CONCURRENCY), "--presign", str(n)]

            return mode

        cs._alternating(
            lp.peak_rounds,
            {n: runner(n, closed(n), lp.peak_s, "peak") for n in ("memory", "redis")},
            peak,
        )
        half = max(1.0, round(max(x.throughput for x in peak["memory"]) / 2))

        def opened(r):
            return ["--rate", f"{half:g}", "--presign"]

        equal = cs._alternating(
            lp.open_rounds,
            {n: runner(n, opened, lp.open_s, "half") for n in ("memory", "redis")},
        )
    finally:
        for s in servers.values():
            s.stop()

    def cpu_per_1k(runs: list[cs.Load]) -> float:
        cpu = sum(x.status[1]["cpu_s"] - x.status[0]["cpu_s"] for x in runs)
        return 1000 * cpu / max(sum(x.answered for x in runs), 1)

    def redis_per_1k(runs: list[cs.Load]) -> float:
        return 1000 * sum(redis_cpu[id(x)] for x in runs) / max(sum(x.answered for x in runs), 1)

    def med_p99(runs: list[cs.Load]) -> float:
        return statistics.median(x.p99_ms for x in runs)

    rows = []
    pin = " ".join(server_pin) or "no"
    for label, runs, what in (
        ("peak", peak, f"closed loop, {cs.CONCURRENCY} in flight"),
        ("half", equal, f"open loop at {half:,.0f} req/s = in-process peak / 2"),
    ):
        text, valid = cs._faults(runs)
        m, r = runs["memory"], runs["redis"]
        limits = cs._limits(runs)
        common = cs._note(
            text,
            limits,
            cs._ran_out(runs),
            f"Redis-backed best round {max(r, key=lambda x: x.throughput).cpu_note()}",
            f"server pinned: {pin}; load generator and redis-server: "
            f"{' '.join(load_pin) or 'not pinned'}",
        )
        if label == "peak":
            rows.append(
                Row(
                    TOPIC,
                    f"engine peak, {what}",
                    "Redis replay store",
                    max(x.throughput for x in r),
                    "in-process table",
                    max(x.throughput for x in m),
                    unit="req/s",
                    valid=valid,
                    note=cs._note(
                        f"best of {lp.peak_rounds} alternating rounds of {lp.peak_s:g} s; "
                        f"Redis {cs._spread(r, lambda x: f'{x.throughput:,.0f}')}, "
                        f"in-process {cs._spread(m, lambda x: f'{x.throughput:,.0f}')} req/s",
                        common,
                        f"command: {max(r, key=lambda x: x.throughput).command}",
                    ),
                )
            )
        rows.append(
            Row(
                TOPIC,
                f"engine CPU s per 1,000 requests, {what}",
                "Redis replay store",
                cpu_per_1k(r),
                "in-process table",
                cpu_per_1k(m),
                unit="CPU s",
                higher_is_better=False,
                target=None if plan is QUICK else CPU_TARGET,
                valid=valid,
                note=(
                    f"{text}; the server's status cpu_s over every round ({len(r)} each), divided "
                    "by the requests answered (warm-up included); per round, Redis "
                    + cs._spread(r, lambda x: f"{cpu_per_1k([x]):.4f}")
                    + ", in-process "
                    + cs._spread(m, lambda x: f"{cpu_per_1k([x]):.4f}")
                    + f"; redis-server's own CPU: {redis_per_1k(r):.4f} s per 1,000 "
                    f"requests (not in the subject's figure); target: the shared store "
                    f"costs at most +10% of a request's CPU (ratio >= {CPU_TARGET})"
                ),
            )
        )
        rows.append(
            Row(
                TOPIC,
                f"engine p99, {what}",
                "Redis replay store",
                med_p99(r),
                "in-process table",
                med_p99(m),
                unit="ms",
                higher_is_better=False,
                valid=valid,
                note=(
                    f"{text}; corrected p99, median of {len(r)} alternating rounds; Redis "
                    + cs._spread(r, lambda x: f"{x.p99_ms:.2f}")
                    + ", in-process "
                    + cs._spread(m, lambda x: f"{x.p99_ms:.2f}")
                    + " ms"
                    + (f"; {limits}" if limits else "")
                ),
            )
        )
    return rows


class _FleetTarget:
    """What cs.load needs of a server, for a fleet behind HAProxy: the balancer's
    address, and the CPU of every node and of HAProxy together."""

    def __init__(self, fleet) -> None:
        self.fleet = fleet
        self.port = fleet.layout.front_port

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        procs = [n for n in self.fleet.nodes if n is not None]
        assert self.fleet.haproxy is not None and self.fleet.haproxy.proc is not None
        return [p.pid for p in procs] + [self.fleet.haproxy.proc.pid]

    def cpu_s(self) -> float:
        return sum(_process_cpu_s(pid) for pid in self.pids())


def _process_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pin_all_threads(pids: list[int], pin: tuple[str, ...]) -> None:
    """taskset -a: every thread of each process (its verification threads included)."""
    if pin:
        for pid in pids:
            subprocess.run(["taskset", "-a", "-cp", pin[-1], str(pid)], check=True,
                           capture_output=True)  # fmt: skip


def _peak_runner(subject, done: list, corpus_dir, plan: Plan, label: str, load_pin):
    """One closed-loop round against ``subject``, offered 1.3 x the best rate so far."""
    lp = plan.load

    def go(r: int):
        rate = max(x.throughput for x in done) * 1.3 if done else plan.presign_rps
        n = int(rate * (lp.warmup_s + lp.peak_s)) + cs.CONCURRENCY
        mode = ["--concurrency", str(cs.CONCURRENCY), "--presign", str(n)]
        return cs.load(
            subject, corpus_dir, mode, lp.peak_s, lp, f"fleet-{label}-{r + 1}", prefix=load_pin
        )

    return go


def _balancer_rows(plan: Plan, server_pin, load_pin) -> list[Row]:
    """One node direct against 1, 2 and 3 nodes behind HAProxy, all on one Redis."""
    from engine.tools.fleet import Fleet, FleetLayout

    corpus_dir = cs.corpus()
    cfg = cs.engine_config(corpus_dir)
    lp = plan.load
    rows: list[Row] = []
    results: dict[str, list[cs.Load]] = {}
    counts = (1, 3) if plan is QUICK else (1, 2, 3)
    for nodes in counts:
        layout = FleetLayout.free(nodes)
        fleet = Fleet(cfg, layout, WORK / f"fleet-{nodes}")
        fleet.start()
        direct = None
        try:
            target = _FleetTarget(fleet)
            _pin_all_threads(target.pids(), server_pin)
            assert fleet.redis is not None
            _pin_all_threads([fleet.redis.proc.pid], load_pin)  # type: ignore[union-attr]
            if nodes == 1:
                serve = [*server_pin, *cs._py("-m", "engine", "serve", "--config", str(cfg))]
                direct = cs.ServerProcess(
                    "fleet-direct", [*serve, "--set", f"replay.redis_url={layout.redis_url}"]
                )

            runs: dict[str, list[cs.Load]] = {"fleet": []}
            subjects: dict[str, object] = {"fleet": target}
            if direct is not None:
                runs["direct"] = []
                subjects["direct"] = direct
            cs._alternating(
                lp.peak_rounds,
                {
                    name: _peak_runner(subject, runs[name], corpus_dir, plan, f"{name}-{nodes}",
                                       load_pin)
                    for name, subject in subjects.items()
                },
                runs,
            )  # fmt: skip
            results[f"{nodes}"] = runs["fleet"]
            if "direct" in runs:
                results["direct"] = runs["direct"]
        finally:
            if direct is not None:
                direct.stop()
            fleet.stop()
    base = results["direct"]
    for nodes in (str(n) for n in counts):
        runs = results[nodes]
        best, ref = max(runs, key=lambda x: x.throughput), max(base, key=lambda x: x.throughput)
        rows.append(
            Row(
                topic="fleet",
                what=f"peak through HAProxy, {nodes} node(s), closed loop, 256 in flight",
                subject=f"HAProxy + {nodes} node(s)",
                subject_rate=best.throughput,
                baseline="one node, direct",
                baseline_rate=ref.throughput,
                unit="req/s",
                note=(
                    f"best of {len(runs)} alternating rounds; CPU s per 1,000 requests "
                    f"(nodes + HAProxy): {1000 * best.server_cpu_s / best.answered:.3f} "
                    f"against {1000 * ref.server_cpu_s / ref.answered:.3f} direct; "
                    f"p99 {best.p99_ms:.2f} against {ref.p99_ms:.2f} ms; "
                    + "; ".join(best.faults or ["0 mismatches, errors or BUSY"])
                    + "; every node and HAProxy on one core, the load generator and Redis on "
                    "the other: this shows the balancer's and the extra processes' cost, "
                    "not scaling"
                ),
            )
        )
    return rows


def run(quick: bool) -> list[Row]:
    plan = QUICK if quick else FULL
    server_pin, redis_pin = _pins()
    pinned = bool(server_pin)
    WORK.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    with redis_server(WORK / "redis", prefix=redis_pin) as redis:
        rows += _store_rows(redis, plan, pinned)
        rows.append(_client_row(redis, plan, pinned))
        rows.append(_cluster_row(redis, plan, pinned, redis_pin))
        memory_note = _memory_per_nonce(redis)
        rows[0].note += "; " + memory_note
        rows += _engine_rows(redis, plan, server_pin, redis_pin)
    rows += _balancer_rows(plan, server_pin, redis_pin)
    return rows


def _main() -> None:  # python -m bench.compare_fleet: this topic alone, for a closer look
    from bench.harness import format_table

    print(format_table(run(quick=bool(os.environ.get("ESSC_BENCH_QUICK")))))


if __name__ == "__main__":
    _main()
