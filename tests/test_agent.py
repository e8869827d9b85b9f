"""The HAProxy agent-check port (engine/server/agent.py): "up ready" while serving,
"drain" from the first moment of a drain (the notice included) until the drain is
over, then nothing (the regular health check takes over)."""

from __future__ import annotations

import socket
import threading

from realservers import free_port, port_open, wait_for
from serving import LogEvents

from engine.wire.client import Client


def agent_line(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        out = b""
        while chunk := s.recv(100):
            out += chunk
        return out


def test_agent_answers_up_then_drain_through_the_drain(start_server):
    import asyncio

    port = free_port()
    srv = start_server(server__agent_port=port, server__drain_notice_s=60)
    assert agent_line(port) == b"up ready\n"
    assert agent_line(port) == b"up ready\n"  # one line per connection, then closed
    with LogEvents() as log:
        drain = threading.Thread(target=srv.call, args=(srv.server.drain(), 120))
        drain.start()
        log.wait("drain_notice")
        assert agent_line(port) == b"drain\n"

        # During the notice the server still serves as usual: new connections, answers.
        async def ping():
            async with await Client.connect("127.0.0.1", srv.port) as client:
                return await client.ping()

        assert asyncio.run(ping()) is True
        assert not srv.server.draining
        srv.call(_end_notice(srv.server))  # a second SIGTERM: the drain proper
        log.wait("stopped")
        drain.join(30)
    assert not drain.is_alive()
    wait_for(lambda: not port_open(port), what="the agent port closed after the drain")


async def _end_notice(server) -> None:
    server.end_notice()


def test_no_agent_no_notice(start_server):
    srv = start_server()
    assert srv.server.agent is None
    with LogEvents() as log:
        srv.stop()  # drains at once: no notice without an agent to give it
    assert not log.named("drain_notice")
