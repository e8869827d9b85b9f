"""The server over real sockets on 127.0.0.1: verdicts, pipelining, limits, errors, timeouts."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time

import msgpack
import pytest
from prometheus_client import generate_latest
from serving import closed_by_peer

from engine.revocation.source import SetRevocation
from engine.tools.scenarios import BUILDABLE
from engine.verdicts import Verdict
from engine.wire import protocol as proto
from engine.wire.client import Client, ServerError
from engine.wire.framing import FrameDecoder


def now_ms() -> int:
    return int(time.time() * 1000)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


class RawConnection:
    """A blocking socket speaking frames by hand, for malformed input."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.decoder = FrameDecoder(1 << 30)
        self.frames: list[dict] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> dict:
        while not self.frames:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            self.frames += [msgpack.unpackb(p, raw=False) for p in self.decoder.feed(data)]
        return self.frames.pop(0)

    def closed_by_server(self) -> bool:
        """Reads until the server closes the connection (True) or a timeout (False)."""
        return closed_by_peer(self.sock)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def revocation(scenarios):
    return SetRevocation(scenarios.revoked_cards, scenarios.revoked_serials)


def test_every_verdict_class_end_to_end(start_server, scenarios, revocation):
    srv = start_server(revocation=revocation)

    async def go():
        async with await Client.connect("127.0.0.1", srv.port) as client:
            batch = scenarios.presentations(BUILDABLE, now_ms())
            singles = await asyncio.gather(*(client.verify(p) for p in batch))
            for outcome, result in zip(BUILDABLE, singles):
                want = Verdict.OK if outcome is Verdict.REPLAYED else outcome
                assert result.verdict is want, (outcome, result)
            replay = batch[BUILDABLE.index(Verdict.REPLAYED)]
            assert (await client.verify(replay)).verdict is Verdict.REPLAYED
            # The same outcomes through verify_batch, with fresh presentations.
            batch = scenarios.presentations(BUILDABLE, now_ms())
            results = await client.verify_batch([*batch, batch[BUILDABLE.index(Verdict.REPLAYED)]])
            got = [r.verdict for r in results]
            want = [Verdict.OK if o is Verdict.REPLAYED else o for o in BUILDABLE]
            assert got == [*want, Verdict.REPLAYED]
            ok = results[0]
            assert ok.claims["card_number"] and ok.claims["serial"]
            assert results[1].reason  # MALFORMED says why

    run(go())


def test_hundreds_pipelined_on_one_connection(start_server, scenarios):
    # 600 at once can exceed the queueing-time bound on a slow host (the sanitizer
    # build); the subject here is pipelining, so that bound is off.
    srv = start_server(server__max_queue_ms=0)

    async def go():
        async with await Client.connect("127.0.0.1", srv.port) as client:
            outcomes = [Verdict.OK, Verdict.EXPIRED, Verdict.BAD_HOLDER_SIGNATURE] * 200
            batch = scenarios.presentations(outcomes, now_ms())
            tasks = [asyncio.ensure_future(client.verify(p)) for p in batch]
            await asyncio.sleep(0)  # one loop pass: every task has written its request
            assert client.in_flight == len(batch)  # all sent before any answer
            results = await asyncio.gather(*tasks)
            assert [r.verdict for r in results] == outcomes

    run(go())


def test_many_clients_get_their_own_answers(start_server, scenarios, revocation):
    # 1,200 requests at once may exceed the queueing-time bound on a slow host; this
    # test is about routing answers, so the bound is off (tests/test_server_limits.py).
    srv = start_server(revocation=revocation, server__max_queue_ms=0)
    kinds = [v for v in BUILDABLE if v is not Verdict.REPLAYED]

    async def one_client(k: int):
        outcome = kinds[k % len(kinds)]
        async with await Client.connect("127.0.0.1", srv.port) as client:
            batch = scenarios.presentations([outcome] * 30, now_ms())
            results = await asyncio.gather(*(client.verify(p) for p in batch))
            return outcome, [r.verdict for r in results]

    async def go():
        answers = await asyncio.gather(*(one_client(k) for k in range(40)))
        assert len(answers) == 40
        for outcome, verdicts in answers:
            assert verdicts == [outcome] * 30

    run(go())


