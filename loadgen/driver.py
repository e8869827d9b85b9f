"""The sending and receiving engine: open- and closed-loop schedulers over pipelined connections.

Open loop (``rate``): a schedule fixes every request's intended send time (constant
spacing or Poisson arrivals) before anything is known about the server.  The sender
sends each request at its time if it can: a presentation must be ready (from the
signing workers) and some connection must have room under ``pipeline``.  When either
is missing it waits, and the requests that fall due meanwhile are sent as soon as it
can, still carrying their intended times: their latency counts from then
(coordinated omission corrected, as wrk2 does).  How long it waited, and why, is
measured, so a run that could not hold its rate says so and says whose fault it was.

Closed loop (``concurrency``): a fixed number of requests in flight, each answer
releasing the next; for peak throughput, not for latency under a given load.

Every answer is checked against the verdict its presentation was built to draw.

Signing ahead (``presign``): on a machine whose cores the server under test shares,
the signing workers' bursts of CPU (a chunk is several milliseconds of one core) take
cores from the server and from the sender just when they are needed, and show up in
the latency measured.  With ``presign`` every request of the run is signed before the
clock starts, and the workers sit idle while it runs.  Presentations stay fresh for the
corpus's freshness window, so such a run must end well inside it (checked up front).
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import dataclasses
import gc
import itertools
import math
import signal
import time
from collections.abc import Callable

import msgpack
import numpy as np

from engine.verdicts import Verdict
from engine.wire.framing import FrameDecoder
from loadgen import stats
from loadgen.sources import Chunk, GeneratorError

OK = int(Verdict.OK)
REPLAYED = int(Verdict.REPLAYED)
BUSY = int(Verdict.BUSY)
N_VERDICTS = len(Verdict)
MAX_EXAMPLES = 10
SOURCE, WINDOW = "source", "window"


@dataclasses.dataclass
class Settings:
    host: str
    port: int
    rate: float | None = None  # open loop: requests per second
    concurrency: int | None = None  # closed loop: requests in flight
    duration: float | None = None  # measured seconds, after the warm-up
    requests: int | None = None  # or: measured requests, after the warm-up
    warmup: float = 0.0
    connections: int = 4
    pipeline: int = 64  # most requests in flight per connection
    arrivals: str = "constant"  # or "poisson"
    interval: float = 1.0
    max_lag_ms: float = 20.0  # sends later than this behind schedule: "behind"
    drain_timeout: float = 10.0  # wait this long for the last answers
    pool_seconds: float = 0.25  # presentations kept ready, in seconds of sending
    max_pool_chunks: int = 16
    max_chunk_age_s: float = 15.0  # older pooled presentations are thrown away
    connect_timeout: float = 10.0
    presign: int = 0  # requests signed before the clock starts (-1: the open-loop schedule's)

    def __post_init__(self):
        if (self.rate is None) == (self.concurrency is None):
            raise ValueError("give exactly one of rate (open loop) and concurrency (closed loop)")
        if (self.duration is None) == (self.requests is None):
            raise ValueError("give exactly one of duration and requests")
        if self.rate is not None and not self.rate > 0:
            raise ValueError("the rate must be positive")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError("the concurrency must be at least 1")
        if self.duration is not None and not self.duration > 0:
            raise ValueError("the duration must be positive")
        if self.requests is not None and self.requests < 1:
            raise ValueError("the request count must be at least 1")
        if self.connections < 1 or self.pipeline < 1:
            raise ValueError("connections and pipeline must be at least 1")
        if self.arrivals not in ("constant", "poisson"):
            raise ValueError("arrivals must be constant or poisson")
        if self.presign < -1:
            raise ValueError("presign must be a request count, or -1 for the whole schedule")
        if self.presign == -1 and self.rate is None:
            raise ValueError(
                "a closed loop has no schedule to sign ahead: give presign a request count"
            )

    @property
    def open_loop(self) -> bool:
        return self.rate is not None

    @property
    def presign_requests(self) -> int:
        """Requests to sign before the clock starts (0: sign during the run)."""
        if self.presign >= 0:
            return self.presign
        n = self.rate * self.warmup + (
            self.requests if self.requests is not None else self.rate * self.duration
        )
        if self.arrivals == "poisson":  # a fixed time holds a random count of arrivals
            n += 6 * math.sqrt(n) + 10
        return math.ceil(n)

    @property
    def planned_s(self) -> float | None:
        """How long the run is meant to send, warm-up included (None: unknown)."""
        if self.duration is not None:
            return self.warmup + self.duration
        if self.rate is not None:
            return self.warmup + self.requests / self.rate
        return None


@dataclasses.dataclass
class RunResult:
    settings: Settings
    batch: int
    outcome_names: list[str]
    started_at: float  # unix time
    elapsed_s: float
    measured_s: float  # from the end of the warm-up to the last measured answer
    counts: stats.Counts  # the measured part
    warmup: stats.Counts
    corrected: object  # HdrHistogram, microseconds
    uncorrected: object
    intervals: list[stats.Interval]
    schedule: stats.Schedule
    mismatch_examples: list[dict]
    error_examples: list[dict]
    sent: int  # requests sent, warm-up included
    aborted: str | None  # why the run stopped early, if it did
    workers: int  # signing worker processes
    corpus: str
    presigned: int = 0  # requests signed before the clock started
    ran_out: bool = False  # the presigned requests were used up before the run's end
    server: dict | None = None  # the server's own figures (loadgen.server_metrics)

    @property
    def failed(self) -> bool:
        c, w = self.counts, self.warmup
        return bool(c.mismatches or w.mismatches or c.error_count or w.error_count or self.aborted)


class _Connection(asyncio.Protocol):
    __slots__ = ("closed", "decoder", "driver", "in_flight", "limit", "out", "rids", "transport")

    def __init__(self, driver: Driver):
        self.driver = driver
        self.decoder = FrameDecoder(1 << 30)
        self.transport: asyncio.Transport | None = None
        self.in_flight = 0
        self.limit = driver.settings.pipeline
        self.out: list[bytes] = []
        self.rids: set[int] = set()
        self.closed = False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        t = time.perf_counter()
        driver = self.driver
        try:
            frames = self.decoder.feed(data)
        except Exception:
            driver._lost(self, "bad_response")
            self.transport.abort()
            return
        for payload in frames:
            driver._on_frame(self, payload, t)
        driver._after_answers(self)

    def connection_lost(self, exc):
        self.closed = True
        self.driver._lost(self, "connection_lost")


TIMER_GRAIN_S = 0.001
PIGGYBACK_LAG_S = 0.0005  # due requests go out with the answers once this late
PRESIGN_MARGIN_S = 10.0  # signed-ahead presentations go out at least this far inside freshness


class _Schedule:
    """Intended send times: constant spacing, or exponential gaps (Poisson arrivals)."""

    def __init__(self, rate: float, arrivals: str, start: float):
        self.gap = 1.0 / rate
        self.start = start
        self.poisson = arrivals == "poisson"
        self.n = 0
        self.t = start
        self._rng = np.random.default_rng()
        self._gaps: list[float] = []

    def advance(self) -> None:
        self.n += 1
        if not self.poisson:
            self.t = self.start + self.n * self.gap  # no accumulated rounding
            return
        if not self._gaps:
            self._gaps = self._rng.exponential(self.gap, 4096).tolist()[::-1]
        self.t += self._gaps.pop()


class Driver:
    def __init__(
        self,
        settings: Settings,
        source,
        *,
        on_interval: Callable[[stats.Interval, Driver], None] | None = None,
        on_mismatch: Callable[[dict], None] | None = None,
        on_measure_start: Callable[[int], object] | None = None,
    ):
        self.settings = settings
        self.source = source
        self.names = source.names
        self.batch = source.batch
        self.on_interval = on_interval
        self.on_mismatch = on_mismatch
        # Called with the requests in flight when the measured phase starts.
        self.on_measure_start = on_measure_start
        self._measure_started: asyncio.Future | None = None
        self.conns: list[_Connection] = []
        self.inflight: dict[int, tuple] = {}
        self._ids = itertools.count(1)
        # The pool of ready requests: chunks, and a cursor into the first.
        self._pool: collections.deque[Chunk] = collections.deque()
        self._cur: Chunk | None = None
        self._cur_i = 0
        self.available = 0
        rpc = source.requests_per_chunk
        if settings.open_loop:
            want = settings.rate * settings.pool_seconds
        else:
            want = settings.concurrency * 2
        self._pool_target = int(min(max(want, 2 * rpc), settings.max_pool_chunks * rpc))
        self._max_age_s = settings.max_chunk_age_s
        self.presigned = 0  # set once the whole run is in the pool (presign)
        self.ran_out = False
        if settings.presign:
            self._pool_target = settings.presign_requests
            self._max_age_s = source.corpus.freshness_ms / 1000 - PRESIGN_MARGIN_S
        self.stale_chunks = 0
        # counts
        self.counts = stats.Counts()
        self.warm_counts = stats.Counts()
        self.mismatch_examples: list[dict] = []
        self.error_examples: list[dict] = []
        self._pairs: dict[int, tuple] = {}
        self._broken_pairs: set[int] = set()
        self.sent = 0
        self.sent_measured = 0
        self.not_sent = 0
        # latency, microseconds: this interval's (all phases) and the measured ones
        self._iv_c = array.array("q")
        self._iv_u = array.array("q")
        self._m_c = array.array("q")
        self._m_u = array.array("q")
        self._m_lag = array.array("q")
        self._iv_lag_max = 0.0
        self._iv = dict.fromkeys(
            ("sent", "answered", "presentations", "mismatches", "errors", "busy"), 0
        )
        self._iv_wait = {SOURCE: 0.0, WINDOW: 0.0}
        self._m_wait = {SOURCE: 0.0, WINDOW: 0.0}
        self.corrected = stats.Recorder()
        self.uncorrected = stats.Recorder()
        self.lag = stats.Recorder()
        self.intervals: list[stats.Interval] = []
        self._waiter: asyncio.Future | None = None
        self._idle: asyncio.Future | None = None
        self._sending = False  # the closed loop sends while this is set
        self._open_sending = False  # the open loop's schedule is running
        self._sched: _Schedule | None = None  # the open loop's, and its end and cutoff
        self._end = self._cutoff = math.inf
        self._left = -1  # measured requests still to send (-1: run by duration)
        self._starved_since: float | None = None
        self._rr = 0
        self._dirty: list[_Connection] = []
        self.phase = "warmup" if settings.warmup > 0 else "measure"
        self.t0 = 0.0
        self.warm_end = 0.0
        self._last_tick = 0.0
        self._last_measured_answer = 0.0
        self._last_answer = 0.0
        self._closing = False
        self._fatal: str | None = None  # the run cannot go on
        self._interrupted: str | None = None  # Ctrl-C: stop sending, drain, report

    # --- running ------------------------------------------------------------------------

    async def run(self) -> RunResult:
        s = self.settings
        loop = asyncio.get_running_loop()
        self.loop = loop
        await self._connect()
        self.source.attach(loop, self._on_chunk, self._abort)
        try:
            await self._prefill()
            hook = self.on_measure_start
            if hook is not None and s.warmup <= 0:
                hook(0)  # before the clock starts, so its time is no request's latency
            started_at = time.time()
            self.t0 = time.perf_counter()
            self.warm_end = self.t0 + s.warmup
            self._last_tick = self.t0
            ticker = loop.create_task(self._ticker())
            measure_timer = None
            if hook is not None and s.warmup > 0:
                measure_timer = loop.call_later(s.warmup, self._measure_start)
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signal.SIGINT, self._interrupt)  # main thread only
            try:
                if s.open_loop:
                    await self._open_loop()
                else:
                    await self._closed_loop()
                self._flush()
                self.phase = "drain"
                if self._fatal is None:
                    await self._drain()
                for rid in list(self.inflight):
                    self._fail(rid, "unanswered", "no answer before the run ended")
            finally:
                ticker.cancel()
                if measure_timer is not None:
                    measure_timer.cancel()  # a run that ended in its warm-up
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(signal.SIGINT)
            self._tick(time.perf_counter())
            if self._measure_started is not None:
                await self._measure_started
        finally:
            if self.presigned:
                gc.unfreeze()
            self.source.detach()
            self._closing = True
            for c in self.conns:
                if c.transport is not None:
                    c.transport.abort()
        self._finish_pairs()
        return self._result(started_at)

    def _measure_start(self) -> None:
        # Off the loop: a blocking call here would hold up the sends due meanwhile.
        self._measure_started = self.loop.run_in_executor(
            None, self.on_measure_start, len(self.inflight)
        )

    async def _connect(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        for _ in range(s.connections):
            conn = _Connection(self)
            await asyncio.wait_for(
                loop.create_connection(lambda c=conn: c, s.host, s.port), s.connect_timeout
            )
            self.conns.append(conn)
        if s.concurrency is not None:  # spread the concurrency over the connections
            per, extra = divmod(s.concurrency, s.connections)
            for k, c in enumerate(self.conns):
                c.limit = per + (k < extra)

    async def _prefill(self) -> None:
        """Fill the pool before the clock starts: worker start-up is not the server's time."""
        self._refill()
        while self.available < self._pool_target:
            if self._fatal is not None:
                raise GeneratorError(self._fatal)
            await self._wait_event(None)
        if self.settings.presign:
            self.presigned = self.available
            self._check_fresh_enough()
            # The signed-ahead pool is long-lived and large: a full collection walking it
            # stalled the sender for over 10 ms.  Frozen, the collector passes it by.
            gc.collect()
            gc.freeze()

    def _check_fresh_enough(self) -> None:
        """A signed-ahead run must end while its oldest presentation is still fresh."""
        planned = self.settings.planned_s
        if planned is None:
            return  # a closed loop by count: stale chunks are dropped, and reported
        oldest = min(c.made_at for c in (self._cur, *self._pool) if c is not None)
        late = time.time() + planned - (oldest + self._max_age_s)
        if late > 0:
            raise GeneratorError(
                f"the first presentation signed ahead is {time.time() - oldest:.1f} s old; "
                f"sending for {planned:g} s more would take it past the freshness window "
                f"({self.source.corpus.freshness_ms / 1000:g} s, less a {PRESIGN_MARGIN_S:g} s "
                f"margin) by {late:.1f} s: shorten the run, add --workers, or sign during "
                "the run (no --presign)"
            )

    # --- the pool -----------------------------------------------------------------------

    def _on_chunk(self, chunk: Chunk) -> None:
        self._pool.append(chunk)
        self.available += len(chunk.frames)
        if self._cur is None:
            self._next_chunk()
        if self._starved_since is not None:
            now = time.perf_counter()
            self._add_wait(SOURCE, now - self._starved_since)
            self._starved_since = None
        self._wake()
        if not self.settings.open_loop and self._sending:
            for c in self.conns:
                self._closed_fill(c)
            self._flush()

    def _next_chunk(self) -> None:
        oldest = time.time() - self._max_age_s
        while self._pool:
            chunk = self._pool.popleft()
            if chunk.made_at >= oldest:
                self._cur, self._cur_i = chunk, 0
                return
            self.stale_chunks += 1  # waited too long: its presentations could be stale
            self.available -= len(chunk.frames)
        self._cur = None

    def _refill(self) -> None:
        if self.presigned:
            return  # the run's requests are all in the pool already
        rpc = self.source.requests_per_chunk
        deficit = self._pool_target - self.available - self.source.pending * rpc
        if deficit > 0:
            self.source.ask(math.ceil(deficit / rpc))

    # --- sending ------------------------------------------------------------------------

    def _send(self, conn: _Connection, intended: float, now: float) -> None:
        chunk = self._cur
        i = self._cur_i
        rid = next(self._ids)
        conn.out.append(chunk.frames[i])
        conn.out.append(rid.to_bytes(8, "big"))
        if len(conn.out) == 2:
            self._dirty.append(conn)
        conn.in_flight += 1
        conn.rids.add(rid)
        measured = intended >= self.warm_end
        self.inflight[rid] = (conn, chunk, i, intended, now, measured)
        self.sent += 1
        self._iv["sent"] += 1
        lag = now - intended
        if lag > self._iv_lag_max:
            self._iv_lag_max = lag
        if measured:
            self.sent_measured += 1
            self._m_lag.append(int(lag * 1e6))
        self.available -= 1
        self._cur_i = i + 1
        if self._cur_i == len(chunk.frames):
            self._next_chunk()
            self._refill()

    def _flush(self) -> None:
        for conn in self._dirty:
            if not conn.closed:
                conn.transport.write(b"".join(conn.out))
            conn.out.clear()
        self._dirty.clear()

    def _free_conn(self) -> _Connection | None:
        conns = self.conns
        n = len(conns)
        for _ in range(n):
            c = conns[self._rr]
            self._rr = (self._rr + 1) % n
            if c.in_flight < c.limit and not c.closed:
                return c
        return None

    async def _open_loop(self) -> None:
        s = self.settings
        self._sched = sched = _Schedule(s.rate, s.arrivals, self.t0)
        self._end = end = self.warm_end + s.duration if s.duration is not None else math.inf
        self._left = s.requests if s.requests is not None else -1
        # Requests due before the end still go out a little after it (a timer is never
        # exact); beyond this grace, those still unsent count as not sent.
        self._cutoff = cutoff = end + s.max_lag_ms / 1000
        perf = time.perf_counter
        self._open_sending = True
        try:
            while self._left != 0 and self._fatal is None and self._interrupted is None:
                t = sched.t
                now = perf()
                if t >= end or now >= cutoff:
                    break
                if t > now:
                    # The loop's timers have a 1 ms grain (libuv): asking for less wakes at
                    # once and spins a core.  Requests that fall due meanwhile go out
                    # together, or sooner with the answers that arrive meanwhile
                    # (_after_answers); latency still counts from their intended times.
                    await asyncio.sleep(max(t - now, TIMER_GRAIN_S))
                    continue
                blocked = self._send_due(now)
                if blocked is SOURCE and self.presigned:
                    self.ran_out = True  # every signed-ahead request is sent: none can come
                    break
                if blocked is not None:
                    started = perf()
                    if blocked is SOURCE:
                        self._refill()
                    await self._wait_event(cutoff - started if end < math.inf else None)
                    self._add_wait(blocked, perf() - started)
        finally:
            self._open_sending = False
        # Due (or overdue) when the run ended and never sent: the generator fell short.
        if s.duration is not None and self._interrupted is None:
            while sched.t < end:
                self.not_sent += 1
                sched.advance()

    def _send_due(self, now: float) -> str | None:
        """Sends the requests due by ``now``; returns what stopped it early, if anything
        (SOURCE: no presentation ready, WINDOW: every pipeline full)."""
        sched, end = self._sched, self._end
        t = sched.t
        blocked = None
        burst = 0
        while t <= now and t < end and self._left != 0:
            if self._cur is None:
                blocked = SOURCE
                break
            conn = self._free_conn()
            if conn is None:
                blocked = WINDOW
                break
            self._send(conn, t, now)
            if t >= self.warm_end and self._left > 0:
                self._left -= 1
            sched.advance()
            t = sched.t
            burst += 1
            if burst == 256:  # a long catch-up burst: keep the send times honest
                self._flush()
                burst = 0
                now = time.perf_counter()
        self._flush()
        return blocked

    async def _closed_loop(self) -> None:
        s = self.settings
        self._left = s.requests if s.requests is not None else -1
        self._sending = True
        end_timer = None
        if s.duration is not None:
            end_timer = self.loop.call_at(
                self.loop.time() + s.warmup + s.duration, self._stop_sending
            )
        for c in self.conns:
            self._closed_fill(c)
        self._flush()
        try:
            while self._sending and self._fatal is None:
                await self._wait_event(None)
        finally:
            if end_timer is not None:
                end_timer.cancel()

    def _abort(self, why: str) -> None:
        if self._fatal is None:
            self._fatal = why
        self._wake()

    def _interrupt(self) -> None:
        self._interrupted = "interrupted (Ctrl-C): sending stopped early, answers drained"
        # A second Ctrl-C is the default one: it ends the process.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            self.loop.remove_signal_handler(signal.SIGINT)
        self._stop_sending()

    def _stop_sending(self) -> None:
        self._sending = False
        self._wake()

    def _closed_fill(self, conn: _Connection) -> None:
        if not self._sending:
            return
        now = time.perf_counter()
        while conn.in_flight < conn.limit and not conn.closed:
            if self._cur is None:
                if self.presigned:
                    self.ran_out = True  # the run ends with its signed-ahead requests
                    self._stop_sending()
                    return
                if self._starved_since is None:
                    self._starved_since = now
                    self._refill()
                return
            self._send(conn, now, now)
            if now >= self.warm_end and self._left > 0:
                self._left -= 1
                if self._left == 0:
                    self._stop_sending()
                    return

    def _after_answers(self, conn: _Connection) -> None:
        if not self.settings.open_loop:
            self._closed_fill(conn)
            self._flush()
        elif self._waiter is not None:
            self._wake()  # a pipeline slot is free again
        elif self._open_sending and self._fatal is None and self._interrupted is None:
            # Answers arrive far more often than the 1 ms timer fires: send what fell due
            # since, nearer its intended time (not at every answer: each send is a write
            # on both sides, and more writes of fewer requests cost the server CPU).
            now = time.perf_counter()
            if self._sched.t + PIGGYBACK_LAG_S <= now < self._cutoff:
                self._send_due(now)
        if self._idle is not None and not self.inflight and not self._idle.done():
            self._idle.set_result(None)

    # --- waiting ------------------------------------------------------------------------

    async def _wait_event(self, timeout: float | None) -> None:
        fut = self.loop.create_future()
        self._waiter = fut
        timer = None
        if timeout is not None:
            timer = self.loop.call_later(max(0.0, timeout), self._wake)
        try:
            await fut
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _add_wait(self, what: str, seconds: float) -> None:
        self._iv_wait[what] += seconds
        if time.perf_counter() >= self.warm_end:
            self._m_wait[what] += seconds

    async def _drain(self) -> None:
        if self.inflight:
            self._idle = self.loop.create_future()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle, self.settings.drain_timeout)

    # --- answers ------------------------------------------------------------------------

    def _on_frame(self, conn: _Connection, payload: bytes, t: float) -> None:
        try:
            msg = msgpack.unpackb(payload, raw=False)
            rid = msg.get("id")
        except Exception:
            self._unattributed("bad_response", "an answer that is not a msgpack map")
            return
        rec = self.inflight.pop(rid, None)
        if rec is None:
            self._unattributed(
                msg.get("error") or "unexpected_response",
                f"{msg.get('message') or 'an answer to no request in flight'} (id {rid})",
            )
            return
        owner, chunk, i, intended, sent, measured = rec
        owner.in_flight -= 1
        owner.rids.discard(rid)
        self._last_answer = t
        counts = self.counts if measured else self.warm_counts
        if measured:
            self._last_measured_answer = t
        counts.requests += 1
        self._iv["answered"] += 1
        if self._answer(counts, msg, rid, chunk, i):
            # A request refused with BUSY was not served: its (instant) answer would
            # flatter the latency of those that were.  BUSY is counted apart.
            c_us = int((t - intended) * 1e6)
            u_us = int((t - sent) * 1e6)
            self._iv_c.append(c_us)
            self._iv_u.append(u_us)
            if measured:
                self._m_c.append(c_us)
                self._m_u.append(u_us)

    def _answer(self, counts: stats.Counts, msg: dict, rid: int, chunk: Chunk, i: int) -> bool:
        """Checks one answer; False when it was BUSY throughout."""
        error = msg.get("error")
        batch = chunk.batch
        base = i * batch
        if error is not None:
            self._error(counts, str(error), msg.get("message"), rid, chunk, base)
            return True
        if batch == 1:
            v = msg.get("verdict")
            self._check(counts, chunk, base, v, msg.get("reason"), rid)
            return v != BUSY
        results = msg.get("results")
        if type(results) is not list or len(results) != batch:
            self._error(
                counts, "bad_response", "results missing or of the wrong length", rid, chunk, base
            )
            return True
        served = False
        for j, r in enumerate(results):
            v = r.get("verdict") if type(r) is dict else None
            self._check(counts, chunk, base + j, v, r.get("reason") if v is not None else None, rid)
            served = served or v != BUSY
        return served

    def _check(self, counts: stats.Counts, chunk: Chunk, item: int, v, reason, rid: int) -> None:
        if type(v) is not int or not 0 <= v < N_VERDICTS:
            self._error(counts, "bad_response", f"verdict {v!r}", rid, chunk, item, items=1)
            return
        counts.presentations += 1
        counts.verdicts[v] += 1
        self._iv["presentations"] += 1
        pair = chunk.pair[item]
        if pair:
            self._check_pair(counts, pair, v, reason, rid, chunk, item)
            return
        want = chunk.expect[item]
        if v == want:
            counts.expected[want] += 1
        elif v == BUSY:
            counts.busy += 1
            self._iv["busy"] += 1
        else:
            counts.expected[want] += 1
            self._mismatch(counts, chunk, item, Verdict(want).name, [v], reason, rid)

    def _check_pair(self, counts, pair: int, v: int, reason, rid: int, chunk, item) -> None:
        """A replayed presentation's two copies: OK once, REPLAYED once (BUSY: not seen)."""
        if v == BUSY:
            counts.busy += 1
            self._iv["busy"] += 1
        first = self._pairs.pop(pair, None)
        if first is None:
            self._pairs[pair] = (v, rid, reason)
            return
        v1, rid1, reason1 = first
        got = [x for x in (v1, v) if x != BUSY]
        if rid1 != rid:  # different requests may be verified in either order
            got.sort()
        # In one request the items are checked in order: the copy comes second.
        good = got in ([], [OK], [OK, REPLAYED])
        if pair in self._broken_pairs:  # the other copy's request failed: it may have counted
            self._broken_pairs.discard(pair)
            good = all(x in (OK, REPLAYED) for x in got)
        for x in (OK, REPLAYED)[: len(got)]:
            counts.expected[x] += 1
        if not good:
            self._mismatch(counts, chunk, item, "OK and REPLAYED", [v1, v], reason or reason1, rid)

    def _finish_pairs(self) -> None:
        """Copies whose twin was never sent or never answered: they must have been OK."""
        for pair, (v, rid, reason) in self._pairs.items():
            if v == BUSY:
                continue
            broken = pair in self._broken_pairs
            self.counts.expected[OK if v == OK or not broken else REPLAYED] += 1
            if v != OK and not (broken and v == REPLAYED):
                self._mismatch(self.counts, None, None, "OK (sent once)", [v], reason, rid)
        self._pairs.clear()

    def _mismatch(self, counts, chunk, item, want: str, got: list, reason, rid) -> None:
        counts.mismatches += 1
        self._iv["mismatches"] += 1
        if len(self.mismatch_examples) < MAX_EXAMPLES:
            example = {
                "request_id": rid,
                "outcome": self.names[chunk.outcome[item]] if chunk is not None else "replayed",
                "expected": want,
                "got": ", ".join(Verdict(x).name for x in got),
                "reason": reason,
            }
            self.mismatch_examples.append(example)
            if self.on_mismatch is not None:
                self.on_mismatch(example)

    def _error(self, counts, code: str, message, rid, chunk, base, *, items=None) -> None:
        counts.errors[code] = counts.errors.get(code, 0) + 1
        self._iv["errors"] += 1
        if chunk is not None:  # a replayed copy that failed may or may not have been seen
            for k in range(base, base + (items or chunk.batch)):
                if chunk.pair[k]:
                    self._broken_pairs.add(chunk.pair[k])
        if len(self.error_examples) < MAX_EXAMPLES:
            self.error_examples.append({"request_id": rid, "error": code, "message": message})

    def _unattributed(self, code: str, message: str) -> None:
        self._error(self.counts, code, message, None, None, 0)

    def _fail(self, rid: int, code: str, message: str) -> None:
        conn, chunk, i, _, _, measured = self.inflight.pop(rid)
        conn.in_flight -= 1
        conn.rids.discard(rid)
        counts = self.counts if measured else self.warm_counts
        self._error(counts, code, message, rid, chunk, i * chunk.batch)

    def _lost(self, conn: _Connection, code: str) -> None:
        conn.closed = True
        if self._closing:
            return
        for rid in list(conn.rids):
            self._fail(rid, code, "the connection closed before the answer")
        if all(c.closed for c in self.conns):
            self._fatal = "every connection to the server is closed"
            self._wake()
        if self._idle is not None and not self.inflight and not self._idle.done():
            self._idle.set_result(None)

    # --- intervals ----------------------------------------------------------------------

    async def _ticker(self) -> None:
        interval = self.settings.interval
        while True:
            await asyncio.sleep(max(0.0, self._last_tick + interval - time.perf_counter()))
            now = time.perf_counter()
            self._tick(now)
            silent = now - max(self._last_answer, self.t0)
            if self.inflight and silent > self.settings.drain_timeout:
                self._abort(f"the server answered nothing for {silent:.0f} s")
                if self._idle is not None and not self._idle.done():
                    self._idle.set_result(None)

    def _tick(self, now: float) -> None:
        seconds = now - self._last_tick
        if seconds <= 0:
            return
        self._last_tick = now
        if self.phase == "warmup" and now >= self.warm_end:
            self.phase = "measure"
        if self._starved_since is not None:  # still starved: charge it to this interval
            self._add_wait(SOURCE, now - self._starved_since)
            self._starved_since = now
        c = np.frombuffer(self._iv_c, dtype=np.int64)
        u = np.frombuffer(self._iv_u, dtype=np.int64)
        self.corrected.add(np.frombuffer(self._m_c, dtype=np.int64))
        self.uncorrected.add(np.frombuffer(self._m_u, dtype=np.int64))
        self.lag.add(np.frombuffer(self._m_lag, dtype=np.int64))
        iv = self._iv
        interval = stats.Interval(
            t=round(now - self.t0, 3),
            seconds=round(seconds, 3),
            phase=self.phase,
            sent=iv["sent"],
            answered=iv["answered"],
            presentations=iv["presentations"],
            mismatches=iv["mismatches"],
            errors=iv["errors"],
            busy=iv["busy"],
            in_flight=len(self.inflight),
            corrected_ms=stats.quick_percentiles_ms(c),
            uncorrected_ms=stats.quick_percentiles_ms(u),
            lag_max_ms=round(self._iv_lag_max * 1000, 3),
            source_wait_s=round(self._iv_wait[SOURCE], 3),
            window_wait_s=round(self._iv_wait[WINDOW], 3),
        )
        self.intervals.append(interval)
        self._iv_c, self._iv_u, self._m_c, self._m_u, self._m_lag = (
            array.array("q") for _ in range(5)
        )
        self._iv_lag_max = 0.0
        self._iv = dict.fromkeys(self._iv, 0)
        self._iv_wait = {SOURCE: 0.0, WINDOW: 0.0}
        if self.on_interval is not None:
            self.on_interval(interval, self)

    # --- the result ---------------------------------------------------------------------

    def _result(self, started_at: float) -> RunResult:
        s = self.settings
        lag = stats.percentiles_ms(self.lag.histogram())
        end = self._last_measured_answer or time.perf_counter()
        measured_s = max(end - self.warm_end, 1e-9)
        window, source = self._m_wait[WINDOW], self._m_wait[SOURCE]
        if s.open_loop:
            # One late send in a hundred is a distortion worth saying; a lone hiccup is not.
            behind = (lag["p99"] or 0.0) > s.max_lag_ms or self.not_sent > 0
            cause = ("server" if window > source else "generator") if behind else None
        else:
            # No schedule to keep, but starved senders measure the generator, not the server.
            behind = source > 0.05 * measured_s
            cause = "generator" if behind else None
        schedule = stats.Schedule(
            mode="open" if s.open_loop else "closed",
            target_rate=s.rate,
            scheduled=self.sent_measured + self.not_sent,
            sent=self.sent_measured,
            not_sent=self.not_sent,
            lag=lag,
            source_wait_s=round(self._m_wait[SOURCE], 3),
            window_wait_s=round(self._m_wait[WINDOW], 3),
            max_lag_ms=s.max_lag_ms,
            behind=behind,
            cause=cause,
            stale_chunks=self.stale_chunks,
        )
        return RunResult(
            settings=s,
            batch=self.batch,
            outcome_names=list(self.names),
            started_at=started_at,
            elapsed_s=round(time.perf_counter() - self.t0, 3),
            measured_s=measured_s,
            counts=self.counts,
            warmup=self.warm_counts,
            corrected=self.corrected.histogram(),
            uncorrected=self.uncorrected.histogram(),
            intervals=self.intervals,
            schedule=schedule,
            mismatch_examples=self.mismatch_examples,
            error_examples=self.error_examples,
            sent=self.sent,
            aborted=self._fatal or self._interrupted,
            workers=self.source.workers,
            corpus=str(self.source.corpus.directory),
            presigned=self.presigned,
            ran_out=self.ran_out,
        )
