"""A tiny stand-in server speaking the wire protocol, for testing the load generator.

It verifies nothing: every verify item is answered with a fixed verdict, at once,
except that it can stall once (stop reading and answering for a known time) or start
answering BUSY after a number of presentations.  Runs on its own event loop thread.
"""

from __future__ import annotations

import asyncio
import threading

import msgpack

from engine.wire.framing import FrameDecoder, encode

_packer = msgpack.Packer(use_bin_type=True)


class _Conn(asyncio.Protocol):
    def __init__(self, server: FakeServer):
        self.server = server
        self.decoder = FrameDecoder(1 << 24)
        self.backlog: list[bytes] = []
        self.stalled = False

    def connection_made(self, transport):
        self.transport = transport
        self.server.conns.append(self)

    def data_received(self, data):
        self.backlog += self.decoder.feed(data)
        self.process()

    def process(self):
        out = []
        while self.backlog and not self.stalled:
            msg = msgpack.unpackb(self.backlog.pop(0), raw=False)
            srv = self.server
            kind = msg["type"]
            if kind in ("verify", "verify_batch"):
                n = 1 if kind == "verify" else len(msg["presentations"])
                srv.requests += 1
                srv.presentations += n
                code = srv.verdict
                if srv.busy_after is not None and srv.presentations > srv.busy_after:
                    code = 15
                if kind == "verify":
                    answer = {"id": msg["id"], "verdict": code}
                else:
                    answer = {"id": msg["id"], "results": [{"verdict": code}] * n}
                if srv.stall_at is not None and srv.requests == srv.stall_at:
                    # Stall: nothing is read or answered until the time is up.
                    self.stalled = True
                    self.transport.pause_reading()
                    frame = encode(_packer.pack(answer))
                    asyncio.get_running_loop().call_later(srv.stall_s, self.resume, [*out, frame])
                    return
                out.append(encode(_packer.pack(answer)))
            elif kind == "ping":
                out.append(encode(_packer.pack({"id": msg["id"], "pong": True})))
            elif kind == "status":
                out.append(encode(_packer.pack({"id": msg["id"], "status": {"fake": True}})))
            else:
                out.append(
                    encode(
                        _packer.pack(
                            {"id": msg["id"], "error": "no_revocation_data", "message": "fake"}
                        )
                    )
                )
        if out:
            self.transport.write(b"".join(out))

    def resume(self, frames):
        self.transport.write(b"".join(frames))
        self.stalled = False
        self.transport.resume_reading()
        self.process()


class FakeServer:
    def __init__(
        self,
        *,
        verdict: int = 0,
        stall_at: int | None = None,
        stall_s: float = 0.0,
        busy_after: int | None = None,
    ):
        self.verdict = verdict
        self.stall_at = stall_at  # the request (1-based) whose answer stalls the server
        self.stall_s = stall_s
        self.busy_after = busy_after  # presentations answered normally before BUSY
        self.requests = 0
        self.presentations = 0
        self.conns: list[_Conn] = []
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    def _run(self, ready):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            self.loop.create_server(lambda: _Conn(self), "127.0.0.1", 0)
        )
        self.port = self.server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    def stop(self):
        async def close():
            self.server.close()
            for c in self.conns:
                c.transport.abort()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
