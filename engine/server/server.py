"""The server process: asyncio (uvloop or the standard loop) TCP or TLS, msgpack frames,
cross-connection batching; this module composes the parts and owns what is the
whole process's.

``Server`` owns the listener (and the TLS accept loop, so that every connection is
counted and timed from its TCP accept, handshake included), the connection registry
and its limit, the sweep (idle connections, frames not completed in time), drain,
status and the gauges, and the answers to the requests that verify nothing (ping,
status, revocation_check).  The request path is the batcher's
(``engine.server.batcher``), the data in service the reloader's
(``engine.server.reload``), the per-socket protocol the connection's
(``engine.server.connection``), the limits admission's (``engine.server.admission``).

Everything is bounded: connections, presentations in flight per connection and in
total (beyond them: an immediate BUSY), frame size, time to complete a frame, idle
time, protocol errors per connection, the drain (``server.drain_timeout_s``).  A
client that does not read its responses is paused instead of being buffered without
bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import itertools
import logging
import os
import signal
import socket
import ssl
import struct
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

from engine import __version__, _core
from engine.redis_replay.store import RedisReplayStore
from engine.replay import MemoryReplayCache, ReplayStore
from engine.revocation.source import CARD, CREDENTIAL, RevocationSource
from engine.revocation.store import RevocationStore
from engine.server import logs, notify
from engine.server import proxy_protocol as pp
from engine.server.admission import Admission, connection_limit
from engine.server.agent import Agent
from engine.server.batcher import Batcher
from engine.server.config import Config, ConfigError, ServerSection
from engine.server.connection import Connection, Hooks
from engine.server.fetcher import Fetcher, hang_up_supervisor
from engine.server.metrics import ServerMetrics
from engine.server.reload import Reloader, open_revocation, open_trust
from engine.sigverify import use_simd
from engine.verifier import Verifier, VerifierConfig
from engine.wire import protocol as proto

__all__ = [
    "Server",
    "WorkerProcess",
    "connection_limit",
    "open_revocation",
    "run",
    "serve",
    "tls_context",
]

SWEEP_INTERVAL_S = 0.5
# A supervised worker's own metrics endpoint, scraped by the supervisor only.
WORKER_METRICS_HOST = "127.0.0.1"

_log = logs.event


@dataclasses.dataclass
class WorkerProcess:
    """A serving process's place under a supervisor (``engine.server.supervisor``)."""

    index: int  # 0 .. processes-1; a restarted worker keeps its predecessor's
    processes: int
    # A SIGHUP that came after the fork and before the loop's handler: reload at start.
    hangup_pending: bool = False
    # The pipe to the supervisor, and how often the loop reports on it (0: never;
    # engine.server.notify, "Under a supervisor").
    report: int | None = None
    heartbeat_s: float = 0.0