def test_protocol_errors_are_answered_and_isolated(start_server, scenarios):
    srv = start_server(server__max_batch_items=8, server__max_frame_bytes=4096)
    good = RawConnection(srv.port)
    (pres,) = scenarios.presentations([Verdict.OK], now_ms())

    bad = RawConnection(srv.port)
    cases = [
        # 0xc1 is no msgpack value (five random bytes were one, an int32 say, in over 1% of runs).
        (struct.pack(">I", 5) + b"\xc1" + os.urandom(4), proto.UNDECODABLE, None),
        (proto.request(1, "teleport"), proto.UNKNOWN_TYPE, 1),
        (proto.request(2, "verify", presentation="text"), proto.BAD_REQUEST, 2),
        (proto.request(3, "verify"), proto.BAD_REQUEST, 3),
        (proto.request(4, "verify_batch", presentations=[pres] * 9), proto.TOO_MANY_ITEMS, 4),
        (proto.request(5, "verify_batch", presentations=[]), proto.BAD_REQUEST, 5),
        (proto.request(6, "ping", context={"merchant_id": "bad id!"}), proto.BAD_REQUEST, 6),
        (struct.pack(">I", 7) + msgpack.packb([1, 2, 3]) + b"\x00" * 3, proto.UNDECODABLE, None),
        (struct.pack(">I", 4) + msgpack.packb([1, 2, 3]), proto.BAD_REQUEST, None),
        (struct.pack(">I", 0), proto.UNDECODABLE, None),
        (msgpack.packb({"id": -1, "type": "ping"}), None, None),  # not even a frame
    ]
    for frame, code, rid in cases[:-1]:
        bad.send(frame)
        response = bad.response()
        assert response["error"] == code, (frame[:20], response)
        assert response["id"] == rid
        assert response["message"]
        # The well-behaved client is served meanwhile.
        good.send(proto.request(100, "verify", presentation=pres))
        assert good.response()["verdict"] in (Verdict.OK, Verdict.REPLAYED)
    # Still usable after errors: the connection stays open for request-level errors.
    bad.send(proto.request(9, "ping"))
    assert bad.response() == {"id": 9, "pong": True}
    # An oversize frame cannot be skipped safely: error, then the connection closes.
    bad.send(struct.pack(">I", 4097) + b"x" * 100)
    response = bad.response()
    assert response["error"] == proto.FRAME_TOO_LARGE
    assert bad.closed_by_server()
    good.send(proto.request(101, "ping"))
    assert good.response() == {"id": 101, "pong": True}
    metrics = generate_latest(srv.server.metrics.registry).decode()
    assert 'essc_protocol_errors_total{code="frame_too_large"} 1.0' in metrics


def test_random_garbage_streams_never_hurt_the_server(start_server):
    srv = start_server(server__max_frame_bytes=1 << 16)
    for seed in range(20):
        conn = RawConnection(srv.port)
        conn.sock.settimeout(5)
        conn.send(os.urandom(2000 + seed))
        conn.sock.shutdown(socket.SHUT_WR)
        conn.closed_by_server()
        conn.close()
    ok = RawConnection(srv.port)
    ok.send(proto.request(1, "ping"))
    assert ok.response() == {"id": 1, "pong": True}


def test_too_many_errors_closes_the_connection(start_server):
    srv = start_server(server__max_protocol_errors=3)
    conn = RawConnection(srv.port)
    for i in range(3):
        conn.send(proto.request(i, "nope"))
        assert conn.response()["error"] == proto.UNKNOWN_TYPE
    assert conn.response()["error"] == proto.TOO_MANY_ERRORS
    assert conn.closed_by_server()


