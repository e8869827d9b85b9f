"""atheris harness: the native FrameDecoder (engine/_core_framing.pxi) against a direct
Python reading of docs/PROTOCOL.md section 2.

Input: byte 0 picks max_frame, byte 1 seeds how the rest (the byte stream of one
connection) is cut into feed() calls, empty ones included.  After every call the
payloads returned, FrameTooLarge (with its size and limit) and ``pending`` must be
exactly the reference's.
"""

from __future__ import annotations

import random

import common

_core = common.load_core()


class Reference:
    """A 4-byte big-endian length, then that many bytes; a header announcing more than
    max_frame bytes is an error as soon as it is complete."""

    def __init__(self, max_frame: int):
        self.max_frame = max_frame
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        out = []
        while len(self.buf) >= 4:
            size = int.from_bytes(self.buf[:4], "big")
            if size > self.max_frame:
                raise _core.FrameTooLarge(size, self.max_frame)
            if len(self.buf) < 4 + size:
                break
            out.append(bytes(self.buf[4 : 4 + size]))
            del self.buf[: 4 + size]
        return out


def max_frame_of(b: int) -> int:
    return 1 << 20 if b == 255 else (b * 37) % 600


def test_one(data: bytes) -> None:
    if len(data) < 2:
        return
    max_frame = max_frame_of(data[0])
    rng = random.Random(data[1])
    widest = 1 + (data[1] % 40) * 3
    stream = data[2:]
    native = _core.FrameDecoder(max_frame)
    ref = Reference(max_frame)
    pos = 0
    for _ in range(4 * len(stream) + 8):
        n = rng.randint(0, widest)
        chunk = stream[pos : pos + n]
        pos += n
        want_err = got_err = None
        try:
            want = ref.feed(chunk)
        except _core.FrameTooLarge as e:
            want_err = (e.size, e.limit)
        try:
            got = native.feed(chunk)
        except _core.FrameTooLarge as e:
            got_err = (e.size, e.limit)
        common.check(got_err == want_err, f"FrameTooLarge {got_err} != {want_err}", data)
        if want_err:
            return
        common.check(got == want, f"payloads {got!r} != {want!r}", data)
        common.check(native.pending == len(ref.buf), "pending differs", data)
        if pos >= len(stream):
            return


if __name__ == "__main__":
    common.fuzz(test_one)