class Server:
    """Owns the listening socket, the connections, the batcher and the data in service."""

    def __init__(
        self,
        cfg: Config,
        *,
        clock: Callable[[], float] = time.time,
        revocation: RevocationSource | None = None,
        replay: ReplayStore | None = None,
        process: WorkerProcess | None = None,
    ):
        """``revocation`` and ``replay`` replace the stores named by the configuration
        (tests, embedding, a supervisor's table shared by its workers).  ``process``:
        this server is one of a supervisor's workers, sharing the port (SO_REUSEPORT)
        and serving its metrics to the supervisor only."""
        self.cfg = cfg.validate()
        self.process = process
        self.clock = clock
        root_public_key, trust = open_trust(cfg)
        v = cfg.verification
        use_simd(v.simd)
        self.metrics = ServerMetrics()
        self.verifier = Verifier(
            trust,
            revocation=revocation if revocation is not None else open_revocation(cfg, trust),
            replay=replay if replay is not None else open_replay(cfg, self.metrics, clock),
            config=VerifierConfig(
                freshness_ms=v.freshness_ms,
                skew_ms=v.skew_ms,
                max_revocation_age_s=cfg.revocation.max_age_s,
                revocation_fail_open=cfg.revocation.fail_open,
                threads=cfg.batching.threads or None,
            ),
            clock=clock,
        )
        # 0: the cores, shared out among the processes (each has its own threads).
        processes = 1 if process is None else process.processes
        self.workers = cfg.batching.workers or max(1, _core.cpu_count() // processes)
        self.admission = Admission(
            cfg.server.max_in_flight,
            cfg.server.max_queue_ms / 1000,
            self.workers,
            # One batch verifying and one filling per worker are never too many.
            floor=max(cfg.server.max_batch_items, 2 * cfg.batching.max_batch * self.workers),
            max_batch=cfg.batching.max_batch,
        )
        self.connections: set[Connection] = set()
        self.by_slot: dict[int, Connection] = {}  # how the batcher finds a request's connection
        self.batcher = Batcher(
            self.verifier,
            self.cfg,
            self.metrics,
            self.admission,
            self.workers,
            connection=self.by_slot.get,
            answer=self._answer,
        )
        self.reloader = Reloader(
            self.verifier, self.cfg, self.metrics, root_public_key, reloaded=self._update_gauges
        )
        self.started_at = time.time()
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._hooks: Hooks = None  # type: ignore[assignment]  # for the connections, at start
        self._server: asyncio.AbstractServer | None = None
        self._listener: socket.socket = None  # type: ignore[assignment]
        self._accepting: asyncio.Task[Any] | None = None
        self._metrics_http: WSGIServer | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._tls: ssl.SSLContext | None = None
        self.max_connections = cfg.server.max_connections  # bounded by descriptors at start
        self._full_log = logs.RateLimited()
        self._accept_log = logs.RateLimited()
        self._handshakes: set[asyncio.Task[Any]] = set()
        self._stopped = asyncio.Event()
        self.agent: Agent | None = None  # server.agent_port, at start
        self.fetcher: Fetcher | None = None  # revocation.source_url, at start
        self._drain_begun = False  # from the first drain call: the agent answers "drain"
        self._notice_over = asyncio.Event()
        # systemd (alone) or the supervisor (a worker): READY, RELOADING, STOPPING, the
        # watchdog fed from the loop (engine.server.notify).
        self.notify: notify.Watcher
        if process is None:
            self.notify = notify.Systemd(notify.Notifier.from_environ())
        elif process.report is not None and process.heartbeat_s > 0:
            self.notify = notify.ToSupervisor(process.report, process.heartbeat_s)
        else:  # a worker that reports nothing: systemd hears the supervisor only
            self.notify = notify.Systemd(notify.Notifier(None))
        self._hangups: set[asyncio.Task[Any]] = set()

    # --- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        if self.cfg.batching.switch_interval_ms > 0:
            # A verification thread needs the GIL for a moment at each stage of a batch;
            # with Python's default 5 ms it waits that long whenever the event loop is
            # busy (overload), starving the workers (docs/OPERATIONS.md, "Admission").
            sys.setswitchinterval(self.cfg.batching.switch_interval_ms / 1000)
        s = self.cfg.server
        self._hooks = Hooks(
            loop=self.loop,
            settings=s,
            metrics=self.metrics,
            new_slot=itertools.count().__next__,
            made=self.connection_made,
            frames=self.batcher.handle_frames,
            lost=self.connection_lost,
            proxy_from=pp.networks(s.proxy_protocol_from),
        )
        self._tls = self._tls_context()
        self.max_connections = connection_limit(s.max_connections, self.workers)
        self.metrics.connection_limit.set(self.max_connections)
        # Workers of one supervisor each listen on the same port; the kernel spreads the
        # connections among them (docs/OPERATIONS.md, "Several processes per node").
        reuse_port = self.process is not None
        if self._tls is None:
            self._server = await self.loop.create_server(
                lambda: Connection(self._hooks), s.host, s.port, backlog=1024, reuse_port=reuse_port
            )
            self._listener = self._server.sockets[0]
        else:
            # TLS connections are accepted here rather than by an asyncio server, so each
            # is counted and timed from its TCP accept, handshake included, and a failed
            # handshake is seen (asyncio's server hides both until a handshake succeeds).
            family = socket.AF_INET6 if ":" in s.host else socket.AF_INET
            self._listener = socket.create_server(
                (s.host, s.port), family=family, backlog=1024, reuse_port=reuse_port
            )
            self._listener.setblocking(False)
            self._accepting = self.loop.create_task(self._accept_tls())
            self._tasks.append(self._accepting)
        self.batcher.start(self.loop)
        store = self.verifier.replay
        if isinstance(store, RedisReplayStore):
            # Reached once before serving, off the loop: the first batch pays no connect,
            # and status shows the store's state from the start.
            await self.loop.run_in_executor(None, store.connect)
        m = self.cfg.metrics
        if m.port:
            from prometheus_client import start_http_server

            # A worker's metrics go to its supervisor, which serves them all on metrics.port.
            host, port = (m.host, m.port) if self.process is None else (WORKER_METRICS_HOST, 0)
            self._metrics_http, _ = start_http_server(port, host, registry=self.metrics.registry)
        self._tasks.append(self.loop.create_task(self._sweep()))
        if s.agent_port:
            self.agent = Agent(s.host, s.agent_port, lambda: self._drain_begun)
            await self.agent.start()
        self.reloader.start()
        if self.cfg.revocation.source_url and (self.process is None or self.process.index == 0):
            self.fetcher = Fetcher(
                self.cfg, lambda: self.verifier.trust_list, self.metrics, self._synced
            )
            self.fetcher.start()
        self._update_gauges()
        _log(
            logging.INFO,
            "listening",
            address=f"{s.host}:{self.port}",
            metrics=f"{m.host}:{self.metrics_port}" if m.port and self.process is None else None,
            pid=os.getpid(),
            agent=f"{s.host}:{self.agent.port}" if self.agent else None,
            proxy_protocol_from=s.proxy_protocol_from or None,
            tls=bool(s.tls_cert),
            mutual_tls=bool(s.tls_client_ca),
            trust_list_sequence=self.verifier.trust_list.sequence,
            revocation_sequence=self._revocation_sequence(),
            version=__version__,
        )
        self._tasks.append(
            self.loop.create_task(
                notify.watch_loop(
                    self.metrics.loop_lag.observe_one,
                    lambda: self.notify.alive(self.serving()),
                    self.notify.every_s,
                )
            )
        )
        self.notify.ready(self.serving())

    def serving(self) -> notify.Serving:
        """What is in service, for systemd's STATUS (or the supervisor's)."""
        return notify.Serving(
            self.verifier.trust_list.sequence,
            self._revocation_sequence(),
            len(self.connections),
            self._drain_begun,
        )

    def hangup(self) -> None:
        """SIGHUP: a reload, with RELOADING=1 before and READY=1 once it ended, loaded
        or not (systemd's ``ExecReload=`` and ``systemctl reload``)."""
        self.notify.reloading()
        task = self.loop.create_task(self.reload("SIGHUP"))
        self._hangups.add(task)  # the loop keeps only a weak reference
        task.add_done_callback(self._hangups.discard)
        task.add_done_callback(lambda _: self.notify.reloaded(self.serving()))

    @property
    def port(self) -> int:
        port: int = self._listener.getsockname()[1]
        return port

    @property
    def metrics_port(self) -> int | None:
        return self._metrics_http.server_address[1] if self._metrics_http else None

    @property
    def in_flight(self) -> int:
        """Presentations admitted and not yet answered."""
        return self.batcher.in_flight

    @property
    def draining(self) -> bool:
        return self.batcher.draining

    async def wait_stopped(self) -> None:
        """Returns once ``drain`` has finished (on the server's loop)."""
        await self._stopped.wait()

    async def reload(self, why: str = "signal") -> bool:
        """Loads the trust list and revocation data again (``Reloader.reload``), and the
        TLS certificate, key and client CA: new connections get the new context,
        connections already open keep theirs (certificate rotation without a restart)."""
        ok = await self.reloader.reload(why)
        if self._tls is None:
            return ok
        try:
            tls = await self.loop.run_in_executor(None, tls_context, self.cfg.server)
        except ConfigError as e:
            self.reloader.reload_outcome("tls", "failed", why, error=str(e))
            return False
        if tls is not None:
            self._tls = tls
            self.reloader.reload_outcome("tls", "ok", why, certificate=self.cfg.server.tls_cert)
        return ok

    def end_notice(self) -> None:
        """Ends the drain notice at once (a second SIGTERM, or a second ``drain``)."""
        self._notice_over.set()

    async def drain(self) -> None:
        """Stop accepting, answer everything in flight, flush, close; bounded in time.

        With the agent on, a notice comes first: for ``server.drain_notice_s`` the
        agent answers "drain" while everything is served as usual, so the balancer
        stops sending new connections here before the listener closes."""
        if self._drain_begun:
            self.end_notice()
            await self._stopped.wait()
            return
        self._drain_begun = True
        self.notify.stopping()
        notice = self.cfg.server.drain_notice_s
        if self.agent is not None and notice > 0:
            _log(logging.INFO, "drain_notice", seconds=notice, connections=len(self.connections))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._notice_over.wait(), notice)
        self.batcher.drain()  # BUSY (draining) for what comes in; no waiting for fuller batches
        deadline = self.loop.time() + self.cfg.server.drain_timeout_s
        _log(logging.INFO, "draining", in_flight=self.in_flight, connections=len(self.connections))
        if self._server is not None:
            self._server.close()
        elif self._accepting is not None:
            self._accepting.cancel()
            self._listener.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.batcher.wait_idle(), max(0.0, deadline - self.loop.time()))
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
        self.reloader.stop()
        if self.fetcher is not None:
            self.fetcher.stop()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
        self.batcher.stop()
        if isinstance(self.verifier.replay, RedisReplayStore):
            self.verifier.replay.close()
        if self.agent is not None:  # last: "drain" until everything is answered
            self.agent.stop()
        _log(logging.INFO, "stopped", unanswered=self.in_flight)
        self._stopped.set()

    def _tls_context(self) -> ssl.SSLContext | None:
        return tls_context(self.cfg.server)

    # --- connections --------------------------------------------------------------------

    def connection_made(self, conn: Connection) -> None:
        if conn.handshaking:  # TLS: admitted at accept (_accept_tls), handshake done
            conn.handshaking = False
            conn.last_frame = self.loop.time()
            conn.identity = _certificate_digest(conn.stream)
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
                self._accept_log(logging.ERROR, "accept_failed", error=e.strerror)
                await asyncio.sleep(0.1)
                continue
            if self._full():
                # Nothing can be said to a TLS client before a handshake, and a refused
                # connection must not cost one: reset at once.
                self.metrics.protocol_errors.labels(proto.SERVER_FULL).inc()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
                continue
            conn = Connection(self._hooks)
            conn.handshaking = True
            conn.peer = f"{addr[0]}:{addr[1]}"
            self.connections.add(conn)
            self.by_slot[conn.slot] = conn
            task = self.loop.create_task(self._handshake(conn, sock, addr[0]))
            self._handshakes.add(task)  # the loop keeps only a weak reference
            task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, conn: Connection, sock: socket.socket, host: str) -> None:
        timeout = self.cfg.server.tls_handshake_timeout_s
        if self._hooks.proxy_from and pp.from_balancer(self._hooks.proxy_from, host):
            # The header comes before the TLS handshake, and within its time.
            try:
                header = await asyncio.wait_for(_read_proxy_header(self.loop, sock), timeout)
            except (pp.ProxyProtocolError, asyncio.TimeoutError, OSError) as e:
                reason = str(e) if isinstance(e, pp.ProxyProtocolError) else _tls_failure(e)
                self.metrics.protocol_errors.labels(pp.ERROR_CODE).inc()
                _log(logging.WARNING, "proxy_protocol_error", peer=conn.peer, reason=reason)
                sock.close()
                conn.closed = True
                self.connection_lost(conn)
                return
            if header.source is not None:
                conn.peer = f"{header.source[0]}:{header.source[1]}"
            timeout = max(0.001, timeout - (self.loop.time() - conn.last_frame))
        try:
            await self.loop.connect_accepted_socket(
                lambda: conn,
                sock,
                ssl=self._tls,
                ssl_handshake_timeout=timeout,
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
            _log(logging.DEBUG, "tls_client", peer=conn.peer, subject=_subject(conn.stream))

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
                if conn.proxy_header is not None:  # no frame yet: nothing is answered
                    if (
                        conn.partial_since is not None
                        and now - conn.partial_since > s.frame_timeout_s
                    ):
                        conn.proxy_error("header not completed in time")
                elif (
                    conn.partial_since is not None and now - conn.partial_since > s.frame_timeout_s
                ):
                    conn.close_with_error(proto.FRAME_TIMEOUT, "frame not completed in time")
                elif conn.in_flight == 0 and now - conn.last_frame > s.idle_timeout_s:
                    _log(logging.INFO, "connection_idle_closed", peer=conn.peer)
                    conn.close()
            self._update_gauges()
            self.reloader.check_revocation_readable()

    # --- requests that verify nothing ---------------------------------------------------

    def _answer(self, conn: Connection, req: proto.Request) -> None:
        """ping, status and revocation_check (the batcher takes the verify requests)."""
        if req.type == proto.PING:
            conn.send(proto.response(req.id, {"pong": True}))
        elif req.type == proto.STATUS:
            conn.send(proto.response(req.id, {"status": self.status()}))
        else:
            self._revocation_check(conn, req)

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

    def status(self) -> dict[str, Any]:
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
            "revocation": self._revocation_status(),
            "replay_store": _replay_status(self.verifier.replay),
            # Which process answered: under a supervisor, the one the kernel gave the
            # connection to (docs/OPERATIONS.md, "Several processes per node").
            "worker": 0 if self.process is None else self.process.index,
            "pid": os.getpid(),
            "processes": 1 if self.process is None else self.process.processes,
            # CPU seconds: the whole process, and inside native signature verification.
            "cpu_s": round(time.process_time(), 6),
            "native_verify_cpu_s": round(_core.native_cpu_seconds(), 6),
        }

    def _synced(self) -> None:
        """On the fetcher's thread: new data is installed; every process reloads it."""
        if self.process is None:
            self.loop.call_soon_threadsafe(self.reloader.reload_soon, "revocation synced")
        else:
            hang_up_supervisor()

    def _revocation_status(self) -> dict[str, Any] | None:
        store = self.verifier.revocation
        if store is None:
            return None
        r = self.cfg.revocation
        doc: dict[str, Any] = {
            "source": r.source_url or "files",
            "require_signature": r.require_signature,
            "expires_at": getattr(store, "expires_at", None),
        }
        if isinstance(store, RevocationStore):
            described = store.describe()
            doc.update(
                snapshot=described["snapshot"],
                deltas=described["deltas"],
                manifest=described["manifest"],
                unsigned=described["unsigned"],
            )
        if self.fetcher is not None:
            doc["sync"] = self.fetcher.status()
        return doc

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
        m.revocation_expires.set(getattr(store, "expires_at", None) or 0)