def test_busy_under_overload_with_bounded_queue(start_server, scenarios):
    # One worker, small batches and a long budget: requests queue up quickly.
    srv = start_server(
        server__max_in_flight=40,
        server__max_in_flight_per_connection=30,
        batching__workers=1,
        batching__max_batch=8,
    )
    peak = []

    async def watch():
        while True:
            peak.append(srv.server.in_flight)
            await asyncio.sleep(0)

    async def flood(client, n):
        batch = scenarios.presentations([Verdict.OK] * n, now_ms())
        return await asyncio.gather(*(client.verify(p) for p in batch))

    async def go():
        watcher = asyncio.run_coroutine_threadsafe(watch(), srv.loop)
        try:
            a = await Client.connect("127.0.0.1", srv.port)
            b = await Client.connect("127.0.0.1", srv.port)
            ra, rb = await asyncio.gather(flood(a, 200), flood(b, 200))
            await a.close()
            await b.close()
        finally:
            watcher.cancel()
        return ra + rb

    results = run(go())
    verdicts = [r.verdict for r in results]
    assert len(verdicts) == 400  # every request answered
    assert set(verdicts) == {Verdict.OK, Verdict.BUSY}
    assert verdicts.count(Verdict.BUSY) > 0
    assert max(peak) <= 40
    busy = [r for r in results if r.verdict is Verdict.BUSY]
    assert all("limit" in r.reason for r in busy)
    # The metrics count them under the limit that was hit, whichever path answered.
    text = generate_latest(srv.server.metrics.registry).decode()
    counted = {
        reason: float(
            next(
                (
                    line.rsplit(" ", 1)[1]
                    for line in text.splitlines()
                    if line.startswith(f'essc_busy_total{{reason="{reason}"}}')
                ),
                "0",
            )
        )
        for reason in ("connection in-flight limit", "server in-flight limit")
    }
    assert sum(counted.values()) == len(busy)
    assert counted == {reason: float(sum(r.reason == reason for r in busy)) for reason in counted}


def test_client_that_stops_reading_is_paused_not_buffered(start_server, scenarios):
    srv = start_server(server__max_in_flight_per_connection=64)
    (pres,) = scenarios.presentations([Verdict.EXPIRED], now_ms())
    conn = RawConnection(srv.port)
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    frame = proto.request(1, "verify", presentation=pres)
    # Push requests without ever reading: the server must stop reading from us.  What a
    # send leaves unsent goes first next time: a frame cut short would make the rest of
    # the stream garbage to the server (frame_too_large, closed: a reset here).
    conn.sock.setblocking(False)
    sent = 0
    stalled_at = None
    unsent = b""
    for _ in range(200_000):
        data = unsent or frame * 32
        try:
            n = conn.sock.send(data)
        except BlockingIOError:
            stalled_at = sent
            break
        sent += n
        unsent = data[n:]
    assert stalled_at is not None, "the server kept reading from a client that does not read"
    buffered = srv.call(_write_buffer_sizes(srv.server))
    assert max(buffered) < 4 * 1024 * 1024
    assert srv.server.in_flight <= 64
    conn.close()


async def _write_buffer_sizes(server):
    return [c.transport.get_write_buffer_size() for c in server.connections] or [0]


def test_slow_loris_and_idle_connections_are_closed(start_server):
    srv = start_server(server__frame_timeout_s=0.5, server__idle_timeout_s=1.0)
    partial = RawConnection(srv.port)
    partial.send(b"\x00\x00")  # half a header, then nothing
    response = partial.response()
    assert response["error"] == proto.FRAME_TIMEOUT
    assert partial.closed_by_server()
    trickle = RawConnection(srv.port)
    trickle.send(struct.pack(">I", 50) + b"\x81")  # a frame that never completes
    assert trickle.response()["error"] == proto.FRAME_TIMEOUT
    idle = RawConnection(srv.port)
    idle.send(proto.request(1, "ping"))
    assert idle.response()["pong"] is True
    assert idle.closed_by_server()  # silent after 1 s of idleness


def test_connection_limit(start_server):
    srv = start_server(server__max_connections=2)
    a, b = RawConnection(srv.port), RawConnection(srv.port)
    for c in (a, b):
        c.send(proto.request(1, "ping"))
        assert c.response()["pong"] is True
    c = RawConnection(srv.port)
    assert c.response()["error"] == proto.SERVER_FULL
    assert c.closed_by_server()


