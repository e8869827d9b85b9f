"""The verification server: asyncio + uvloop TCP, msgpack frames, cross-connection batching.

One ``Connection`` (an asyncio Protocol) per client turns bytes into frames; the verify
requests among them are parsed in C straight into the batch being filled (requests
from every connection share it; anything else takes the Python path).  A batch goes to
a free verification worker when it holds ``max_batch`` presentations, or when its
oldest request has waited ``latency_budget_ms`` (default 0: at once); while every
worker is busy, batches fill up by themselves.  Workers run the pipeline's stages
(engine.verifier) in threads with the GIL released in the native core, and the
answers come back encoded in C, one buffer per connection.

Everything is bounded: connections, presentations in flight per connection and in
total (beyond them: an immediate BUSY), frame size, time to complete a frame, idle
time, protocol errors per connection.  A client that does not read its responses is
paused (its transport stops reading) instead of being buffered without bound.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import math
import os
import queue
import signal
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Callable

from engine import __version__, _core
from engine.formats.keys import KeyFileError, parse_public_key
from engine.formats.trustlist import TrustList, TrustListError
from engine.replay import MemoryReplayCache
from engine.revocation.source import CARD, CREDENTIAL, RevocationSource
from engine.server import logs
from engine.server.config import Config, ConfigError
from engine.server.metrics import ServerMetrics
from engine.sigverify import use_simd
from engine.verdicts import Verdict
from engine.verifier import Verifier, VerifierConfig
from engine.wire import protocol as proto
from engine.wire.framing import FrameDecoder, FrameTooLarge

SWEEP_INTERVAL_S = 0.5
FAULT_RELOAD_INTERVAL_S = 5.0  # unreadable revocation data: reload attempts at most this often

_log = logs.event
_busy_log = logs.RateLimited()


class Connection(asyncio.Protocol):
    __slots__ = (
        "abort_timer",
        "closed",
        "decoder",
        "errors",
        "handshaking",
        "held",
        "in_flight",
        "last_frame",
        "partial_since",
        "peer",
        "server",
        "slot",
        "transport",
        "write_paused",
    )

    def __init__(self, server: Server):
        self.server = server
        self.decoder = FrameDecoder(server.cfg.server.max_frame_bytes)
        self.transport: asyncio.Transport | None = None
        self.in_flight = 0  # presentations of this connection queued or verifying
        self.errors = 0
        self.closed = False
        self.last_frame = server.loop.time()
        self.partial_since: float | None = None
        self.peer = ""
        self.slot = server.new_slot()  # how batches name this connection
        self.abort_timer: asyncio.TimerHandle | None = None
        self.handshaking = False  # TLS: accepted, counted, handshake not done yet
        self.write_paused = False  # the client is not reading: we stop reading too
        self.held = False  # overloaded: not read until the next batch is answered

    # asyncio callbacks

    def connection_made(self, transport):
        # With TLS this is the TCP accept: the connection counts against the limits
        # from here, and the handshake (engine.server.server.Server._handshake) is bounded.
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.server.connection_made(self)

    def data_received(self, data):
        now = self.server.loop.time()
        try:
            frames = self.decoder.feed(data)
        except FrameTooLarge as e:
            self.close_with_error(proto.FRAME_TOO_LARGE, str(e))
            return
        if frames:
            self.last_frame = now
            # Arrival times at full resolution (the loop's clock has a 1 ms grain): they
            # time the latency budget and the latency histogram.
            self.server.handle_frames(self, frames, time.monotonic())
        if self.decoder.pending:
            if frames or self.partial_since is None:
                self.partial_since = now
        else:
            self.partial_since = None

    def eof_received(self):
        return False  # half-closed clients are closed; nothing more can be asked

    def connection_lost(self, exc):
        self.closed = True
        if self.abort_timer is not None:
            self.abort_timer.cancel()
            self.abort_timer = None
        self.server.connection_lost(self)

    def pause_writing(self):
        # The client is not reading its responses: stop reading its requests.
        self.write_paused = True
        self.transport.pause_reading()

    def resume_writing(self):
        self.write_paused = False
        if not self.closed and not self.held:
            self.transport.resume_reading()

    def hold(self) -> bool:
        """Stops reading until ``release`` (Server: while admission refuses)."""
        if self.held or self.closed:
            return False
        self.held = True
        self.transport.pause_reading()
        return True

    def release(self) -> None:
        self.held = False
        if not self.closed and not self.write_paused:
            self.transport.resume_reading()

    # sending

    def send(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)

    def request_error(self, err: proto.RequestError) -> None:
        self.errors += 1
        self.server.metrics.protocol_errors.labels(err.code).inc()
        self.send(proto.error_response(err.request_id, err.code, err.message))
        limit = self.server.cfg.server.max_protocol_errors
        if self.errors >= limit:
            self.close_with_error(proto.TOO_MANY_ERRORS, f"{limit} protocol errors")

    def close_with_error(self, code: str, message: str) -> None:
        if self.closed:
            return
        self.server.metrics.protocol_errors.labels(code).inc()
        _log(logging.INFO, "connection_closed_on_error", peer=self.peer, code=code)
        self.send(proto.error_response(None, code, message))
        self.close()

    def close(self) -> None:
        """Closes after flushing what is buffered, but never waits on the client for
        longer than ``server.close_grace_s``: a client that stopped reading would
        otherwise keep its slot and descriptor until it closed its own end."""
        transport = self.transport
        if self.abort_timer is not None or transport is None:
            return
        self.closed = True
        if transport.is_closing():  # closed already (the peer went, or an abort)
            return
        pending = transport.get_write_buffer_size()  # asked first: a closed TLS one can't say
        transport.close()
        if pending:
            grace = self.server.cfg.server.close_grace_s
            self.abort_timer = self.server.loop.call_later(grace, self._abort)

    def _abort(self) -> None:
        self.abort_timer = None
        _log(logging.INFO, "connection_aborted", peer=self.peer, why="unread responses")
        self.server.metrics.aborted.inc()
        self.transport.abort()


IN_FLIGHT_LIMIT = "server in-flight limit"
QUEUE_TIME_LIMIT = "server queue time limit"


class Admission:
    """How many presentations may be queued or verifying: ``max_in_flight``, and no more
    than the workers verify in ``max_wait_s`` at the rate they are achieving now.

    Beyond that, a new request would wait longer than it is worth: it is answered BUSY
    at once instead.  The rate is measured from the batches the workers run (a worker's
    wall time per presentation, smoothed), so it follows the machine as it is, busy or
    not.  Only batches of at least a quarter of ``max_batch`` count: a long queue is
    verified in full batches, and the small batches of low load (dearer per
    presentation, and when no limit binds) would make the limit too tight.  Until such
    a batch has run, only ``max_in_flight`` applies; the limit never falls below
    ``floor`` (at least one request of the largest size), so an idle server takes any
    request.
    """

    SMOOTHING = 0.1  # weight of the newest full batch in the per-presentation cost

    def __init__(
        self, max_in_flight: int, max_wait_s: float, workers: int, *, floor: int, max_batch: int
    ):
        self.max_in_flight = max_in_flight
        self.max_wait_s = max_wait_s
        self.workers = workers
        self.floor = min(floor, max_in_flight)
        self.max_batch = max_batch
        self.cost_s: float | None = None  # a worker's seconds per presentation
        self.limit = max_in_flight
        self.reason = IN_FLIGHT_LIMIT  # which bound ``limit`` is, for BUSY answers
        self.reason_bytes = self.reason.encode()

    def batch_done(self, items: int, seconds: float) -> None:
        if self.max_wait_s <= 0 or 4 * items < self.max_batch:
            return
        cost = seconds / items
        weight = self.SMOOTHING * min(1.0, items / self.max_batch)
        self.cost_s = cost if self.cost_s is None else self.cost_s + weight * (cost - self.cost_s)
        by_time = int(self.max_wait_s * self.workers / self.cost_s)
        limit = min(self.max_in_flight, max(self.floor, by_time))
        reason = IN_FLIGHT_LIMIT if limit == self.max_in_flight else QUEUE_TIME_LIMIT
        if reason is not self.reason:
            self.reason, self.reason_bytes = reason, reason.encode()
        self.limit = limit

    @property
    def rate(self) -> float | None:
        """Presentations per second all workers achieve (None until measured)."""
        return None if not self.cost_s else self.workers / self.cost_s


class Server:
    """Owns the listening socket, the connections, the batcher and the data in service."""

    def __init__(
        self,
        cfg: Config,
        *,
        clock: Callable[[], float] = time.time,
        revocation: RevocationSource | None = None,
    ):
        """``revocation`` replaces the store named by the configuration (tests, embedding)."""
        self.cfg = cfg.validate()
        self.clock = clock
        try:
            self.root_public_key = parse_public_key(
                cfg.trust.root_public_key, "trust.root_public_key"
            )
        except KeyFileError as e:
            raise ConfigError(str(e)) from None
        trust = TrustList.load(cfg.trust.trust_list, self.root_public_key)
        v = cfg.verification
        use_simd(v.simd)
        self.verifier = Verifier(
            trust,
            revocation=revocation if revocation is not None else open_revocation(cfg),
            replay=MemoryReplayCache(v.replay_capacity),
            config=VerifierConfig(
                freshness_ms=v.freshness_ms,
                skew_ms=v.skew_ms,
                max_revocation_age_s=cfg.revocation.max_age_s,
                revocation_fail_open=cfg.revocation.fail_open,
                threads=cfg.batching.threads or None,
            ),
            clock=clock,
        )
        self.metrics = ServerMetrics()
        self.workers = cfg.batching.workers or _core.cpu_count()
        self.admission = Admission(
            cfg.server.max_in_flight,
            cfg.server.max_queue_ms / 1000,
            self.workers,
            # One batch verifying and one filling per worker are never too many.
            floor=max(cfg.server.max_batch_items, 2 * cfg.batching.max_batch * self.workers),
            max_batch=cfg.batching.max_batch,
        )
        self.connections: set[Connection] = set()
        self.in_flight = 0
        self.by_slot: dict[int, Connection] = {}
        self._slots = itertools.count()
        self._filling = _core.RequestBatch()  # taking requests now
        self._ready: collections.deque[_core.VerifyBatch] = collections.deque()  # full
        self.busy_workers = 0
        self._deferred = False
        self.draining = False
        self.started_at = time.time()
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        # Verification threads fed by one queue; each hands its batch back to the loop
        # itself.  (An executor's futures cost Python work, locks and thread switches
        # per batch that these do without.)
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._timer: asyncio.TimerHandle | None = None
        self._server: asyncio.AbstractServer | None = None
        self._listener: socket.socket = None  # type: ignore[assignment]
        self._accepting: asyncio.Task | None = None
        self._metrics_http = None
        self._tasks: list[asyncio.Task] = []
        self._idle = asyncio.Event()
        self._tls: ssl.SSLContext | None = None
        self.max_connections = cfg.server.max_connections  # bounded by descriptors at start
        self._full_log = logs.RateLimited()
        self._fault_log = logs.RateLimited()
        self._held: list[Connection] = []  # connections not read until the next batch
        self._handshakes: set[asyncio.Task] = set()
        self._fault_reload_at = -math.inf  # when unreadable data last triggered a reload
        self._reload_lock: asyncio.Lock | None = None
        self._stopped: asyncio.Event | None = None

    # --- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        if self.cfg.batching.switch_interval_ms > 0:
            # A verification thread needs the GIL for a moment at each stage of a batch;
            # with Python's default 5 ms it waits that long whenever the event loop is
            # busy (overload), starving the workers (docs/OPERATIONS.md, "Admission").
            sys.setswitchinterval(self.cfg.batching.switch_interval_ms / 1000)
        self._idle = asyncio.Event()
        self._idle.set()
        self._reload_lock = asyncio.Lock()
        self._stopped = asyncio.Event()
        s = self.cfg.server
        self._tls = self._tls_context()
        self.max_connections = connection_limit(s.max_connections, self.workers)
        self.metrics.connection_limit.set(self.max_connections)
        if self._tls is None:
            self._server = await self.loop.create_server(
                lambda: Connection(self), s.host, s.port, backlog=1024
            )
            self._listener = self._server.sockets[0]
        else:
            # TLS connections are accepted here rather than by an asyncio server, so each
            # is counted and timed from its TCP accept, handshake included, and a failed
            # handshake is seen (asyncio's server hides both until a handshake succeeds).
            family = socket.AF_INET6 if ":" in s.host else socket.AF_INET
            self._listener = socket.create_server((s.host, s.port), family=family, backlog=1024)
            self._listener.setblocking(False)
            self._accepting = self.loop.create_task(self._accept_tls())
            self._tasks.append(self._accepting)
        for k in range(self.workers):
            thread = threading.Thread(target=self._work_loop, name=f"essc-verify-{k}", daemon=True)
            thread.start()
            self._threads.append(thread)
        m = self.cfg.metrics
        if m.port:
            from prometheus_client import start_http_server

            self._metrics_http, _ = start_http_server(
                m.port, m.host, registry=self.metrics.registry
            )
        self._tasks.append(self.loop.create_task(self._sweep()))
        if self.cfg.reload.watch_interval_s > 0:
            # The first stamp is taken now, so a change right after start is not missed.
            self._tasks.append(self.loop.create_task(self._watch(self._file_stamps())))
        self._update_gauges()
        _log(
            logging.INFO,
            "listening",
            address=f"{s.host}:{self.port}",
            metrics=f"{m.host}:{self.metrics_port}" if m.port else None,
            tls=bool(s.tls_cert),
            mutual_tls=bool(s.tls_client_ca),
            trust_list_sequence=self.verifier.trust_list.sequence,
            revocation_sequence=self._revocation_sequence(),
            version=__version__,
        )

    @property
    def port(self) -> int:
        return self._listener.getsockname()[1]

    @property
    def metrics_port(self) -> int | None:
        return self._metrics_http.server_address[1] if self._metrics_http else None

    async def drain(self) -> None:
        """Stop accepting, answer everything in flight, flush, close; bounded in time."""
        if self.draining:
            await self._stopped.wait()
            return
        self.draining = True
        deadline = self.loop.time() + self.cfg.server.drain_timeout_s
        _log(logging.INFO, "draining", in_flight=self.in_flight, connections=len(self.connections))
        if self._server is not None:
            self._server.close()
        else:
            self._accepting.cancel()
            self._listener.close()
        self._schedule()  # no more waiting for fuller batches
        for conn in self._held:  # what they sent is answered (BUSY, draining) too
            conn.release()
        self._held.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), max(0.0, deadline - self.loop.time()))
        for conn in list(self.connections):
            if not conn.closed:
                conn.close()  # sends what is buffered first
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
            else:  # a TLS handshake still under way: its task ends it
                conn.closed = True
        for task in self._tasks:
            task.cancel()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
        for _ in self._threads:
            self._work.put(None)  # each thread ends when it takes one
        _log(logging.INFO, "stopped", unanswered=self.in_flight)
        self._stopped.set()

    def _tls_context(self) -> ssl.SSLContext | None:
        s = self.cfg.server
        if not s.tls_cert:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(s.tls_cert, s.tls_key)
            if s.tls_client_ca:
                ctx.load_verify_locations(s.tls_client_ca)
                ctx.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"TLS: {e}") from None
        return ctx

    # --- connections --------------------------------------------------------------------

    def new_slot(self) -> int:
        return next(self._slots)

    def connection_made(self, conn: Connection) -> None:
        if conn.handshaking:  # TLS: admitted at accept (_accept_tls), handshake done
            conn.handshaking = False
            conn.last_frame = self.loop.time()
            if self.draining or conn.closed:
                conn.close()
            return
        if self._full():
            conn.close_with_error(proto.SERVER_FULL, "connection limit reached or draining")
            return
        self.connections.add(conn)
        self.by_slot[conn.slot] = conn

    def _full(self) -> bool:
        if not self.draining and len(self.connections) < self.max_connections:
            return False
        self._full_log(
            logging.WARNING,
            "connection_refused",
            reason="draining" if self.draining else "connection limit",
            limit=self.max_connections,
        )
        return True

    async def _accept_tls(self) -> None:
        while True:
            try:
                sock, addr = await self.loop.sock_accept(self._listener)
            except OSError as e:  # out of descriptors, say: the limit is derived to avoid it
                _busy_log(logging.ERROR, "accept_failed", error=e.strerror)
                await asyncio.sleep(0.1)
                continue
            if self._full():
                # Nothing can be said to a TLS client before a handshake, and a refused
                # connection must not cost one: reset at once.
                self.metrics.protocol_errors.labels(proto.SERVER_FULL).inc()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
                continue
            conn = Connection(self)
            conn.handshaking = True
            conn.peer = f"{addr[0]}:{addr[1]}"
            self.connections.add(conn)
            self.by_slot[conn.slot] = conn
            task = self.loop.create_task(self._handshake(conn, sock))
            self._handshakes.add(task)  # the loop keeps only a weak reference
            task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, conn: Connection, sock: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(
                lambda: conn,
                sock,
                ssl=self._tls,
                ssl_handshake_timeout=self.cfg.server.tls_handshake_timeout_s,
            )
        except Exception as e:  # refused certificate, timeout, reset: all end here
            reason = _tls_failure(e)
            self.metrics.tls_failures.labels(reason.split(":")[0]).inc()
            _log(logging.WARNING, "tls_handshake_failed", peer=conn.peer, reason=reason)
            sock.close()
            conn.closed = True
            self.connection_lost(conn)
            return
        if self.cfg.server.tls_client_ca:
            _log(logging.DEBUG, "tls_client", peer=conn.peer, subject=_subject(conn.transport))

    def connection_lost(self, conn: Connection) -> None:
        self.connections.discard(conn)
        self.by_slot.pop(conn.slot, None)

    async def _sweep(self) -> None:
        """Closes idle connections and those stuck in the middle of a frame."""
        s = self.cfg.server
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            now = self.loop.time()
            for conn in list(self.connections):
                if conn.closed or conn.handshaking:  # a handshake has its own timeout
                    continue
                if conn.partial_since is not None and now - conn.partial_since > s.frame_timeout_s:
                    conn.close_with_error(proto.FRAME_TIMEOUT, "frame not completed in time")
                elif conn.in_flight == 0 and now - conn.last_frame > s.idle_timeout_s:
                    _log(logging.INFO, "connection_idle_closed", peer=conn.peer)
                    conn.close()
            self._update_gauges()
            self._check_revocation_readable()

    def _check_revocation_readable(self) -> None:
        """Data in service that became unreadable fails closed (the verifier answers
        REVOCATION_DATA_STALE); a reload from the configured files is tried at once."""
        store = self.verifier.revocation
        if not getattr(store, "faulted", False) or self._reload_lock.locked():
            return
        now = self.loop.time()
        if now - self._fault_reload_at < FAULT_RELOAD_INTERVAL_S:
            return  # a reload that failed is not retried in a tight loop
        self._fault_reload_at = now
        self._fault_log(
            logging.ERROR,
            "revocation_unreadable",
            sequence=store.sequence,
            action="failing closed; reloading",
        )
        self.loop.create_task(self.reload("revocation data unreadable"))

    # --- requests -----------------------------------------------------------------------

    def handle_frames(self, conn: Connection, frames: list[bytes], now: float) -> None:
        """Verify requests go into the filling batch in C (the fast path); everything
        else, and verify requests the fast path declines, through parse_request."""
        s, b = self.cfg.server, self.cfg.batching
        if self.draining or self.cfg.log.audit:
            # Draining answers BUSY; audit logging needs each request's context.
            self._slow_frames(conn, frames, range(len(frames)), now)
            self._schedule()
            return
        i = 0
        while i < len(frames) and not conn.closed:
            batch = self._filling
            i, taken, slow, busy, busy_conn, busy_server = batch.add_frames(
                conn.slot,
                frames,
                i,
                now,
                b.max_batch,
                s.max_in_flight_per_connection - conn.in_flight,
                self.admission.limit - self.in_flight,
                s.max_batch_items,
                self.admission.reason_bytes,
            )
            if taken:
                conn.in_flight += taken
                self.in_flight += taken
                self._idle.clear()
            if busy:
                conn.send(busy)
                # The same labels as the Python path's BUSY answers.
                if busy_conn:
                    self._count_busy(busy_conn, "connection in-flight limit")
                if busy_server:
                    self._count_busy(busy_server, self.admission.reason)
                    self._hold(conn)
            if slow:
                self._slow_frames(conn, frames, slow, now)
            # add_frames stops early only before a request that would overfill the
            # batch: that batch is done, and the request opens the next one (an empty
            # batch takes any request whole, so this always moves on).
            if i < len(frames) or len(self._filling) >= b.max_batch:
                self._seal()
        if self._ready:
            self._schedule()
        elif not self._deferred:
            # The rest of this loop iteration's reads (other connections) join the batch
            # first: one batch where each read would have made its own, at no added wait.
            self._deferred = True
            self.loop.call_soon(self._deferred_schedule)

    def _deferred_schedule(self) -> None:
        self._deferred = False
        self._schedule()

    def _slow_frames(self, conn: Connection, frames: list[bytes], which, now: float) -> None:
        max_items = self.cfg.server.max_batch_items
        for k in which:
            if conn.closed:
                return
            try:
                req = proto.parse_request(frames[k], max_items)
            except proto.RequestError as err:
                conn.request_error(err)
                continue
            kind = req.type
            if kind == proto.VERIFY or kind == proto.VERIFY_BATCH:
                self._submit(conn, req, now)
            elif kind == proto.PING:
                conn.send(proto.response(req.id, {"pong": True}))
            elif kind == proto.STATUS:
                conn.send(proto.response(req.id, {"status": self.status()}))
            else:
                self._revocation_check(conn, req)

    def _submit(self, conn: Connection, req: proto.Request, now: float) -> None:
        n = len(req.presentations)
        s = self.cfg.server
        if self.draining:
            reason = "draining"
        elif conn.in_flight + n > s.max_in_flight_per_connection:
            reason = "connection in-flight limit"
        elif self.in_flight + n > self.admission.limit:
            reason = self.admission.reason
        else:
            conn.in_flight += n
            self.in_flight += n
            self._idle.clear()
            if len(self._filling) and len(self._filling) + n > self.cfg.batching.max_batch:
                self._seal()  # as on the fast path: a request never overfills a batch
            self._filling.add_request(
                conn.slot,
                req.id,
                req.type == proto.VERIFY_BATCH,
                req.presentations,
                now,
                req.context,
            )
            if len(self._filling) >= self.cfg.batching.max_batch:
                self._seal()
            return
        conn.send(proto.busy_response(req.id, req.type, n, reason))
        self._count_busy(n, reason)
        if reason == self.admission.reason:
            self._hold(conn)

    def _hold(self, conn: Connection) -> None:
        """A connection answered BUSY for the server's limit is not read again until the
        next batch has been answered: what it sends meanwhile waits in its socket
        buffer and is then read in one go (admitted, or BUSY at once).  Under overload
        this replaces a read, a parse and a write per refused request with one per
        batch, which is what keeps the workers' share of the CPU (docs/OPERATIONS.md,
        "Admission"); the wait it adds is at most one batch's service time."""
        if conn.hold():
            self._held.append(conn)

    def _count_busy(self, n: int, reason: str) -> None:
        self.metrics.busy.labels(reason).inc(n)
        self.metrics.requests.labels(Verdict.BUSY.name).inc(n)
        _busy_log(logging.WARNING, "busy", reason=reason, in_flight=self.in_flight)

    def _seal(self) -> None:
        self._ready.append(self._filling)
        self._filling = _core.RequestBatch()

    def _schedule(self) -> None:
        """Hands batches to free workers: full ones at once, the filling one when its
        oldest request's time is up (or when draining).

        Full batches are queued even while every worker is busy, one per worker in
        reserve: a worker that finishes starts the next at once instead of waiting for
        the event loop to come round (under overload a loop iteration reading every
        connection takes milliseconds, and the worker would idle through them).
        """
        b = self.cfg.batching
        while self._ready and self.busy_workers < 2 * self.workers:
            self._dispatch(self._ready.popleft())
        while self.busy_workers < self.workers:
            if not self._ready:
                if not len(self._filling):
                    return
                due = self._filling.first_arrival + b.latency_budget_ms / 1000
                wait = due - time.monotonic()
                if not self.draining and wait > 0:
                    if self._timer is None:
                        self._timer = self.loop.call_later(wait, self._on_timer)
                    return
                self._seal()
            self._dispatch(self._ready.popleft())

    def _on_timer(self) -> None:
        self._timer = None
        self._schedule()

    def _dispatch(self, batch: _core.VerifyBatch) -> None:
        self.busy_workers += 1
        self._work.put(batch)

    def _work_loop(self) -> None:
        """A verification thread: batches from the queue until it takes None."""
        while (batch := self._work.get()) is not None:
            started = time.perf_counter()
            try:
                outputs, error = self._process(batch), None
            except Exception as e:  # a bug must cost one batch, never the server
                outputs, error = None, e
            took = time.perf_counter() - started
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                self.loop.call_soon_threadsafe(self._deliver, batch, outputs, error, took)

    def _process(self, batch: _core.VerifyBatch) -> list:
        """In a worker thread: every stage, then the responses encoded in C."""
        reasons = self.verifier.run(batch)
        return batch.encode({i: r.encode() for i, r in reasons.items() if r})

    def _deliver(
        self, batch: _core.VerifyBatch, outputs, error: Exception | None, took: float
    ) -> None:
        self.busy_workers -= 1
        count = len(batch)
        if error is None:
            self.admission.batch_done(count, took)
        if error is not None:
            logging.getLogger(logs.LOGGER).error(
                "batch_failed", exc_info=error, extra={"fields": {}}
            )
            outputs = self._internal_errors(batch)
        # Metrics first: whoever reads them after seeing a response sees it counted.
        now = time.monotonic()
        self.metrics.count_verdicts(batch.verdict_counts())
        self.metrics.latency.observe(now - batch.arrivals())
        self.metrics.batch_size.observe_one(count)
        if self.cfg.log.audit:
            self._audit(batch, now)
        self.in_flight -= count
        for slot, frames, items in outputs:
            conn = self.by_slot.get(slot)
            if conn is not None:
                conn.in_flight -= items
                conn.send(frames)
        if self.in_flight == 0:
            self._idle.set()
        if self._held:
            held, self._held = self._held, []
            for conn in held:
                conn.release()
        self._schedule()

    def _internal_errors(self, batch: _core.VerifyBatch) -> list:
        out = []
        for r in range(batch.requests):
            slot, rid, codes = batch.request_verdicts(r)
            frame = proto.error_response(rid, proto.INTERNAL_ERROR, "verification failed")
            out.append((slot, frame, len(codes)))
        return out

    def _audit(self, batch: _core.VerifyBatch, now: float) -> None:
        arrivals = batch.arrivals()
        for r in range(batch.requests):
            slot, rid, codes = batch.request_verdicts(r)
            conn = self.by_slot.get(slot)
            ctx = batch.contexts[r] or {}
            _log(
                logging.INFO,
                "verified",
                peer=conn.peer if conn is not None else None,
                request_id=rid,
                merchant_id=ctx.get("merchant_id"),
                terminal_id=ctx.get("terminal_id"),
                verdicts=[Verdict(c).name for c in codes],
                latency_ms=round((now - arrivals[r]) * 1000, 3),
            )

    def _revocation_check(self, conn: Connection, req: proto.Request) -> None:
        store = self.verifier.revocation
        if store is None:
            conn.request_error(
                proto.RequestError(
                    proto.NO_REVOCATION_DATA, "no revocation data configured", req.id
                )
            )
            return
        cards = [c.encode("ascii") for c in req.message.get("cards", [])]  # checked ASCII
        serials = req.message.get("credentials", [])
        # Answered from the data in service even when it is older than revocation.max_age_s
        # (verify fails closed then; a look-up says how old its answer is instead).
        age = self.clock() - store.created_at
        conn.send(
            proto.response(
                req.id,
                {
                    "cards": store.contains(CARD, cards).tolist() if cards else [],
                    "credentials": store.contains(CREDENTIAL, serials).tolist() if serials else [],
                    "revocation_sequence": store.sequence,
                    "revocation_age_s": round(age, 3),
                    "stale": age > self.cfg.revocation.max_age_s,
                },
            )
        )

    def status(self) -> dict:
        trust = self.verifier.trust_list
        store = self.verifier.revocation
        now = self.clock()
        return {
            "version": __version__,
            "trust_list_sequence": trust.sequence,
            "trust_list_issued_at": trust.issued_at,
            "revocation_sequence": None if store is None else store.sequence,
            "revocation_snapshot_sequence": _snapshot_sequence(store),
            "revocation_age_s": None if store is None else round(now - store.created_at, 3),
            "uptime_s": round(time.time() - self.started_at, 3),
            "connections": len(self.connections),
            "in_flight": self.in_flight,
            "in_flight_limit": self.admission.limit,
            "draining": self.draining,
            # CPU seconds: the whole process, and inside native signature verification.
            "cpu_s": round(time.process_time(), 6),
            "native_verify_cpu_s": round(_core.native_cpu_seconds(), 6),
        }

    def _revocation_sequence(self) -> int | None:
        store = self.verifier.revocation
        return None if store is None else store.sequence

    def _update_gauges(self) -> None:
        m = self.metrics
        now = self.clock()
        m.connections.set(len(self.connections))
        m.queue_depth.set(self.in_flight)
        m.admission_limit.set(self.admission.limit)
        trust = self.verifier.trust_list
        m.trust_sequence.set(trust.sequence)
        m.trust_age.set(now - trust.issued_at)
        store = self.verifier.revocation
        m.revocation_sequence.set(-1 if store is None else store.sequence)
        m.revocation_age.set(0 if store is None else now - store.created_at)

    # --- reload -------------------------------------------------------------------------

    async def reload(self, why: str = "signal") -> bool:
        """Loads the trust list and revocation data again; a bad file leaves the old in service.

        Returns True when everything that was tried loaded (or was unchanged).
        """
        async with self._reload_lock:
            try:
                ok = await self._reload_trust(why)
                ok = await self._reload_revocation(why) and ok
            except Exception:  # a bug in reloading must not take the server down
                logging.getLogger(logs.LOGGER).exception(
                    "reload_failed", extra={"fields": {"why": why}}
                )
                return False
            self._update_gauges()
            return ok

    def _reload_outcome(self, what: str, outcome: str, why: str, **fields) -> None:
        """One reload result: counted in the metrics and logged as one event."""
        self.metrics.reloads.labels(what, outcome).inc()
        event, level = {
            "ok": ("reloaded", logging.INFO),
            "failed": ("reload_failed", logging.ERROR),
            "rejected": ("reload_rejected", logging.ERROR),
        }[outcome]
        _log(level, event, what=what, why=why, **fields)

    async def _reload_trust(self, why: str) -> bool:
        path = self.cfg.trust.trust_list
        current = self.verifier.trust_list
        try:
            new = await self.loop.run_in_executor(None, TrustList.load, path, self.root_public_key)
        except TrustListError as e:
            self._reload_outcome(
                "trust_list", "failed", why, error=str(e), in_service=current.sequence
            )
            return False
        if not new.may_replace(current):
            self._reload_outcome(
                "trust_list",
                "rejected",
                why,
                error="sequence older than the list in service, or same sequence with other "
                "content",
                offered=new.sequence,
                in_service=current.sequence,
            )
            return False
        if new.sequence != current.sequence:
            self.verifier.trust_list = new
            self._reload_outcome(
                "trust_list", "ok", why, sequence=new.sequence, previous=current.sequence
            )
        return True

    async def _reload_revocation(self, why: str) -> bool:
        store = self.verifier.revocation
        if store is None:
            return True
        before, faulted = store.sequence, getattr(store, "faulted", False)
        try:
            await self.loop.run_in_executor(None, store.reload)
        except Exception as e:  # any failure keeps the old data in service
            self._reload_outcome("revocation", "failed", why, error=str(e), in_service=before)
            return False
        if store.sequence != before or faulted:
            self._reload_outcome("revocation", "ok", why, sequence=store.sequence, previous=before)
        return True

    def _file_stamps(self) -> list:
        paths = [
            self.cfg.trust.trust_list,
            self.cfg.revocation.snapshot,
            *self.cfg.revocation.deltas,
        ]
        out = []
        for p in paths:
            if p:
                try:
                    st = os.stat(p)
                    out.append((st.st_ino, st.st_mtime_ns, st.st_size))
                except OSError:
                    out.append(None)
        return out

    async def _watch(self, last: list) -> None:
        """Polls the data files and reloads when one changes (replaced or rewritten)."""
        while True:
            await asyncio.sleep(self.cfg.reload.watch_interval_s)
            now = self._file_stamps()
            if now != last:
                last = now
                await self.reload("file changed")


