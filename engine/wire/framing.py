"""Frames on the wire: a 4-byte big-endian length, then that many bytes of msgpack.

``FrameDecoder`` (native, engine/_core_framing.pxi) turns the byte stream of one
connection into payloads, copying each payload once; ``encode`` does the reverse.
"""

from __future__ import annotations

import struct

from engine import _core

HEADER = struct.Struct(">I")
HEADER_SIZE = HEADER.size


def encode(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


# The decoder is native: every byte a client sends passes through it.
FrameDecoder = _core.FrameDecoder
FrameTooLarge = _core.FrameTooLarge
