"""atheris harness: the PROXY protocol v2 parser (engine/server/proxy_protocol.py)
against a direct reading of haproxy's doc/proxy-protocol.txt written here.

Input: byte 0 seeds how the rest (the first bytes of a connection from a balancer)
is cut into ``HeaderReader.feed`` calls, empty ones included.  Checked: only
ProxyProtocolError ever escapes; accept or reject, the source, the command and the
size are the reference's; the bytes after the header come back untouched;
``wanted()`` never asks for a byte past the header (the TLS path reads exactly that);
nothing is buffered beyond 536 bytes.
"""

from __future__ import annotations

import random
import socket
import struct

import atheris
import common

common.load_core()

# The parser is Python: its bytecode is instrumented for coverage (the native core's
# harnesses get theirs from the instrumented build instead).
with atheris.instrument_imports(include=["engine.server.proxy_protocol"]):
    from engine.server import proxy_protocol as pp

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def reference(data: bytes) -> tuple[int, tuple[str, int] | None, int] | str | None:
    """(command, source, size) of a valid header; "error"; None: incomplete."""
    for i in range(min(len(data), 12)):
        if data[i] != SIG[i]:
            return "error"
    if len(data) < 16:
        return None
    version, command = data[12] >> 4, data[12] & 15
    fam = data[13]
    length = int.from_bytes(data[14:16], "big")
    if version != 2 or command > 1 or 16 + length > 536:
        return "error"
    if command == 0:
        return (0, None, 16 + length) if len(data) >= 16 + length else None
    need = {0x00: 0, 0x11: 12, 0x21: 36}.get(fam)
    if need is None or length < need:
        return "error"
    if len(data) < 16 + length:
        return None
    tlvs = data[16 + need : 16 + length]
    while tlvs:
        if len(tlvs) < 3 or 3 + int.from_bytes(tlvs[1:3], "big") > len(tlvs):
            return "error"
        tlvs = tlvs[3 + int.from_bytes(tlvs[1:3], "big") :]
    if fam == 0x00:
        return (1, None, 16 + length)
    af, w = (socket.AF_INET, 4) if fam == 0x11 else (socket.AF_INET6, 16)
    (port,) = struct.unpack(">H", data[16 + 2 * w : 18 + 2 * w])
    return (1, (socket.inet_ntop(af, data[16 : 16 + w]), port), 16 + length)


def test_one(data: bytes) -> None:
    if not data:
        return
    rng = random.Random(data[0])
    stream = data[1:]
    want = reference(stream)
    reader = pp.HeaderReader()
    pos = 0
    got: object = None
    while True:
        if want is not None and want != "error":
            common.check(pos + reader.wanted() <= want[2], "wanted() reads past the header", data)
        n = rng.randint(0, 24)
        chunk = stream[pos : pos + n]
        pos += len(chunk)
        try:
            done = reader.feed(chunk)
        except pp.ProxyProtocolError:
            common.check(want == "error", f"refused; the reference says {want!r}", data)
            return
        common.check(reader.pending <= pp.MAX_HEADER_BYTES, "buffered past 536 bytes", data)
        if done is not None:
            header, rest = done
            got = (header.command, header.source, header.size)
            common.check(got == want, f"{got!r} != reference {want!r}", data)
            common.check(rest + stream[pos:] == stream[header.size :], "bytes after it", data)
            return
        if pos >= len(stream):
            common.check(want is None, f"incomplete; the reference says {want!r}", data)
            return


if __name__ == "__main__":
    common.fuzz(test_one)