# Descriptors kept free of connections: listener, metrics, log, data files, the
# event loop's own, accepts in progress.
RESERVED_DESCRIPTORS = 64


def connection_limit(configured: int, workers: int) -> int:
    """The connections the server accepts: ``configured``, unless the descriptor limit
    is lower.  Raises the soft limit (RLIMIT_NOFILE) towards the hard one first, where
    allowed, and logs what was chosen: a connection past the descriptor limit would
    otherwise be dropped by the kernel with neither ``server_full`` nor a log line."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:
        in_use = 32
    reserve = RESERVED_DESCRIPTORS + 2 * workers + in_use
    want = configured + reserve
    raised_from = None
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        if new > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
                raised_from, soft = soft, new
            except (ValueError, OSError):
                pass
    limit = configured if soft == resource.RLIM_INFINITY else min(configured, soft - reserve)
    if limit < 1:
        raise ConfigError(
            f"the descriptor limit ({soft}) leaves no room for connections; raise it "
            f"(ulimit -n, LimitNOFILE=) to at least {want}"
        )
    _log(
        logging.INFO if limit == configured else logging.WARNING,
        "connection_limit",
        limit=limit,
        configured=configured,
        nofile_soft=None if soft == resource.RLIM_INFINITY else soft,
        nofile_hard=None if hard == resource.RLIM_INFINITY else hard,
        raised_from=raised_from,
    )
    return limit


def _snapshot_sequence(store) -> int | None:
    """The snapshot's own sequence (``revocation_sequence`` is the newest delta's)."""
    if store is None:
        return None
    return getattr(store, "snapshot_sequence", store.sequence)


def _tls_failure(e: BaseException) -> str:
    """A short reason for the log: the verification error or the exception's class."""
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"certificate: {e.verify_message}"
    if isinstance(e, ssl.SSLError):
        return f"tls: {e.reason or e}"
    # asyncio reports a handshake timeout as ConnectionAbortedError("... taking longer than ...").
    if isinstance(e, (TimeoutError, asyncio.TimeoutError)) or "longer than" in str(e):
        return "timeout: handshake not completed in time"
    return f"connection: {type(e).__name__}"


