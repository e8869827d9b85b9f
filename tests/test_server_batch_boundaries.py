"""Requests that do not fit what is left of the filling batch (issue: the server hung).

A request that would overfill the batch being filled must seal it and open the next;
one larger than ``batching.max_batch`` is verified whole and answered as one response.
Every size up to ``server.max_batch_items`` is sent behind and in front of partial
batches, in one write, on one connection and across several, through the native fast
path and through the Python path (audit logging forces the latter).
"""

from __future__ import annotations

import asyncio
import socket
import time

import msgpack
import pytest

from engine.verdicts import Verdict
from engine.wire import protocol as proto
from engine.wire.framing import FrameDecoder

OUTCOMES = (Verdict.OK, Verdict.EXPIRED, Verdict.BAD_HOLDER_SIGNATURE, Verdict.UNKNOWN_ISSUER)


def now_ms() -> int:
    return int(time.time() * 1000)


def outcomes(n: int, salt: int) -> list[Verdict]:
    return [OUTCOMES[(k + salt) % len(OUTCOMES)] for k in range(n)]


class Conn:
    """A blocking connection that sends a group of requests in one write and reads one
    response per request (a server that stops answering fails the read's timeout
    instead of hanging the test)."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.decoder = FrameDecoder(1 << 30)

    def exchange(self, requests: list[tuple[bytes, int, object]]) -> list[dict]:
        self.sock.sendall(b"".join(frame for frame, _, _ in requests))
        out: list[dict] = []
        while len(out) < len(requests):
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError(f"closed after {len(out)} of {len(requests)} responses")
            out += [msgpack.unpackb(p, raw=False) for p in self.decoder.feed(data)]
        return out

    def close(self) -> None:
        self.sock.close()


def check(responses: list[dict], requests: list[tuple[bytes, int, object]]) -> None:
    """One response per request, matched by id, each with every expected verdict."""
    by_id = {r["id"]: r for r in responses}
    assert sorted(by_id) == sorted(rid for _, rid, _ in requests)
    for _, rid, want in requests:
        response = by_id[rid]
        assert "error" not in response, response
        if isinstance(want, list):
            assert [m["verdict"] for m in response["results"]] == want, rid
        else:
            assert response["verdict"] == want, rid


def plan(scenarios, rid: int, sizes: list[int], salt: int) -> list[tuple[bytes, int, object]]:
    """verify_batch requests of these sizes (1: a plain verify), fresh presentations."""
    out = []
    for k, n in enumerate(sizes):
        want = outcomes(n, salt + k)
        pres = scenarios.presentations(want, now_ms())
        if n == 1 and k % 2:
            out.append((proto.request(rid, "verify", presentation=pres[0]), rid, want[0]))
        else:
            out.append((proto.request(rid, "verify_batch", presentations=pres), rid, want))
        rid += 1
    return out


def groups(scenarios, max_items: int, max_batch: int, sizes, salt: int = 0):
    """For each size n: a verify (the filling batch is partial), a partial batch, n,
    then a partial tail, as one group of requests sent in one write."""
    for n in sizes:
        front = 1 + (n * 37 + salt) % (max_batch - 1)
        yield plan(scenarios, 10 * n, [1, front, n, 1 + n % 5], n + salt)


@pytest.mark.parametrize("audit", [False, True], ids=["native-path", "python-path"])
def test_every_size_behind_and_in_front_of_partial_batches(start_server, scenarios, audit):
    # The Python path (audit logging on) is slower per request: smaller limits there.
    limits = {"server__max_batch_items": 64, "batching__max_batch": 16} if audit else {}
    # Groups of up to 389 presentations in one write: more than one worker verifies
    # in the queueing-time bound on a slow host; admission is not the subject here.
    srv = start_server(batching__workers=1, log__audit=audit, server__max_queue_ms=0, **limits)
    max_items = srv.server.cfg.server.max_batch_items
    max_batch = srv.server.cfg.batching.max_batch
    assert max_items > max_batch  # sizes above the batch cap are part of the test
    conn = Conn(srv.port)
    for requests in groups(scenarios, max_items, max_batch, range(1, max_items + 1)):
        check(conn.exchange(requests), requests)
    conn.close()
    assert srv.server.in_flight == 0


def test_three_batches_of_43_and_a_verify_then_128(start_server, scenarios):
    """The traces that hung the server, each in one write."""
    srv = start_server(server__max_queue_ms=0)
    conn = Conn(srv.port)
    for sizes in ([43, 43, 43], [1, 128], [1, 129, 1]):
        requests = plan(scenarios, 1, sizes, 0)
        check(conn.exchange(requests), requests)
    conn.close()


def test_every_size_across_several_connections(start_server, scenarios):
    srv = start_server(batching__workers=1, server__max_queue_ms=0)
    max_items = srv.server.cfg.server.max_batch_items
    max_batch = srv.server.cfg.batching.max_batch

    def one_connection(c: int) -> None:
        conn = Conn(srv.port)
        try:
            sizes = range(1 + c, max_items + 1, 4)
            for requests in groups(scenarios, max_items, max_batch, sizes, salt=c):
                check(conn.exchange(requests), requests)
        finally:
            conn.close()

    async def go():
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(None, one_connection, c) for c in range(4)))

    asyncio.run(go())