def test_status_ping_and_revocation_check(start_server, scenarios, revocation):
    srv = start_server(revocation=revocation)

    async def go():
        async with await Client.connect("127.0.0.1", srv.port) as client:
            assert await client.ping() is True
            status = await client.status()
            assert status["trust_list_sequence"] == 1
            assert status["revocation_sequence"] == 0
            assert status["draining"] is False
            card = next(iter(scenarios.revoked_cards)).decode()
            serial = next(iter(scenarios.revoked_serials))
            answer = await client.revocation_check([card, "A00000000"], [serial, bytes(16)])
            assert answer["cards"] == [True, False]
            assert answer["credentials"] == [True, False]
            assert answer["stale"] is False and 0 <= answer["revocation_age_s"] < 3600

    run(go())


def test_revocation_check_says_when_its_data_is_stale(start_server, scenarios):
    old = SetRevocation(scenarios.revoked_cards, created_at=time.time() - 7200)
    srv = start_server(revocation=old, revocation__max_age_s=3600)

    async def go():
        async with await Client.connect("127.0.0.1", srv.port) as client:
            card = next(iter(scenarios.revoked_cards)).decode()
            return await client.revocation_check([card])

    answer = run(go())
    assert answer["cards"] == [True] and answer["stale"] is True
    assert answer["revocation_age_s"] >= 7200


def test_revocation_check_without_data(start_server):
    srv = start_server()

    async def go():
        async with await Client.connect("127.0.0.1", srv.port) as client:
            with pytest.raises(ServerError, match="no_revocation_data"):
                await client.revocation_check(["A00000000"])

    run(go())


def test_context_is_accepted_and_audited_without_personal_data(start_server, scenarios, caplog):
    from engine.server import logs

    srv = start_server(log__audit=True)
    logs.setup("info")
    import logging

    logging.getLogger(logs.LOGGER).propagate = True
    (pres,) = scenarios.presentations([Verdict.OK], now_ms())

    async def go():
        async with await Client.connect("127.0.0.1", srv.port) as client:
            ctx = {"merchant_id": "M-4403-0001", "terminal_id": "T:17"}
            return await client.verify(pres, context=ctx)

    with caplog.at_level(logging.INFO, logger=logs.LOGGER):
        result = run(go())
    assert result.verdict is Verdict.OK
    lines = [r for r in caplog.records if r.getMessage() == "verified"]
    assert len(lines) == 1
    text = logs.JsonFormatter().format(lines[0])
    assert "M-4403-0001" in text and "T:17" in text and '"OK"' in text
    assert result.claims["card_number"] not in text
    logging.getLogger(logs.LOGGER).propagate = False


def test_metrics_count_verdicts_and_batches(start_server, scenarios):
    srv = start_server()

    async def go():
        async with await Client.connect("127.0.0.1", srv.port) as client:
            batch = scenarios.presentations([Verdict.OK] * 5 + [Verdict.EXPIRED] * 3, now_ms())
            await client.verify_batch(batch)

    run(go())
    # The answer goes out before the batch's metrics are counted (same loop callback):
    # stop the server so that callback has surely finished.
    srv.stop()
    text = generate_latest(srv.server.metrics.registry).decode()
    assert 'essc_verifications_total{verdict="OK"} 5.0' in text
    assert 'essc_verifications_total{verdict="EXPIRED"} 3.0' in text
    assert "essc_verify_latency_seconds_count 1.0" in text
    assert "essc_batch_size_sum 8.0" in text


def _doc_block(doc: str, after: str) -> str:
    """The hex column of the first code block after ``after`` in docs/PROTOCOL.md."""
    import re

    block = doc.split(after, 1)[1].split("```", 2)[1]
    out = []
    for line in block.splitlines():
        line = line.replace("client ->", "").replace("server ->", "").strip()
        out.append(re.split(r"\s{2,}", line)[0].replace(" ", "") if line else "")
    return "".join(out)


