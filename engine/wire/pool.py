"""The client a payment network embeds: a pool of connections to a fleet of engine
nodes, with deadlines, retries and failover (docs/PROTOCOL.md, section 8).

    async with FleetClient(["10.0.0.1:7700", "10.0.0.2:7700"], ssl=ctx) as fleet:
        result = await fleet.verify(presentation, context={"merchant_id": "m-1"})
        if result.verdict is Verdict.OK: ...

Every call returns within its deadline (``deadline``, 2 s by default) with an answer
per presentation: the verdict a server gave, or, when no server gave one in time,
``BUSY`` with a reason starting "deadline passed" (or "gave up", when the retries ran
out first).  A BUSY result is never a verdict on the card: decline or ask again.
A batch's items that were answered keep their verdicts whatever happens to the others,
so nothing is raised for a transient failure; errors that say the request itself is
wrong (``bad_request``, ``too_many_items``, ...) raise ``ServerError``, and a call on a
closed client raises ``FleetClosed``.

What is retried, always on another connection (and another endpoint when one is up)
after a jittered exponential back-off:

- items answered BUSY (per item: a batch resends only those) or
  REVOCATION_DATA_STALE (a node whose data is old; the last such answer is returned if
  every node says so);
- a request whose connection was lost before its answer, or that got no answer within
  its attempt's time (``attempt_timeout``, half the deadline by default), or that was
  answered ``internal_error``;
- a request for which no connection could be made (the call waits for one, within its
  deadline).

No other verdict is ever retried.  Every attempt carries the same ``context``: a
server with safe retries keys the relying party on it and answers the retry of a
presentation it already accepted with the original OK and ``repeat=True``.  Without
safe retries such a retry (the first answer lost, or timed out) comes back REPLAYED:
the presentation was accepted once, but this caller cannot tell; treat it as "not
verified" and ask the holder for a fresh QR code.

Connections: ``connections`` per endpoint, opened at ``start()`` or at the first
call, each replaced in the background when lost.  An endpoint whose connects fail,
that drains (BUSY "draining") or that stops answering is marked down for an
exponentially growing, jittered, capped time; calls go elsewhere meanwhile (or to it
as a last resort when nothing else is up).  Requests go round-robin over the endpoints
in the order given, to the least loaded connection of each.  A FleetClient belongs to
the event loop of its first call.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import ssl as ssl_mod
from collections.abc import Iterable, Sequence
from typing import Any

from engine.errors import EsscError
from engine.verdicts import Result, Verdict
from engine.wire import protocol as proto
from engine.wire.client import Client, ServerError

DEFAULT_PORT = 7700
DRAINING = "draining"  # the reason of the BUSY answers of a server shutting down

# Answers that say nothing about the card, worth asking another node.
_RETRY_VERDICTS = frozenset({Verdict.BUSY, Verdict.REVOCATION_DATA_STALE})


class FleetClosed(EsscError):
    """The FleetClient was closed."""


class FleetUnavailable(EsscError):
    """No endpoint answered a (non-verify) request within its deadline."""


@dataclasses.dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    ssl: ssl_mod.SSLContext | None = None

    @classmethod
    def parse(cls, text: str, ssl: ssl_mod.SSLContext | None = None) -> Endpoint:
        """``HOST:PORT``, ``[IPv6]:PORT`` or ``HOST`` (port 7700)."""
        text = text.strip()
        host, sep, port = text.rpartition(":")
        if not sep or (host.count(":") and not host.startswith("[")):  # bare IPv6 or no port
            host, port = text, str(DEFAULT_PORT)
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"endpoint {text!r}: expected HOST:PORT")
        return cls(host, int(port), ssl)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclasses.dataclass
class FleetCounters:
    """What the client did, for callers' metrics and for tests (monotonic counts)."""

    calls: int = 0  # verify, verify_batch and request calls
    attempts: int = 0  # requests sent to a server (a batch counts once)
    retries: int = 0  # attempts after a call's first
    failovers: int = 0  # retries sent to another endpoint than the attempt before
    answered: int = 0  # attempts that got an answer
    busy: int = 0  # items answered BUSY (or REVOCATION_DATA_STALE) and retried
    lost: int = 0  # attempts whose connection closed before the answer
    timeouts: int = 0  # attempts without an answer within their time
    internal_errors: int = 0  # attempts answered internal_error
    repeats: int = 0  # OK answers with repeat (a safe retry the server recognised)
    gave_up: int = 0  # items answered BUSY by this client: deadline passed or retries spent
    connects: int = 0
    connect_failures: int = 0


