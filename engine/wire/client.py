"""An asyncio client for the engine's protocol (docs/PROTOCOL.md).

    async with await Client.connect("127.0.0.1", 7700) as client:
        result = await client.verify(presentation)
        results = await client.verify_batch([p1, p2, p3])

Requests are pipelined: any number may be in flight on one connection, and each
response is matched to its request by id.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl as ssl_mod
from collections.abc import Sequence
from typing import Any, cast

import msgpack

from engine.errors import EsscError
from engine.verdicts import Result
from engine.wire import protocol as proto
from engine.wire.framing import FrameDecoder


class ServerError(EsscError):
    """The server answered with an error response."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class _ClientProtocol(asyncio.Protocol):
    def __init__(self, client: Client):
        self.client = client
        self.decoder = FrameDecoder(1 << 30)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.client._transport = cast(asyncio.Transport, transport)  # a stream transport

    def data_received(self, data: bytes) -> None:
        for payload in self.decoder.feed(data):
            self.client._on_response(msgpack.unpackb(payload, raw=False))

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._on_lost(exc)


class Client:
    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._lost: BaseException | None = None
        self._closed = asyncio.Event()
        self.unsolicited: list[dict[str, Any]] = []  # error frames without a request id

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        ssl: ssl_mod.SSLContext | None = None,
        timeout: float = 10.0,
    ) -> Client:
        client = cls()
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(
            loop.create_connection(lambda: _ClientProtocol(client), host, port, ssl=ssl),
            timeout,
        )
        return client

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    @property
    def in_flight(self) -> int:
        return len(self._waiting)

    @property
    def closed(self) -> bool:
        """Lost, or closing: no request sent now would be answered."""
        return self._lost is not None or self._transport is None or self._transport.is_closing()

    async def wait_closed(self) -> None:
        """Returns once the connection is lost (by either side)."""
        await self._closed.wait()

    async def request(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Sends one request and waits for its response map (ServerError on error)."""
        if self._lost is not None or self._transport is None:
            raise ConnectionError("connection closed") from self._lost
        rid = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._waiting[rid] = future
        self._transport.write(proto.request(rid, kind, **fields))
        try:
            response: dict[str, Any] = await future
        finally:  # a caller that stopped waiting (a timeout) leaves nothing behind
            self._waiting.pop(rid, None)
        if "error" in response:
            raise ServerError(response["error"], response.get("message", ""))
        return response

    async def verify(self, presentation: bytes, *, context: dict[str, Any] | None = None) -> Result:
        fields: dict[str, Any] = {"presentation": presentation}
        if context:
            fields["context"] = context
        return Result.from_map(await self.request(proto.VERIFY, **fields))

    async def verify_batch(
        self, presentations: Sequence[bytes], *, context: dict[str, Any] | None = None
    ) -> list[Result]:
        fields: dict[str, Any] = {"presentations": list(presentations)}
        if context:
            fields["context"] = context
        response = await self.request(proto.VERIFY_BATCH, **fields)
        return [Result.from_map(m) for m in response["results"]]

    async def revocation_check(
        self, cards: Sequence[str] = (), credentials: Sequence[bytes] = ()
    ) -> dict[str, Any]:
        answer = await self.request(
            proto.REVOCATION_CHECK, cards=list(cards), credentials=list(credentials)
        )
        return answer

    async def status(self) -> dict[str, Any]:
        status: dict[str, Any] = (await self.request(proto.STATUS))["status"]
        return status

    async def ping(self) -> bool:
        return bool((await self.request(proto.PING))["pong"])

    def _on_response(self, response: dict[str, Any]) -> None:
        rid = response.get("id")
        future = self._waiting.pop(rid, None) if type(rid) is int else None
        if future is None:
            self.unsolicited.append(response)
        elif not future.done():
            future.set_result(response)

    def _on_lost(self, exc: BaseException | None) -> None:
        self._lost = exc or ConnectionError("connection closed by the server")
        self._closed.set()
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(ConnectionError("connection closed before the response"))
