"""The micro-batcher: verify requests from every connection into shared native batches,
batches to the verification threads, answers back to the connections.

Verify requests are parsed in C straight into the batch being filled
(``add_frames``, the fast path); whatever C declines, every other request type, and
every frame while draining, takes the Python path
(``protocol.parse_request``, then ``add_request``).  A batch goes to a worker when it
holds ``max_batch`` presentations, or when its oldest request has waited
``latency_budget_ms`` (default 0: once this loop iteration's reads are in); while every
worker is busy, batches fill up by themselves.  Workers run the pipeline
(``Verifier.run``, GIL released in the native core) and encode the answers in C, one
buffer per connection; the loop delivers them.

Invariants:
- ``in_flight`` counts presentations admitted and not yet answered, on the loop only;
  a request is admitted whole or answered BUSY whole, and never overfills a batch;
- every admitted request is answered exactly once: with its verdicts, or with
  ``internal_error`` when its batch failed (a bug costs one batch, never the server);
- metrics are counted before the answers are sent, so whoever sees an answer and then
  reads the metrics sees it counted;
- a connection refused for the server's limit is not read again until the next batch
  has been answered (``held_connections``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from engine import _core
from engine.server import logs
from engine.server.admission import Admission
from engine.server.config import Config
from engine.server.connection import Connection
from engine.server.metrics import ServerMetrics
from engine.verdicts import Verdict
from engine.verifier import Verifier, relying_party
from engine.wire import protocol as proto

_log = logs.event

# The native batch type: its requests, their presentations, verdicts and answers.
Batch = _core.RequestBatch


def _new_batch() -> Batch:
    """The one place a batch is made."""
    return Batch()


class Batcher:
    """Owns the filling batch, the batches ready to verify, the verification threads and
    the connections held after a server-limit BUSY.

    ``connection(slot)`` finds a connection by the slot its requests carry (None once
    it has gone); ``answer(conn, request)`` answers every request that is not a verify
    (ping, status, revocation_check), which the batcher leaves to the server.
    """

    def __init__(
        self,
        verifier: Verifier,
        cfg: Config,
        metrics: ServerMetrics,
        admission: Admission,
        workers: int,
        *,
        connection: Callable[[int], Connection | None],
        answer: Callable[[Connection, proto.Request], None],
    ):
        self.verifier = verifier
        self.cfg = cfg
        self.metrics = metrics
        self.admission = admission
        self.workers = workers
        self._connection = connection
        self._answer = answer
        # An audit line carries the request's context (merchant and terminal ids): the
        # C parser keeps them too, when asked, so audit logging stays on the fast path.
        # Safe retries key the relying party on its mTLS identity and context ids.
        self._safe_retries = bool(getattr(verifier.replay, "safe_retries", False))
        self._keep_contexts = cfg.log.audit or self._safe_retries
        self._client_certificates = bool(cfg.server.tls_client_ca)
        self.in_flight = 0  # presentations admitted, not yet answered
        self.busy_workers = 0  # batches handed to the threads, not yet delivered
        self.draining = False
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._filling = _new_batch()  # taking requests now
        self._ready: collections.deque[Batch] = collections.deque()  # full
        self._deferred = False
        self._timer: asyncio.TimerHandle | None = None
        self._idle = asyncio.Event()  # nothing in flight
        self._idle.set()
        self._held: list[Connection] = []  # connections not read until the next batch
        self._busy_log = logs.RateLimited()
        # Verification threads fed by one queue; each hands its batch back to the loop
        # itself.  (An executor's futures cost Python work, locks and thread switches
        # per batch that these do without.)
        self._work: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    # --- life cycle ---------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        for k in range(self.workers):
            thread = threading.Thread(target=self._work_loop, name=f"essc-verify-{k}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def drain(self) -> None:
        """From now on every new request is answered BUSY (draining), and what is queued
        goes to the workers without waiting for fuller batches."""
        self.draining = True
        self._schedule()
        self._release_held()  # what they sent is answered (BUSY, draining) too

    async def wait_idle(self) -> None:
        """Returns once every admitted request has been answered."""
        await self._idle.wait()

    def stop(self) -> None:
        """Ends the verification threads (each when it takes its None)."""
        for _ in self._threads:
            self._work.put(None)

    # --- read-only views (status, tests) ------------------------------------------------

    @property
    def filling_items(self) -> int:
        """Presentations in the batch being filled (read it on the loop)."""
        return len(self._filling)

    @property
    def held_connections(self) -> tuple[Connection, ...]:
        """Connections not read until the next batch is answered (read it on the loop)."""
        return tuple(self._held)

    # --- requests in ------------------------------------------------------------------

    def handle_frames(self, conn: Connection, frames: list[bytes], now: float) -> None:
        """Verify requests go into the filling batch in C (the fast path); everything
        else, and verify requests the fast path declines, through parse_request."""
        s, b = self.cfg.server, self.cfg.batching
        if self.draining:  # every request is answered BUSY, in Python
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
                keep_contexts=self._keep_contexts,
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

    def _slow_frames(
        self, conn: Connection, frames: list[bytes], which: Iterable[int], now: float
    ) -> None:
        max_items = self.cfg.server.max_batch_items
        for k in which:
            if conn.closed:
                return
            try:
                req = proto.parse_request(frames[k], max_items)
            except proto.RequestError as err:
                conn.request_error(err)
                continue
            if req.type == proto.VERIFY or req.type == proto.VERIFY_BATCH:
                self._submit(conn, req, now)
            else:
                self._answer(conn, req)

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

    def _release_held(self) -> None:
        held, self._held = self._held, []
        for conn in held:
            conn.release()

    def _count_busy(self, n: int, reason: str) -> None:
        self.metrics.busy.labels(reason).inc(n)
        self.metrics.requests.labels(Verdict.BUSY.name).inc(n)
        self._busy_log(logging.WARNING, "busy", reason=reason, in_flight=self.in_flight)

    # --- batches to the workers ---------------------------------------------------------

    def _seal(self) -> None:
        self._ready.append(self._filling)
        self._filling = _new_batch()

    def _deferred_schedule(self) -> None:
        self._deferred = False
        self._schedule()

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

    def _dispatch(self, batch: Batch) -> None:
        self.busy_workers += 1
        self._work.put(batch)

    # --- in a verification thread -------------------------------------------------------

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

    def _process(self, batch: Batch) -> list[tuple[int, bytes, int]]:
        """Every stage, then the responses encoded in C."""
        parties = self._parties(batch) if self._safe_retries else None
        # (None also for a batch of anonymous requests: nobody there can get a repeat.)
        reasons = self.verifier.run(batch, parties=parties)
        return batch.encode({i: r.encode() for i, r in reasons.items() if r})

    def _parties(self, batch: Batch) -> list[bytes] | None:
        """Each item's relying party: its connection's identity, its request's ids;
        None when every request is anonymous (no client certificates, no context)."""
        if not self._client_certificates and not any(batch.contexts):
            return None
        out: list[bytes] = []
        for r in range(batch.requests):
            slot, _rid, codes = batch.request_verdicts(r)
            conn = self._connection(slot)
            ctx = batch.contexts[r] or {}
            party = relying_party(
                conn.identity if conn is not None else b"",
                ctx.get("merchant_id"),
                ctx.get("terminal_id"),
            )
            out.extend([party] * len(codes))
        return out

    # --- answers out (on the loop) ------------------------------------------------------

    def _deliver(
        self,
        batch: Batch,
        outputs: list[tuple[int, bytes, int]] | None,
        error: Exception | None,
        took: float,
    ) -> None:
        self.busy_workers -= 1
        count = len(batch)
        if outputs is not None:
            self.admission.batch_done(count, took)
        else:
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
            conn = self._connection(slot)
            if conn is not None:
                conn.in_flight -= items
                conn.send(frames)
        if self.in_flight == 0:
            self._idle.set()
        if self._held:
            self._release_held()
        self._schedule()

    @staticmethod
    def _internal_errors(batch: Batch) -> list[Any]:
        out = []
        for r in range(batch.requests):
            slot, rid, codes = batch.request_verdicts(r)
            frame = proto.error_response(rid, proto.INTERNAL_ERROR, "verification failed")
            out.append((slot, frame, len(codes)))
        return out

    def _audit(self, batch: Batch, now: float) -> None:
        arrivals = batch.arrivals()
        for r in range(batch.requests):
            slot, rid, codes = batch.request_verdicts(r)
            conn = self._connection(slot)
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