class EndpointState:
    """One endpoint as the client sees it (``FleetClient.endpoints``)."""

    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint
        self.conns: list[_Conn] = []
        self.failures = 0  # consecutive: connects failed, drains, silences
        self.down_until = 0.0  # loop time
        self.last_error = ""
        self.tried = asyncio.Event()  # a first connect has succeeded or failed
        self.attempts = 0
        self.answered = 0
        self.connect_failures = 0

    @property
    def connected(self) -> int:
        """Open connections that take requests."""
        return sum(1 for c in self.conns if c.usable)

    def down(self, now: float) -> bool:
        return now < self.down_until

    def __repr__(self) -> str:
        return (
            f"<EndpointState {self.endpoint} connected={self.connected} failures={self.failures}>"
        )


class _Conn:
    def __init__(self, ep: EndpointState, client: Client):
        self.ep = ep
        self.client = client
        self.retired = False  # the server drains: no new requests
        self.answered = False

    @property
    def usable(self) -> bool:
        return not self.retired and not self.client.closed


class FleetClient:
    def __init__(
        self,
        endpoints: Iterable[str | tuple[str, int] | Endpoint],
        *,
        ssl: ssl_mod.SSLContext | None = None,
        connections: int = 2,
        deadline: float = 2.0,
        attempt_timeout: float | None = None,
        retries: int = 6,
        connect_timeout: float = 1.0,
        retry_backoff: tuple[float, float] = (0.005, 0.2),
        down_backoff: tuple[float, float] = (0.05, 5.0),
    ):
        """``deadline``, ``attempt_timeout`` (None: half the call's deadline) and
        ``connect_timeout`` in seconds; ``retries``: attempts after the first, per call;
        ``retry_backoff`` and ``down_backoff``: (first, cap) of the doubling, jittered
        waits before a retry and while an endpoint is down.  ``ssl`` applies to the
        endpoints that have none of their own."""
        eps: list[Endpoint] = []
        for given in endpoints:
            if isinstance(given, str):
                eps.append(Endpoint.parse(given, ssl))
            elif not isinstance(given, Endpoint):
                eps.append(Endpoint(given[0], int(given[1]), ssl))
            elif given.ssl is None and ssl is not None:
                eps.append(dataclasses.replace(given, ssl=ssl))
            else:
                eps.append(given)
        if not eps:
            raise ValueError("a FleetClient needs at least one endpoint")
        if connections < 1 or retries < 0 or deadline <= 0:
            raise ValueError("connections >= 1, retries >= 0 and deadline > 0 expected")
        self._eps = [EndpointState(e) for e in eps]
        self.connections = connections
        self.deadline = deadline
        self.attempt_timeout = attempt_timeout
        self.retries = retries
        self.connect_timeout = connect_timeout
        self.retry_backoff = retry_backoff
        self.down_backoff = down_backoff
        self.counters = FleetCounters()
        self._random = random.Random()
        self._rr = 0
        self._keepers: list[asyncio.Task[None]] = []
        self._changed: asyncio.Event | None = None
        self._closed = False

    @property
    def endpoints(self) -> tuple[EndpointState, ...]:
        return tuple(self._eps)

    async def __aenter__(self) -> FleetClient:
        self._ensure_started()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self, timeout: float | None = None) -> int:
        """Opens the connections and waits until every endpoint has connected or
        failed once (at most ``timeout``, default the connect timeout); returns how
        many endpoints are connected.  Never raises for an endpoint that is down."""
        self._ensure_started()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(ep.tried.wait() for ep in self._eps)),
                self.connect_timeout + 0.5 if timeout is None else timeout,
            )
        return sum(1 for ep in self._eps if ep.connected)

    async def close(self) -> None:
        self._closed = True
        for task in self._keepers:
            task.cancel()
        for task in self._keepers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._keepers = []
        for ep in self._eps:
            for conn in ep.conns:
                await conn.client.close()
            ep.conns = []
        self._notify()

    # --- calls ------------------------------------------------------------------------

    async def verify(
        self,
        presentation: bytes,
        *,
        context: dict[str, Any] | None = None,
        deadline: float | None = None,
    ) -> Result:
        """One presentation's result (BUSY "deadline passed ..." if none in time)."""
        (result,) = await self._verify([presentation], context, deadline, batch=False)
        return result

    async def verify_batch(
        self,
        presentations: Sequence[bytes],
        *,
        context: dict[str, Any] | None = None,
        deadline: float | None = None,
    ) -> list[Result]:
        """Results in order; items answered BUSY are retried alone and merged back."""
        if not presentations:
            return []
        return await self._verify(list(presentations), context, deadline, batch=True)

    async def request(
        self, kind: str, *, deadline: float | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Any other request (ping, status, revocation_check), retried on another
        connection when lost or answered internal_error; FleetUnavailable when no
        answer came in time, ServerError for any other error response."""
        self.counters.calls += 1
        loop = asyncio.get_running_loop()
        budget = self.deadline if deadline is None else deadline
        until = loop.time() + budget
        prev: _Conn | None = None
        why = "no attempt"
        for k in range(self.retries + 1):
            if k and not await self._back_off(k, until):
                break
            conn = await self._acquire(prev, until, retry=k > 0)
            if conn is None:
                why = self._no_connection_reason()
                break
            try:
                return await self._send(conn, kind, fields, until, budget)
            except _AttemptFailed as e:
                why = str(e)
            prev = conn
        raise FleetUnavailable(f"no answer within {budget * 1000:.0f} ms: {why}")

    async def _verify(
        self,
        items: list[bytes],
        context: dict[str, Any] | None,
        deadline: float | None,
        *,
        batch: bool,
    ) -> list[Result]:
        self.counters.calls += 1
        loop = asyncio.get_running_loop()
        budget = self.deadline if deadline is None else deadline
        until = loop.time() + budget
        # The same context on every attempt: a server keys safe retries on it.
        ctx = dict(context) if context else None
        results: list[Result | None] = [None] * len(items)
        last: dict[int, Result] = {}
        pending = list(range(len(items)))
        prev: _Conn | None = None
        why = "no attempt"
        attempts = 0
        while pending and attempts <= self.retries:
            if attempts and not await self._back_off(attempts, until):
                why = f"deadline passed ({budget * 1000:.0f} ms, {attempts} attempts): {why}"
                break
            conn = await self._acquire(prev, until, retry=attempts > 0)
            if conn is None:
                why = (
                    f"deadline passed ({budget * 1000:.0f} ms, {attempts} attempts): "
                    f"{self._no_connection_reason() if not attempts else why}"
                )
                break
            attempts += 1
            prev = conn
            fields: dict[str, Any]
            if batch:
                fields = {"presentations": [items[i] for i in pending]}
            else:
                fields = {"presentation": items[pending[0]]}
            if ctx:
                fields["context"] = ctx
            try:
                answer = await self._send(
                    conn, proto.VERIFY_BATCH if batch else proto.VERIFY, fields, until, budget
                )
            except _AttemptFailed as e:
                why = str(e)
                continue
            maps = answer["results"] if batch else [answer]
            still = []
            for i, m in zip(pending, maps, strict=True):
                r = Result.from_map(m)
                if r.verdict in _RETRY_VERDICTS:
                    last[i] = r
                    still.append(i)
                    if r.reason == DRAINING:
                        self._retire(conn)
                else:
                    results[i] = r
                    if r.repeat:
                        self.counters.repeats += 1
            if still:
                self.counters.busy += len(still)
                r = last[still[0]]
                why = f"{r.verdict.name} from {conn.ep.endpoint}" + (
                    f": {r.reason}" if r.reason else ""
                )
            pending = still
        else:
            if pending:
                why = f"gave up after {attempts} attempts: {why}"
        for i in pending:
            self.counters.gave_up += 1
            prior = last.get(i)
            if prior is not None and prior.verdict is Verdict.REVOCATION_DATA_STALE:
                results[i] = prior  # a real answer: every node tried has old data
            else:
                results[i] = Result(Verdict.BUSY, why)
        return [r for r in results if r is not None]

    # --- one attempt ------------------------------------------------------------------

    async def _send(
        self, conn: _Conn, kind: str, fields: dict[str, Any], until: float, budget: float
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        ep = conn.ep
        self.counters.attempts += 1
        ep.attempts += 1
        per_attempt = budget / 2 if self.attempt_timeout is None else self.attempt_timeout
        timeout = max(0.0, min(per_attempt, until - loop.time()))
        try:
            answer = await asyncio.wait_for(conn.client.request(kind, **fields), timeout)
        except asyncio.TimeoutError:
            self.counters.timeouts += 1
            if timeout >= per_attempt:
                # A node that answers nothing for a whole attempt's time is sick (an
                # overloaded one says BUSY at once): elsewhere first, while it is down.
                self._mark_down(ep, "no answer in time")
            raise _AttemptFailed(
                f"{ep.endpoint}: no answer within {timeout * 1000:.0f} ms"
            ) from None
        except ConnectionError as e:
            self.counters.lost += 1
            raise _AttemptFailed(
                f"{ep.endpoint}: connection lost before the answer ({e})"
            ) from None
        except ServerError as e:
            if e.code != proto.INTERNAL_ERROR:
                raise
            self.counters.internal_errors += 1
            raise _AttemptFailed(f"{ep.endpoint}: internal_error: {e.message}") from None
        self.counters.answered += 1
        ep.answered += 1
        if conn.retired and conn.client.in_flight == 0:
            await conn.client.close()  # its last answer: the keeper replaces it
        if not conn.answered:
            conn.answered = True
            ep.failures = 0  # it works: the next trouble starts the back-off afresh
        return answer

    async def _back_off(self, attempt: int, until: float) -> bool:
        """Waits before retry number ``attempt``; False when that would pass ``until``."""
        first, cap = self.retry_backoff
        delay = self._jitter(min(cap, first * 2 ** (attempt - 1)))
        loop = asyncio.get_running_loop()
        if loop.time() + delay >= until:
            return False
        await asyncio.sleep(delay)
        self.counters.retries += 1
        return True

    def _jitter(self, delay: float) -> float:
        # Half fixed, half random: callers that failed together do not retry together.
        return delay * (0.5 + 0.5 * self._random.random())

    # --- choosing a connection --------------------------------------------------------

    async def _acquire(self, prev: _Conn | None, until: float, *, retry: bool) -> _Conn | None:
        """A connection for the next attempt: never ``prev`` (nor its endpoint) when
        another is usable; waits for one until ``until``; None when none came."""
        if self._closed:
            raise FleetClosed("the FleetClient is closed")
        self._ensure_started()
        loop = asyncio.get_running_loop()
        while True:
            conn = self._pick(prev, loop.time())
            if conn is not None:
                if retry and prev is not None and conn.ep is not prev.ep:
                    self.counters.failovers += 1
                return conn
            if self._closed:
                raise FleetClosed("the FleetClient is closed")
            now = loop.time()
            if now >= until:
                return None
            if all(ep.tried.is_set() and ep.down_until >= until for ep in self._eps):
                return None  # every endpoint failed and none is tried again in time
            changed = self._changed
            assert changed is not None
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(changed.wait(), until - now)

    def _pick(self, prev: _Conn | None, now: float) -> _Conn | None:
        n = len(self._eps)
        order = [self._eps[(self._rr + k) % n] for k in range(n)]
        # Preferences, best first: an endpoint up and not the previous one; any up
        # endpoint's other connection; a down endpoint's (last resort); prev itself.
        tiers: tuple[tuple[bool, bool], ...] = ((True, True), (True, False), (False, False))
        for need_up, other_ep in tiers:
            for ep in order:
                if need_up and ep.down(now):
                    continue
                if other_ep and prev is not None and ep is prev.ep:
                    continue
                conns = [c for c in ep.conns if c.usable and c is not prev]
                if conns:
                    self._rr = (self._eps.index(ep) + 1) % n
                    return min(conns, key=lambda c: c.client.in_flight)
        if prev is not None and prev.usable:
            return prev
        return None

    def _no_connection_reason(self) -> str:
        errors = [f"{ep.endpoint}: {ep.last_error}" for ep in self._eps if ep.last_error]
        return "no connection to any endpoint" + (f" ({'; '.join(errors)})" if errors else "")

    # --- endpoints and connections ----------------------------------------------------

    def _ensure_started(self) -> None:
        if self._keepers or self._closed:
            return
        self._changed = asyncio.Event()
        loop = asyncio.get_running_loop()
        for ep in self._eps:
            for _ in range(self.connections):
                self._keepers.append(loop.create_task(self._keep(ep)))

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    def _mark_down(self, ep: EndpointState, why: str) -> None:
        loop = asyncio.get_running_loop()
        ep.failures += 1
        ep.last_error = why
        first, cap = self.down_backoff
        hold = self._jitter(min(cap, first * 2 ** (ep.failures - 1)))
        ep.down_until = max(ep.down_until, loop.time() + hold)

    def _retire(self, conn: _Conn) -> None:
        """The server is draining: nothing new on this connection, closed (by the
        server, or by _send after its last answer) once what it holds is answered; its
        endpoint is down meanwhile."""
        if conn.retired:
            return
        conn.retired = True
        # Only this connection: behind a balancer, the endpoint's other connections
        # may reach other nodes (those to the same node hear "draining" themselves).
        self._mark_down(conn.ep, DRAINING)

    async def _keep(self, ep: EndpointState) -> None:
        """One connection slot of ``ep``: connect, wait for the loss, connect again;
        after a failure, wait while the endpoint is down."""
        loop = asyncio.get_running_loop()
        while not self._closed:
            wait = ep.down_until - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # the back-off itself
                continue  # down_until may have moved meanwhile
            try:
                e = ep.endpoint
                client = await Client.connect(
                    e.host, e.port, ssl=e.ssl, timeout=self.connect_timeout
                )
            except Exception as exc:  # OSError, TLS, timeout: whatever it is, the node is down
                self.counters.connect_failures += 1
                ep.connect_failures += 1
                self._mark_down(ep, _describe(exc) or "connect timed out")
                ep.tried.set()
                self._notify()
                continue
            self.counters.connects += 1
            conn = _Conn(ep, client)
            ep.conns.append(conn)
            ep.tried.set()
            self._notify()
            try:
                await client.wait_closed()
            finally:
                ep.conns.remove(conn)
                await client.close()
            if not conn.answered and not conn.retired:
                # Closed before answering anything (server_full, a refused TLS client
                # certificate): as bad as a failed connect.
                self._mark_down(ep, "closed by the server before any answer")
            self._notify()


class _AttemptFailed(Exception):
    """An attempt without an answer; the text says why (for the final reason)."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()  # asyncio's text names the address again
    return str(exc) or type(exc).__name__