def open_replay(cfg: Config, metrics: ServerMetrics, clock: Callable[[], float]) -> ReplayStore:
    """The replay store the configuration names: the in-process table, or Redis (a
    server or a Cluster) with a table of this process's in front."""
    v, r = cfg.verification, cfg.replay
    if not r.redis_url and not r.redis_cluster_nodes:
        return MemoryReplayCache(v.replay_capacity)
    tls = None
    if r.redis_tls_ca:
        try:
            tls = ssl.create_default_context(cafile=r.redis_tls_ca)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"replay.redis_tls_ca: {e}") from None
    try:
        return RedisReplayStore(
            redis_url=r.redis_url,
            seeds=r.redis_cluster_nodes,
            timeout_ms=r.redis_timeout_ms,
            horizon_ms=v.freshness_ms + v.skew_ms,
            skew_ms=v.skew_ms,
            safe_retries=r.safe_retries,
            local=MemoryReplayCache(v.replay_capacity),
            registry=metrics.registry,
            tls=tls,
            clock=clock,
        )
    except ValueError as e:
        raise ConfigError(f"replay: {e}") from None


def _replay_status(store: ReplayStore) -> dict[str, Any]:
    if isinstance(store, RedisReplayStore):
        return store.status()
    return {"kind": "memory" if isinstance(store, MemoryReplayCache) else type(store).__name__}


