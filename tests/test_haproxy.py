"""Engines behind a real HAProxy running the shipped deploy/haproxy.cfg
(tests/haproxy_runner.py): the file is valid, its health check is the engine's
ping/pong byte for byte, verdicts come through, the engines see and audit the real
clients (PROXY protocol v2), the health check marks engines UP and DOWN, and a drain
shows as DRAIN (agent check) while new connections go to the other engine."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time

from haproxy_runner import CONFIG, check_config, haproxy
from realservers import free_port, wait_for
from serving import LogEvents

from engine.verdicts import Verdict
from engine.wire import protocol as proto
from engine.wire.client import Client
from engine.wire.framing import FrameDecoder

EDGE = {"server__proxy_protocol_from": ["127.0.0.1/32"], "log__audit": True}


def _cfg_hex(directive: str) -> bytes:
    (found,) = re.findall(rf"^\s*tcp-check {directive} ([0-9a-f]+)$", CONFIG.read_text(), re.M)
    return bytes.fromhex(found)


def test_shipped_config_is_valid():
    done = check_config()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Configuration file is valid" in done.stdout + done.stderr


def test_health_check_bytes_are_the_engines_ping_and_pong(start_server):
    send, expect = _cfg_hex("send-binary"), _cfg_hex("expect binary")
    assert send == proto.request(1, proto.PING)
    assert expect == proto.response(1, {"pong": True})
    # And the engine answers exactly that, after the LOCAL header HAProxy's checks send.
    srv = start_server(**EDGE)
    local = b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00"
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(local + send)
        got = b""
        while len(got) < len(expect):
            chunk = s.recv(65536)
            assert chunk
            got += chunk
    assert got == expect


def _engines(start_server, *notices: float):
    """An engine with its agent per drain notice (0: none, so teardown drains at once)."""
    out = []
    for notice in notices:
        agent = free_port()
        srv = start_server(**EDGE, server__agent_port=agent, server__drain_notice_s=notice)
        out.append((srv, agent))
    return out


async def _peers(server) -> list[str]:
    return [c.peer for c in server.connections]


def _local(client: Client) -> str:
    host, port = client._transport.get_extra_info("sockname")[:2]
    return f"{host}:{port}"


def test_verdicts_and_real_clients_through_haproxy(start_server, scenarios, tmp_path):
    (e1, a1), (e2, a2) = _engines(start_server, 0, 0)
    now = int(time.time() * 1000)
    wanted = [Verdict.OK, Verdict.EXPIRED, Verdict.BAD_HOLDER_SIGNATURE, Verdict.OK]
    presentations = scenarios.presentations(wanted, now)
    with LogEvents() as log, haproxy(tmp_path, [(e1.port, a1), (e2.port, a2)]) as lb:
        lb.wait_status({"e1": "UP", "e2": "UP", "e3": "DOWN"})

        async def go():
            # Two connections held open at once: leastconn puts one on each engine.
            c1 = await Client.connect("127.0.0.1", lb.port)
            c2 = await Client.connect("127.0.0.1", lb.port)
            try:
                got = []
                for i, pres in enumerate(presentations):
                    got.append((await (c1, c2)[i % 2].verify(pres)).verdict)
                return got, {_local(c1), _local(c2)}
            finally:
                await c1.close()
                await c2.close()

        verdicts, clients = asyncio.run(go())
        assert verdicts == wanted
        audit = log.wait("verified", count=len(wanted))
    # The engines audited the test's own sockets, not HAProxy's connections to them.
    assert {line["peer"] for line in audit} == clients
    assert not log.named("proxy_protocol_error")  # the health checks' LOCAL headers too


def test_health_check_marks_a_stopped_engine_down(start_server, tmp_path):
    (e1, a1), (e2, a2) = _engines(start_server, 0, 0)
    with haproxy(tmp_path, [(e1.port, a1), (e2.port, a2)]) as lb:
        lb.wait_status({"e1": "UP", "e2": "UP", "e3": "DOWN"})
        assert lb.stats()["e1"]["check_status"] == "L7OK"  # the pong matched
        e2.stop()
        lb.wait_status({"e1": "UP", "e2": "DOWN"})

        async def ping():
            async with await Client.connect("127.0.0.1", lb.port) as client:
                return await client.ping()

        assert all(asyncio.run(ping()) for _ in range(4))  # all on e1 now


def test_a_draining_engine_shows_drain_and_gets_no_new_connections(start_server, tmp_path):
    # A long notice: the test ends it once it has seen what happens during it.
    (e1, a1), (e2, a2) = _engines(start_server, 60, 0)
    with LogEvents() as log, haproxy(tmp_path, [(e1.port, a1), (e2.port, a2)]) as lb:
        lb.wait_status({"e1": "UP", "e2": "UP"})
        drain = threading.Thread(target=e1.call, args=(e1.server.drain(), 120))
        drain.start()
        try:
            log.wait("drain_notice")
            lb.wait_status({"e1": "DRAIN", "e2": "UP"})

            async def held():
                # Read the engines' peers while the clients are still connected.
                clients = await go_open()
                try:
                    on_e1 = await asyncio.to_thread(e1.call, _peers(e1.server))
                    on_e2 = await asyncio.to_thread(e2.call, _peers(e2.server))
                    return {_local(c) for c in clients}, on_e1, on_e2
                finally:
                    for c in clients:
                        await c.close()

            async def go_open():
                clients = [await Client.connect("127.0.0.1", lb.port) for _ in range(4)]
                assert all([await c.ping() for c in clients])  # relayed: the header was read
                return clients

            mine, on_e1, on_e2 = asyncio.run(held())
            assert mine <= set(on_e2)  # every new connection went to the other engine
            assert not mine & set(on_e1)
        finally:
            e1.call(_end_notice(e1.server))
            drain.join(60)
        assert not drain.is_alive()
        # Drained and stopped: the ping check finds nothing, and says so.
        lb.wait_status({"e1": "DOWN"})
        wait_for(lambda: not e1.thread.is_alive(), what="e1 stopped")


async def _end_notice(server) -> None:
    server.end_notice()


def test_the_decoder_reads_the_expected_pong_as_one_frame():
    # The expect bytes are a whole frame: a check never matches half a response.
    (frame,) = FrameDecoder(1 << 20).feed(_cfg_hex("expect binary"))
    assert frame == proto.response(1, {"pong": True})[4:]
