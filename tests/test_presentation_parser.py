"""The native presentation parser against the reference decoder (engine/formats/credentials.py).

Both must accept exactly the same byte strings: the reference decoder defines the format
(docs/FORMATS.md), the native parser is what the hot path runs.
"""

from __future__ import annotations

import struct

import msgpack
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from engine import _core
from engine.formats.credentials import Presentation
from engine.formats.encoding import FormatError
from engine.verdicts import Verdict

SETTINGS = settings(max_examples=1500, suppress_health_check=list(HealthCheck), deadline=None)


def reference_accepts(data: bytes) -> bool:
    try:
        Presentation.decode(data)
    except FormatError:
        return False
    return True


def agree(data: bytes) -> None:
    accepted = reference_accepts(data)
    event(f"accepted={accepted}")
    assert _core.parses(data) == accepted, data.hex()


@SETTINGS
@given(data=st.data())
def test_mutated_presentations(scenarios, now_s, data):
    outcome = data.draw(st.sampled_from([Verdict.OK, Verdict.EXPIRED, Verdict.UNKNOWN_ISSUER]))
    (good,) = scenarios.presentations([outcome], now_s * 1000)
    buf = bytearray(good)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.integers(0, 4))
        pos = data.draw(st.integers(0, len(buf)))
        if op == 0 and pos < len(buf):
            buf[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == 1 and pos < len(buf):
            buf[pos] = data.draw(st.integers(0, 255))
        elif op == 2:
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=3))
        elif op == 3:
            del buf[pos : pos + data.draw(st.integers(1, 3))]
        else:
            del buf[pos:]
    agree(bytes(buf))


@SETTINGS
@given(data=st.binary(max_size=500))
def test_random_bytes(data):
    agree(data)


# Fields of a credential body and a presentation body, as (python value, strategy of
# alternatives that are wrong in type, size, range or charset).
_text_junk = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=40),
    st.integers(-5, 300),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False),
)


def _fields(scenarios):
    cred = msgpack.unpackb(msgpack.unpackb(scenarios.credentials(Verdict.OK)[0])[0], raw=False)
    return cred


@SETTINGS
@given(data=st.data())
def test_structured_field_variations(scenarios, data):
    cred_fields = _fields(scenarios)
    fields = list(cred_fields)
    index = data.draw(st.integers(0, len(fields)))
    if index == len(fields):
        # Wrong arity.
        fields = fields[:-1] if data.draw(st.booleans()) else [*fields, 0]
    else:
        fields[index] = data.draw(
            st.one_of(
                _text_junk,
                st.sampled_from(
                    [
                        "essc/credential",
                        "A12345678",
                        "440300",
                        "hrss-app",
                        "x" * 32,
                        "x" * 33,
                        bytes(16),
                        bytes(32),
                        2**64 - 1,
                        2**32,
                        65536,
                        1,
                        0,
                    ]
                ),
            )
        )
    cred = msgpack.packb([msgpack.packb(fields, use_bin_type=True), bytes(64)], use_bin_type=True)
    body = [
        "essc/presentation",
        1,
        cred,
        data.draw(st.sampled_from([0, 1, 127, 128, 255, 256, 2**32, 2**64 - 1])),
        data.draw(st.sampled_from([bytes(16), bytes(15), b"x" * 17, "n" * 16])),
        data.draw(st.sampled_from([0, 1, 2, 3, 4, 5, 255])),
    ]
    pres = msgpack.packb([msgpack.packb(body, use_bin_type=True), bytes(64)], use_bin_type=True)
    agree(pres)


def _stretch_uint(value: int) -> bytes:
    """``value`` as uint64: a valid msgpack value, but not the shortest encoding."""
    return b"\xcf" + struct.pack(">Q", value)


def test_non_canonical_forms_rejected_by_both(scenarios, now_s):
    (good,) = scenarios.presentations([Verdict.OK], now_s * 1000)
    assert _core.parses(good) and reference_accepts(good)
    outer = msgpack.unpackb(good)
    body = msgpack.unpackb(outer[0], raw=False)
    variants = []
    # purpose 3 as uint64
    enc_body = msgpack.packb(body[:5], use_bin_type=True)
    stretched = b"\x96" + enc_body[1:] + _stretch_uint(body[5])
    variants.append(stretched)
    # tag as str8 instead of fixstr
    tag = body[0].encode()
    head = msgpack.packb(body, use_bin_type=True)
    variants.append(b"\x96\xd9" + bytes([len(tag)]) + tag + head[2 + len(tag) :])
    # signature as bin16
    for v in variants:
        assert msgpack.unpackb(v, raw=False) == body  # same value, other bytes
        pres = msgpack.packb([v, outer[1]], use_bin_type=True)
        assert not _core.parses(pres) and not reference_accepts(pres)
    sig16 = b"\x92" + msgpack.packb(outer[0], use_bin_type=True) + b"\xc5\x00\x40" + outer[1]
    assert msgpack.unpackb(sig16) == outer
    assert not _core.parses(sig16) and not reference_accepts(sig16)
