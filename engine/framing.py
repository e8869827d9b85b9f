"""Frames on the wire: a 4-byte big-endian length, then that many bytes of msgpack.

``FrameDecoder`` turns the byte stream of one connection into payloads without
copying more than each payload once; ``encode`` does the reverse.
"""

from __future__ import annotations

import struct

HEADER = struct.Struct(">I")
HEADER_SIZE = HEADER.size
DEFAULT_MAX_FRAME = 1 << 20


class FrameTooLarge(Exception):
    def __init__(self, size: int, limit: int):
        super().__init__(f"frame of {size} bytes exceeds the limit of {limit}")
        self.size = size
        self.limit = limit


def encode(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


class FrameDecoder:
    """Accumulates received bytes and yields complete frame payloads."""

    __slots__ = ("_buf", "_pos", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME):
        self._buf = bytearray()
        self._pos = 0
        self.max_frame = max_frame

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a complete frame."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the payloads now complete (possibly none).

        Raises FrameTooLarge as soon as a header announces more than ``max_frame``
        bytes: the stream cannot be resynchronised after that.
        """
        buf = self._buf
        if self._pos == len(buf):
            # Common case: nothing left over, parse straight from the new data.
            buf.clear()
            self._pos = 0
        buf += data
        out = []
        pos = self._pos
        end = len(buf)
        limit = self.max_frame
        while end - pos >= HEADER_SIZE:
            (size,) = HEADER.unpack_from(buf, pos)
            if size > limit:
                self._pos = pos
                raise FrameTooLarge(size, limit)
            if end - pos - HEADER_SIZE < size:
                break
            start = pos + HEADER_SIZE
            out.append(bytes(buf[start : start + size]))
            pos = start + size
        if pos:
            # Drop consumed bytes once they are the bulk of the buffer.
            if pos == end:
                buf.clear()
                pos = 0
            elif pos > 65536:
                del buf[:pos]
                pos = 0
        self._pos = pos
        return out