def test_protocol_doc_examples_match_the_encoder():
    import json
    import pathlib

    root = pathlib.Path(__file__).parent.parent
    doc = (root / "docs" / "PROTOCOL.md").read_text()
    ping = _doc_block(doc, "A ping, request id 1:")
    assert ping == proto.request(1, "ping").hex() + proto.response(1, {"pong": True}).hex()
    claims = {
        "card_number": "G12345678",
        "region": "440300",
        "channel": "hrss-app",
        "issuer": "iss-440000-01",
        "serial": bytes(range(16)),
        "purpose": "medical_settlement",
        "presented_at_ms": 1780000000000,
        "valid_until": 1798761600,
    }
    answer = _doc_block(doc, "The answer when the presentation is valid")
    assert answer == proto.verify_response(7, 0, None, claims).hex()
    vectors = json.loads((root / "tests" / "vectors" / "essc_v1.json").read_text())
    pres = bytes.fromhex(vectors["presentation"]["encoded"])
    ctx = {"merchant_id": "M-4403-0001", "terminal_id": "T17"}
    request = proto.request(7, "verify", presentation=pres, context=ctx).hex()
    shown = _doc_block(doc, "(343 bytes) and a context:").split("...")[0]
    assert request.startswith(shown) and len(request) == 2 * (4 + 425)
    revoked = proto.verify_response(8, 12, None, None).hex()
    assert revoked == "0000000e82a2696408a7766572646963740c"
    assert "00 00 00 0e 82 a2 6964 08 a7 76657264696374 0c" in doc


def test_a_failing_batch_answers_internal_error_and_the_server_goes_on(start_server, scenarios):
    srv = start_server()
    real_run = srv.server.verifier.run
    calls = []

    def run_once_broken(batch, now_ms=None, **kwargs):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("injected failure")
        return real_run(batch, now_ms, **kwargs)

    srv.server.verifier.run = run_once_broken

    async def go():
        async with await Client.connect("127.0.0.1", srv.port) as client:
            a, b = scenarios.presentations([Verdict.OK, Verdict.OK], now_ms())
            with pytest.raises(ServerError, match="internal_error"):
                await client.verify(a)
            assert (await client.verify(b)).verdict is Verdict.OK
            assert await client.ping()

    run(go())
    assert srv.server.in_flight == 0
    assert len(calls) == 2


def _batches(srv) -> tuple[float, float]:
    """(batches verified, presentations in them), from the batch-size histogram."""
    text = generate_latest(srv.server.metrics.registry).decode()
    count = float(text.split("essc_batch_size_count ")[1].split()[0])
    total = float(text.split("essc_batch_size_sum ")[1].split()[0])
    return count, total


def test_a_batch_goes_when_full_and_the_rest_waits_for_the_budget(start_server, scenarios):
    """max_batch 4 and a budget far beyond the test: of five requests in one write, four
    make a full batch at once and the fifth waits, however free the worker, until three
    more fill its batch."""
    srv = start_server(batching__max_batch=4, batching__latency_budget_ms=3_600_000)
    conn = RawConnection(srv.port)
    ps = scenarios.presentations([Verdict.OK] * 8, now_ms())
    conn.send(b"".join(proto.request(i, "verify", presentation=p) for i, p in enumerate(ps[:5])))
    first = sorted(conn.response()["id"] for _ in range(4))
    assert first == [0, 1, 2, 3]
    assert srv.call(_filling(srv)) == 1  # the fifth, still waiting for company
    conn.send(b"".join(proto.request(i, "verify", presentation=ps[i]) for i in range(5, 8)))
    rest = sorted(conn.response()["id"] for _ in range(4))
    assert rest == [4, 5, 6, 7]
    conn.close()
    srv.stop()
    assert _batches(srv) == (2.0, 8.0)


async def _filling(srv) -> int:
    return srv.server.batcher.filling_items


def test_a_lone_request_goes_when_its_budget_is_up(start_server, scenarios):
    """A budget of 20 ms and batches of up to 128: one request still gets its answer,
    alone in its batch, once its time is up."""
    srv = start_server(batching__latency_budget_ms=20)

    async def go():
        async with await Client.connect("127.0.0.1", srv.port) as client:
            (p,) = scenarios.presentations([Verdict.OK], now_ms())
            return await asyncio.wait_for(client.verify(p), 30)

    assert run(go()).verdict is Verdict.OK
    srv.stop()
    assert _batches(srv) == (1.0, 1.0)


