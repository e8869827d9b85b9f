"""HAProxy's agent check (``agent-check``, haproxy doc/configuration.txt) on
``server.host:server.agent_port``: each connection is answered one line, then closed.

- ``up ready`` while the server serves: operationally up (if HAProxy's own health
  check agrees) and administratively ready, which also clears a DRAIN this agent set
  before (a restarted engine takes traffic again by itself);
- ``drain`` from the moment a drain begins (SIGTERM) until it is over: HAProxy sends
  no new connections, and those already open finish their work.  The agent stops
  with the server, after the drain: then the regular health check marks it DOWN (an
  agent that cannot be reached is not an error to HAProxy).

Nothing the balancer sends is read (no ``agent-send``).  The state is asked of the
server at each connection, so the answer is never stale.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

UP = b"up ready\n"
DRAIN = b"drain\n"


class _Answer(asyncio.Protocol):
    def __init__(self, line: bytes):
        self.line = line

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # a stream transport (uvloop's too)
        transport.write(self.line)
        transport.close()  # flushes the line first


class Agent:
    """``draining()`` says which line to answer."""

    def __init__(self, host: str, port: int, draining: Callable[[], bool]):
        self.host = host
        self.requested_port = port
        self.draining = draining
        self._server: asyncio.Server | None = None

    def line(self) -> bytes:
        return DRAIN if self.draining() else UP

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Answer(self.line()), self.host, self.requested_port
        )

    @property
    def port(self) -> int:
        assert self._server is not None, "agent not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
