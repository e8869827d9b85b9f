"""One client connection: bytes in, frames out to the batcher, responses back.

A ``Connection`` is an asyncio Protocol and knows nothing of the server above it: what
it calls back is the ``Hooks`` the server hands every connection (one shared object,
so a connection costs one reference, and this module imports nothing of the
server's).

Invariants:
- it never buffers without bound: a client that stops reading its responses stops
  being read (``pause_writing``), and closing never waits on the client for longer
  than ``server.close_grace_s``;
- reading is paused for two independent reasons, the client not reading
  (``write_paused``) and the server's limit (``held``), and resumes only when neither
  holds;
- once ``closed``, nothing more is sent or handed on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from engine.server import logs
from engine.server import proxy_protocol as pp
from engine.wire import protocol as proto
from engine.wire.framing import FrameDecoder, FrameTooLarge

if TYPE_CHECKING:
    from engine.server.config import ServerSection
    from engine.server.metrics import ServerMetrics

_log = logs.event


@dataclasses.dataclass(frozen=True, slots=True)
class Hooks:
    """What every connection of one server is given: the loop, the settings, the
    metrics it counts into, and the server's callbacks."""

    loop: asyncio.AbstractEventLoop
    settings: ServerSection
    metrics: ServerMetrics
    new_slot: Callable[[], int]  # how batches will name a new connection
    made: Callable[[Connection], None]  # the transport is up (TLS: the handshake is done)
    frames: Callable[[Connection, list[bytes], float], None]  # complete frames, arrival time
    lost: Callable[[Connection], None]  # the transport has gone
    # server.proxy_protocol_from: connections from these start with a PROXY v2 header.
    proxy_from: tuple[pp.Network, ...] = ()


class Connection(asyncio.Protocol):
    __slots__ = (
        "abort_timer",
        "closed",
        "decoder",
        "errors",
        "handshaking",
        "held",
        "hooks",
        "identity",
        "in_flight",
        "last_frame",
        "partial_since",
        "peer",
        "proxy_header",
        "slot",
        "transport",
        "write_paused",
    )

    def __init__(self, hooks: Hooks):
        self.hooks = hooks
        self.decoder = FrameDecoder(hooks.settings.max_frame_bytes)
        # Set by connection_made; None before (a TLS connection while its handshake runs).
        self.transport: asyncio.Transport | None = None
        self.in_flight = 0  # presentations of this connection queued or verifying
        self.errors = 0
        self.closed = False
        self.last_frame = hooks.loop.time()
        self.partial_since: float | None = None
        self.peer = ""
        # The client's mutual-TLS identity (SHA-256 of its certificate; empty without
        # one): whom a safe retry must come from (engine.verifier.relying_party).
        self.identity = b""
        self.slot = hooks.new_slot()  # how batches name this connection
        self.abort_timer: asyncio.TimerHandle | None = None
        self.handshaking = False  # TLS: accepted, counted, handshake not done yet
        self.write_paused = False  # the client is not reading: we stop reading too
        self.held = False  # overloaded: not read until the next batch is answered
        # From a balancer (server.proxy_protocol_from): its PROXY header, until read.
        self.proxy_header: pp.HeaderReader | None = None

    @property
    def stream(self) -> asyncio.Transport:
        """The transport, for what only runs once the connection is made."""
        assert self.transport is not None, "connection not made yet"
        return self.transport

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # With TLS this is the TCP accept: the connection counts against the limits
        # from here, and the handshake (engine.server.server.Server._handshake) is bounded.
        self.transport = cast(asyncio.Transport, transport)  # a stream transport
        if not self.peer:  # TLS: set at the accept (PROXY header included)
            peer = transport.get_extra_info("peername")
            self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
            if self.hooks.proxy_from and peer and pp.from_balancer(self.hooks.proxy_from, peer[0]):
                self.proxy_header = pp.HeaderReader()
                self.partial_since = self.last_frame  # the header is due like a frame
        self.hooks.made(self)

    def data_received(self, data: bytes) -> None:
        if self.proxy_header is not None:  # the one check the fast path pays
            data = self._read_proxy_header(data)
            if not data:
                return
        now = self.hooks.loop.time()
        try:
            frames = self.decoder.feed(data)
        except FrameTooLarge as e:
            self.close_with_error(proto.FRAME_TOO_LARGE, str(e))
            return
        if frames:
            self.last_frame = now
            # Arrival times at full resolution (the loop's clock has a 1 ms grain): they
            # time the latency budget and the latency histogram.
            self.hooks.frames(self, frames, time.monotonic())
        if self.decoder.pending:
            if frames or self.partial_since is None:
                self.partial_since = now
        else:
            self.partial_since = None

    def _read_proxy_header(self, data: bytes) -> bytes:
        """What follows the header once it is complete (b"" before, or on an error)."""
        assert self.proxy_header is not None
        if self.closed:  # refused already; the reader stays set so nothing is parsed
            return b""
        try:
            done = self.proxy_header.feed(data)
        except pp.ProxyProtocolError as e:
            self.proxy_error(str(e))
            return b""
        if done is None:
            return b""
        header, rest = done
        self.proxy_header = None
        self.partial_since = None
        if header.source is not None:
            self.peer = f"{header.source[0]}:{header.source[1]}"
        return rest

    def proxy_error(self, reason: str) -> None:
        """A balancer's header that cannot be read: nothing is answered (the stream is
        not the engine's protocol yet), the connection is closed."""
        self.hooks.metrics.protocol_errors.labels(pp.ERROR_CODE).inc()
        _log(logging.WARNING, "proxy_protocol_error", peer=self.peer, reason=reason)
        self.close()

    def eof_received(self) -> bool:
        return False  # half-closed clients are closed; nothing more can be asked

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.abort_timer is not None:
            self.abort_timer.cancel()
            self.abort_timer = None
        self.hooks.lost(self)

    def pause_writing(self) -> None:
        # The client is not reading its responses: stop reading its requests.
        self.write_paused = True
        self.stream.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self.closed and not self.held:
            self.stream.resume_reading()

    def hold(self) -> bool:
        """Stops reading until ``release`` (the batcher: while admission refuses)."""
        if self.held or self.closed:
            return False
        self.held = True
        self.stream.pause_reading()
        return True

    def release(self) -> None:
        self.held = False
        if not self.closed and not self.write_paused:
            self.stream.resume_reading()

    # sending

    def send(self, data: bytes) -> None:
        if not self.closed:
            self.stream.write(data)

    def request_error(self, err: proto.RequestError) -> None:
        self.errors += 1
        self.hooks.metrics.protocol_errors.labels(err.code).inc()
        self.send(proto.error_response(err.request_id, err.code, err.message))
        limit = self.hooks.settings.max_protocol_errors
        if self.errors >= limit:
            self.close_with_error(proto.TOO_MANY_ERRORS, f"{limit} protocol errors")

    def close_with_error(self, code: str, message: str) -> None:
        if self.closed:
            return
        self.hooks.metrics.protocol_errors.labels(code).inc()
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
            grace = self.hooks.settings.close_grace_s
            self.abort_timer = self.hooks.loop.call_later(grace, self._abort)

    def _abort(self) -> None:
        self.abort_timer = None
        _log(logging.INFO, "connection_aborted", peer=self.peer, why="unread responses")
        self.hooks.metrics.aborted.inc()
        self.stream.abort()