def test_a_request_map_with_keys_of_other_types_is_answered_with_its_id(start_server, scenarios):
    srv = start_server()
    conn = RawConnection(srv.port)
    (pres,) = scenarios.presentations([Verdict.OK], now_ms())
    cases = [
        (7, {"id": 7, "type": "ping", 1: 2}, "request map"),
        (8, {"id": 8, "type": "verify", "presentation": pres, 3.5: "x"}, "request map"),
        (9, {"id": 9, "type": "ping", "context": {"merchant_id": "m1", 4: "x"}}, "'context'"),
        (10, {"id": 10, "type": "ping", "context": {b"merchant_id": "m1"}}, "'context'"),
    ]
    for rid, msg, where in cases:
        conn.send(proto.encode_frame(msgpack.packb(msg, use_bin_type=True)))
        response = conn.response()
        assert response["id"] == rid and response["error"] == proto.BAD_REQUEST, response
        assert where in response["message"]
    # An array as a key: one valid msgpack value, no dict could hold it; still named.
    raw = b"\x83\xa2id\x0b\xa4type\xa4ping\x91\x01\x02"
    conn.send(struct.pack(">I", len(raw)) + raw)
    assert conn.response()["id"] == 11
    # A bin key is an unknown key, ignored as the protocol says.
    conn.send(proto.encode_frame(msgpack.packb({"id": 12, "type": "ping", b"x": 1})))
    assert conn.response() == {"id": 12, "pong": True}


def test_revocation_check_refuses_ids_that_cannot_exist(start_server, scenarios):
    srv = start_server(revocation=SetRevocation(scenarios.revoked_cards, scenarios.revoked_serials))
    conn = RawConnection(srv.port)
    for k, (cards, serials, where) in enumerate(
        [
            (["G1234567"], [], "cards[0]"),
            (["G12345678", "g12345678"], [], "cards[1]"),
            ([], [b"\0" * 15], "credentials[0]"),
            ([], [b"\0" * 16, b"\0" * 17], "credentials[1]"),
        ]
    ):
        conn.send(proto.request(k, "revocation_check", cards=cards, credentials=serials))
        response = conn.response()
        assert response["error"] == proto.BAD_REQUEST and response["id"] == k, response
        assert response["message"].startswith(where)


def test_the_edge_cases_docs_protocol_decides(start_server, scenarios):
    """docs/PROTOCOL.md answers each of these; the server must do as it says."""
    srv = start_server(server__max_protocol_errors=4)
    conn = RawConnection(srv.port)
    (pres,) = scenarios.presentations([Verdict.OK], now_ms())
    # A non-bin item fails the whole verify_batch (not MALFORMED for that item).
    conn.send(proto.request(1, "verify_batch", presentations=[pres, "text"]))
    assert conn.response()["error"] == proto.BAD_REQUEST
    # ... and nothing of it was verified: the same presentation is still fresh.
    conn.send(proto.request(2, "verify", presentation=pres))
    assert conn.response() | {"claims": None} == {"id": 2, "verdict": 0, "claims": None}
    # A missing or non-str type is bad_request, with the id.
    for rid, fields in ((3, {"id": 3}), (4, {"id": 4, "type": 7})):
        conn.send(proto.encode_frame(msgpack.packb(fields)))
        assert conn.response() | {"message": ""} == {
            "id": rid,
            "error": proto.BAD_REQUEST,
            "message": "",
        }
    # An empty context map is no context.
    conn.send(proto.request(5, "ping", context={}))
    assert conn.response() == {"id": 5, "pong": True}
    # The error that reaches the limit is answered, then too_many_errors comes unasked
    # with id nil, then the close.
    conn.send(proto.request(6, "nope"))
    assert conn.response()["id"] == 6
    assert conn.response() | {"message": ""} == {
        "id": None,
        "error": proto.TOO_MANY_ERRORS,
        "message": "",
    }
    assert conn.closed_by_server()


def test_malformed_presentations_count_against_the_in_flight_limits(start_server):
    srv = start_server(server__max_in_flight_per_connection=2)
    conn = RawConnection(srv.port)
    conn.send(proto.request(1, "verify_batch", presentations=[b"junk"] * 3))
    assert [r["verdict"] for r in conn.response()["results"]] == [Verdict.BUSY] * 3
    conn.send(proto.request(2, "verify_batch", presentations=[b"junk"] * 2))
    assert [r["verdict"] for r in conn.response()["results"]] == [Verdict.MALFORMED] * 2