def _subject(transport) -> str | None:
    cert = transport.get_extra_info("peercert")
    if not cert:
        return None
    return ",".join("=".join(pair) for rdn in cert.get("subject", ()) for pair in rdn)


def open_revocation(cfg: Config):
    """The revocation store named by the configuration, or None when none is configured."""
    if not cfg.revocation.snapshot:
        if cfg.revocation.deltas:
            raise ConfigError("revocation.deltas needs revocation.snapshot")
        return None
    from engine.revocation.store import RevocationFileError, RevocationStore

    try:
        return RevocationStore(
            cfg.revocation.snapshot,
            cfg.revocation.deltas,
            private_dir=cfg.revocation.private_dir or None,
        )
    except RevocationFileError as e:
        raise ConfigError(f"revocation: {e}") from None


async def serve(cfg: Config, *, ready: Callable[[Server], None] | None = None) -> int:
    """Runs until SIGTERM or SIGINT, then drains; SIGHUP reloads.  Returns the exit status."""
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_log_loop_exception)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before loading: a stop always drains
        loop.add_signal_handler(sig, stop.set)
    server = Server(cfg)
    await server.start()
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(server.reload("SIGHUP")))
    if ready is not None:
        ready(server)
    await stop.wait()
    await server.drain()
    return 0


def _log_loop_exception(loop, context: dict) -> None:
    error = context.get("exception")
    _log(
        logging.ERROR,
        "internal_error",
        message=context.get("message"),
        error=repr(error) if error else None,
    )


def run(cfg: Config, *, ready: Callable[[Server], None] | None = None) -> int:
    try:
        import uvloop
    except ImportError:  # the engine runs on the default loop too, just slower
        return asyncio.run(serve(cfg, ready=ready))
    return uvloop.run(serve(cfg, ready=ready))
