"""Canonical msgpack: the one encoding of every signed e-SSC object.

Objects are msgpack arrays of fixed length with positional fields; integers take
their shortest encoding, byte strings are ``bin`` and text is ``str``.  That is what
msgpack-python produces, so encoding is ``packb``; decoding additionally re-encodes
and insists on getting the input back, so exactly one byte string is accepted for
each value and nothing can be smuggled through alternative encodings.
"""

from __future__ import annotations

import re
from typing import Any

import msgpack

from engine.errors import EsscError

# Generous upper bounds on what a decoder accepts (a presentation is ~400 bytes).
MAX_OBJECT_BYTES = 64 * 1024
MAX_TRUST_LIST_BYTES = 16 * 1024 * 1024

_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,32}\Z")


class FormatError(EsscError, ValueError):
    """An object that is not well-formed; ``field`` names where, ``reason`` what."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def pack(obj: Any) -> bytes:
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


def unpack(data: Any, field: str, *, max_bytes: int = MAX_OBJECT_BYTES) -> Any:
    """Decode one canonical msgpack value or raise FormatError."""
    if not isinstance(data, (bytes, bytearray)):
        raise FormatError(field, f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise FormatError(field, f"{len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        obj = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except msgpack.ExtraData:
        raise FormatError(field, "trailing bytes after the msgpack value") from None
    except UnicodeDecodeError:
        raise FormatError(field, "text is not valid UTF-8") from None
    except (ValueError, TypeError, msgpack.UnpackException):
        raise FormatError(field, "not a valid msgpack value") from None
    if pack(obj) != bytes(data):
        raise FormatError(field, "not in canonical msgpack encoding")
    return obj


def array(value: Any, field: str, length: int) -> list[Any]:
    if type(value) is not list:
        raise FormatError(field, f"expected an array, got {_kind(value)}")
    if len(value) != length:
        raise FormatError(field, f"expected an array of {length} elements, got {len(value)}")
    return value


def uint(value: Any, field: str, *, maximum: int = 2**64 - 1) -> int:
    if type(value) is not int:
        raise FormatError(field, f"expected an unsigned integer, got {_kind(value)}")
    if not 0 <= value <= maximum:
        raise FormatError(field, f"{value} is outside 0..{maximum}")
    return value


def binary(value: Any, field: str, length: int | None = None) -> bytes:
    if type(value) is not bytes:
        raise FormatError(field, f"expected bin, got {_kind(value)}")
    if length is not None and len(value) != length:
        raise FormatError(field, f"expected {length} bytes, got {len(value)}")
    return value


def text(value: Any, field: str, pattern: re.Pattern[str] | None = None) -> str:
    if type(value) is not str:
        raise FormatError(field, f"expected str, got {_kind(value)}")
    if pattern is not None and not pattern.match(value):
        raise FormatError(field, f"{value[:40]!r} does not match {pattern.pattern}")
    return value


def identifier(value: Any, field: str) -> str:
    """Key ids and channel ids: 1-32 characters of [A-Za-z0-9._-]."""
    return text(value, field, _ID_RE)


def tag(value: Any, field: str, expected: str) -> None:
    if value != expected or type(value) is not str:
        raise FormatError(field, f"expected the tag {expected!r}")


def version(value: Any, field: str, supported: int) -> None:
    v = uint(value, field)
    if v != supported:
        raise FormatError(field, f"unsupported format version {v} (this engine reads {supported})")


def _kind(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        str: "str",
        bytes: "bin",
        list: "an array",
        dict: "a map",
        type(None): "nil",
    }.get(type(value), type(value).__name__)
