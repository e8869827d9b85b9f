"""Resources a client cannot keep: connections that never read, descriptors, queueing time."""

from __future__ import annotations

import resource
import select
import socket
import time

import pytest
from serving import LogEvents
from test_server_batch_boundaries import Conn
from test_server_lifecycle import ServerProcess

from engine.verdicts import Verdict
from engine.wire import protocol as proto


def now_ms() -> int:
    return int(time.time() * 1000)


def logged(srv: ServerProcess, name: str) -> dict:
    """An event the server logged before it listened (the constructor waited for that)."""
    (event,) = [e for e in srv.log if e.get("event") == name]
    return event


def reset_or_closed(sock: socket.socket, timeout_s: float = 20) -> bool:
    """Waits, without reading, until the server closes or resets the connection."""
    poller = select.poll()
    poller.register(sock, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
    for _, revents in poller.poll(timeout_s * 1000):
        if revents & (select.POLLRDHUP | select.POLLHUP | select.POLLERR):
            return True
    return False


def stuff_until_blocked(sock: socket.socket, frame: bytes, limit_bytes: int = 64 << 20) -> int:
    """Sends copies of ``frame`` until the server stops reading (its answers fill every
    buffer because this client never reads them) or resets the connection; returns the
    bytes sent.  Only whole frames: what a send leaves unsent goes first next time."""
    sock.setblocking(False)
    chunk = frame * max(1, 65536 // len(frame))
    sent = 0
    unsent = b""
    while sent < limit_bytes:
        _, writable, _ = select.select([], [sock], [], 2.0)
        if not writable:
            return sent  # two seconds without room: the server has paused reading
        data = unsent or chunk
        try:
            n = sock.send(data)
        except BlockingIOError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return sent
        sent += n
        unsent = data[n:]
    raise AssertionError(f"the server read {sent} bytes without pushing back")


def test_a_closed_connection_that_never_reads_is_released(start_server):
    srv = start_server(
        server__max_connections=2,
        server__idle_timeout_s=0.5,
        server__close_grace_s=0.3,
        server__max_protocol_errors=10**9,
    )
    sock = socket.create_connection(("127.0.0.1", srv.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(proto.request(0, "ping"))
    assert sock.recv(64)[4:]
    # Small kernel buffers on the server's side too, so that what the client leaves
    # unread stays in the server's own buffer (the kernel would otherwise absorb
    # megabytes of it, and close the socket itself once that buffer drained).
    (conn,) = srv.server.connections
    conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    with LogEvents() as log:
        # Status requests (small, with larger answers) pipelined by a client that stops
        # reading: their answers stay unsent.
        assert stuff_until_blocked(sock, proto.request(1, "status")) > 0
        # The idle sweep closes it (no frame for 0.5 s, nothing in flight): closing
        # must not wait on this client for longer than the grace period.
        assert reset_or_closed(sock), "the server kept the connection"
        assert log.wait("connection_aborted")[0]["why"] == "unread responses"
    sock.close()
    # The slot is free again: two clients are served with a limit of two.
    others = [socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(2)]
    for k, other in enumerate(others):
        other.sendall(proto.request(k, "ping"))
        assert other.recv(64)[4:]  # an answer, not server_full's close
        other.close()


def test_connections_beyond_the_descriptor_limit_get_server_full(pki, tmp_path, server_loop):
    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (160, 160))  # soft = hard: no raising

    srv = ServerProcess(pki, tmp_path, preexec_fn=low_limit, loop=server_loop)
    try:
        chosen = logged(srv, "connection_limit")
        limit = chosen["limit"]
        assert chosen["configured"] == 1024 and 0 < limit < 160 - 32, chosen
        assert chosen["level"] == "warning"
        socks = [socket.create_connection(("127.0.0.1", srv.port), timeout=10)]
        for k in range(1, limit):
            socks.append(socket.create_connection(("127.0.0.1", srv.port), timeout=10))
            socks[-1].sendall(proto.request(k, "ping"))
        for s in socks[1:]:
            assert s.recv(64)[4:], "an accepted connection was answered"
        extra = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        data = extra.recv(4096)
        assert proto.SERVER_FULL.encode() in data  # refused with an answer, not dropped
        extra.close()
        for s in socks:
            s.close()
    finally:
        assert srv.stop() == 0


@pytest.mark.server_loops(
    "uvloop", reason="the limit is derived from rlimits before the loop serves anything"
)
def test_the_soft_descriptor_limit_is_raised_where_allowed(pki, tmp_path, server_loop):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"the hard descriptor limit here ({hard}) is too low to raise towards")

    def low_soft():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    srv = ServerProcess(pki, tmp_path, preexec_fn=low_soft, loop=server_loop)
    try:
        chosen = logged(srv, "connection_limit")
        assert chosen["limit"] == 1024 and chosen["raised_from"] == 256, chosen
        assert chosen["nofile_soft"] >= 1024 + 64
    finally:
        assert srv.stop() == 0


def test_admission_follows_the_measured_rate():
    from engine.server.admission import IN_FLIGHT_LIMIT, QUEUE_TIME_LIMIT, Admission

    a = Admission(32768, 0.025, 2, floor=512, max_batch=128)
    assert (a.limit, a.reason, a.rate) == (32768, IN_FLIGHT_LIMIT, None)
    a.batch_done(8, 1.0)  # small batches (low load) say nothing about a long queue
    assert a.limit == 32768 and a.cost_s is None
    a.batch_done(128, 128 * 50e-6)  # 50 us a presentation, two workers: 40,000/s
    assert a.limit == int(0.025 * 2 / 50e-6) == 1000 and a.reason == QUEUE_TIME_LIMIT
    assert a.reason_bytes == QUEUE_TIME_LIMIT.encode() and round(a.rate) == 40_000
    for _ in range(200):  # the host slows down: the limit follows
        a.batch_done(128, 128 * 80e-6)
    assert a.limit == int(0.025 * 2 / 80e-6) == 625
    for _ in range(200):  # and the floor holds: two batches per worker
        a.batch_done(128, 128 * 0.01)
    assert a.limit == 512
    fast = Admission(32768, 0.025, 2, floor=512, max_batch=128)
    fast.batch_done(128, 128 * 1e-7)  # beyond max_in_flight: that limit binds again
    assert (fast.limit, fast.reason) == (32768, IN_FLIGHT_LIMIT)
    off = Admission(32768, 0.0, 2, floor=512, max_batch=128)
    off.batch_done(128, 1.0)
    assert off.limit == 32768


async def _held(srv) -> tuple:
    return srv.server.batcher.held_connections


@pytest.mark.parametrize("path", ["native", "python"])
def test_overload_is_refused_at_once_not_after_seconds_of_queueing(start_server, scenarios, path):
    srv = start_server(
        batching__workers=1,
        server__max_queue_ms=5,
        server__max_in_flight_per_connection=100_000,
        log__audit=path == "python",
    )
    conn = Conn(srv.port)
    warm = scenarios.presentations([Verdict.OK] * 128, now_ms())
    (answer,) = conn.exchange([(proto.request(0, "verify_batch", presentations=warm), 0, None)])
    assert [r["verdict"] for r in answer["results"]] == [Verdict.OK] * 128
    limit = srv.server.admission.limit
    assert limit < srv.server.cfg.server.max_in_flight  # set by the measured rate
    # A burst of many times what one worker verifies in 5 ms, in one write.
    burst = scenarios.presentations([Verdict.OK] * (8 * limit), now_ms())
    requests = [
        (proto.request(k + 1, "verify", presentation=p), k + 1, None) for k, p in enumerate(burst)
    ]
    answers = conn.exchange(requests)
    # Held while refused (not read until a batch was answered), then read again.
    (pong,) = conn.exchange([(proto.request(0, "ping"), 0, None)])
    assert pong == {"id": 0, "pong": True} and not srv.call(_held(srv))
    conn.close()
    busy = [a for a in answers if a["verdict"] == Verdict.BUSY]
    served = [a for a in answers if a["verdict"] != Verdict.BUSY]
    assert busy and all(a["reason"] == "server queue time limit" for a in busy)
    assert served and all(a["verdict"] == Verdict.OK for a in served)
    assert len(answers) == len(burst)
    # BUSY came long before the old bound (max_in_flight, 32,768 queued) was near.
    assert srv.server.admission.limit < 32768 / 4