def tls_context(s: ServerSection) -> ssl.SSLContext | None:
    """The server's TLS context, or None without ``server.tls_cert``."""
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


def _snapshot_sequence(store: RevocationSource | None) -> int | None:
    """The snapshot's own sequence (``revocation_sequence`` is the newest delta's)."""
    if store is None:
        return None
    sequence: int = getattr(store, "snapshot_sequence", store.sequence)
    return sequence


async def _read_proxy_header(
    loop: asyncio.AbstractEventLoop, sock: socket.socket
) -> pp.ProxyHeader:
    """The PROXY header from an accepted socket, never a byte more: what follows is the
    TLS handshake, read by the transport."""
    reader = pp.HeaderReader()
    while True:
        data = await loop.sock_recv(sock, reader.wanted())
        if not data:
            raise pp.ProxyProtocolError("connection closed before the header was complete")
        done = reader.feed(data)
        if done is not None:
            return done[0]


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


def _certificate_digest(transport: asyncio.BaseTransport) -> bytes:
    """SHA-256 of the client's certificate (DER); empty when it presented none."""
    tls = transport.get_extra_info("ssl_object")
    der = tls.getpeercert(binary_form=True) if tls is not None else None
    return hashlib.sha256(der).digest() if der else b""


def _subject(transport: asyncio.BaseTransport) -> str | None:
    cert = transport.get_extra_info("peercert")
    if not cert:
        return None
    return ",".join("=".join(pair) for rdn in cert.get("subject", ()) for pair in rdn)


