"""atheris harness: the native request parser (esc_parse_verify_request, engine/native/
wire.c, through _core._wire_parse_verify_request) against engine.wire.protocol.parse_request.

Input: byte 0 is max_items, the rest a request payload.  Whenever the native parser
accepts, parse_request must accept with the same reading (id, type, presentations,
context).  The other way round, the native parser must take every canonical
encoding of a request holding only the keys it reads (max_items >= 1) (wire.h: declining is allowed
only for what the fast path chooses not to handle).
"""

from __future__ import annotations

import contextlib
import random
import zlib

import atheris
import common
import msgpack

_core = common.load_core()

with atheris.instrument_imports(include=["engine"]):
    from engine.wire import protocol as proto


def reference(payload: bytes, max_items: int):
    try:
        req = proto.parse_request(payload, max_items)
    except proto.RequestError:
        return None, None
    if req.type not in (proto.VERIFY, proto.VERIFY_BATCH):
        return None, req
    ctx = req.context or {}
    reading = (
        req.id,
        req.type == proto.VERIFY_BATCH,
        req.presentations,
        ctx.get("merchant_id"),
        ctx.get("terminal_id"),
    )
    return reading, req


def must_take(payload: bytes, max_items: int, req) -> bool:
    """A plain request: only the keys of its type, canonically packed (and room for at
    least one item: with max_items 0 the fast path declines even a verify)."""
    msg = req.message
    if max_items < 1:
        return False
    keys = {
        "id",
        "type",
        "context",
        "presentation" if req.type == proto.VERIFY else "presentations",
    }
    if not set(msg) <= keys:
        return False
    return msgpack.packb(msg, use_bin_type=True) == payload


# Structure-aware variants: decode, change one value at its edges, pack again (byte-level
# mutation alone rarely changes a length and its header together).
KEYS = ["id", "type", "presentation", "presentations", "context", "merchant_id", "terminal_id"]
EDGE_INTS = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63, 2**64 - 1, -1]
CHARS = "aZ09._:-/ \xe9#"


def _tweak(value, rng: random.Random, depth: int = 0):
    if isinstance(value, dict) and value and rng.random() < 0.9:
        key = rng.choice(list(value))
        value = dict(value)
        roll = rng.random()
        if roll < 0.1:
            del value[key]
        elif roll < 0.2:
            value[rng.choice(KEYS)] = value[key]
        else:
            value[key] = _tweak(value[key], rng, depth + 1)
        return value
    if isinstance(value, list) and value and rng.random() < 0.9:
        value = list(value)
        i = rng.randrange(len(value))
        roll = rng.random()
        if roll < 0.15:
            del value[i]
        elif roll < 0.3:
            value.append(value[i])
        else:
            value[i] = _tweak(value[i], rng, depth + 1)
        return value
    if isinstance(value, str):
        roll = rng.random()
        if roll < 0.4:
            return value + rng.choice(CHARS)
        if roll < 0.6:
            return value[:-1]
        if roll < 0.7:
            return rng.choice([*KEYS, "verify", "verify_batch", "ping"])
        i = rng.randrange(len(value) + 1)
        return value[:i] + rng.choice(CHARS) + value[i + 1 :]
    if isinstance(value, bytes):
        return value + b"x" if rng.random() < 0.5 else value[:-1]
    if isinstance(value, bool) or value is None:
        return rng.choice([None, True, 0, "", b"", [], {}])
    if isinstance(value, int):
        return rng.choice(EDGE_INTS)
    return rng.choice([None, {}, [], 0, "verify", b"", {"merchant_id": "m"}])


def variants(data: bytes, count: int = 2) -> list[bytes]:
    """Structured neighbours of the input, seeded by its bytes (a custom libFuzzer
    mutator would be the usual place, but libFuzzer cannot see atheris's when it comes
    from the preloaded runtime)."""
    try:
        msg = msgpack.unpackb(data[1:], raw=False, strict_map_key=False)
    except Exception:
        return []
    rng = random.Random(zlib.crc32(data))
    out = []
    for _ in range(count):
        # A tweak msgpack cannot pack (a key that is a list, ...) is skipped.
        with contextlib.suppress(Exception):
            out.append(data[:1] + msgpack.packb(_tweak(msg, rng), use_bin_type=True))
    return out


def check_one(data: bytes) -> None:
    if not data:
        return
    max_items, payload = data[0], data[1:]
    got = _core._wire_parse_verify_request(payload, max_items)
    want, req = reference(payload, max_items)
    if got is not None:
        common.check(got == want, f"native read {got!r}, parse_request {want!r}", data)
    elif want is not None:
        common.check(
            not must_take(payload, max_items, req), "native declined a plain request", data
        )


def test_one(data: bytes) -> None:
    check_one(data)
    for variant in variants(data):
        check_one(variant)


if __name__ == "__main__":
    common.fuzz(test_one)