async def serve(
    cfg: Config,
    *,
    ready: Callable[[Server], None] | None = None,
    replay: ReplayStore | None = None,
    process: WorkerProcess | None = None,
) -> int:
    """Runs until SIGTERM or SIGINT, then drains; SIGHUP reloads.  Returns the exit status.

    ``replay`` and ``process``: a supervisor's worker (``Server``)."""
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_log_loop_exception)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before loading: a stop always drains
        loop.add_signal_handler(sig, stop.set)
    # A SIGHUP while loading (or between READY=1 and serving) must not kill the process
    # (its default action): it is remembered and reloads once serving.
    hangups: list[None] = []
    loop.add_signal_handler(signal.SIGHUP, hangups.append, None)
    server = Server(cfg, replay=replay, process=process)
    await server.start()
    loop.add_signal_handler(signal.SIGHUP, server.hangup)
    if hangups or (process is not None and process.hangup_pending):  # data may have changed
        server.hangup()
    if ready is not None:
        ready(server)
    await stop.wait()
    for sig in (signal.SIGTERM, signal.SIGINT):  # a second one ends the drain notice
        loop.add_signal_handler(sig, server.end_notice)
    await server.drain()
    return 0


def _log_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    error = context.get("exception")
    _log(
        logging.ERROR,
        "internal_error",
        message=context.get("message"),
        error=repr(error) if error else None,
    )


def run(
    cfg: Config,
    *,
    ready: Callable[[Server], None] | None = None,
    replay: ReplayStore | None = None,
    process: WorkerProcess | None = None,
) -> int:
    main = serve(cfg, ready=ready, replay=replay, process=process)
    try:
        import uvloop
    except ImportError:  # the engine runs on the default loop too, just slower
        return asyncio.run(main)
    return uvloop.run(main)
