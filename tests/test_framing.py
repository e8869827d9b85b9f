"""The native frame decoder: any split of the stream gives the same frames."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.wire.framing import FrameDecoder, FrameTooLarge, encode


@settings(max_examples=300, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=300), max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
)
def test_any_split_gives_the_same_frames(payloads, cuts):
    stream = b"".join(encode(p) for p in payloads)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    decoder = FrameDecoder(1 << 20)
    got = []
    for a, b in itertools.pairwise(points):
        got += decoder.feed(stream[a:b])
    assert got == payloads
    assert decoder.pending == 0


def test_byte_by_byte_and_partial_state():
    decoder = FrameDecoder(100)
    frame = encode(b"hello")
    for i, byte in enumerate(frame[:-1]):
        assert decoder.feed(bytes([byte])) == []
        assert decoder.pending == i + 1
    assert decoder.feed(frame[-1:] + encode(b"") + encode(b"x")[:3]) == [b"hello", b""]
    assert decoder.pending == 3
    assert decoder.feed(b"") == []


def test_oversize_detected_from_the_header_alone():
    decoder = FrameDecoder(10)
    assert decoder.feed(encode(b"0123456789")) == [b"0123456789"]
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(b"\x00\x00\x00\x0b")
    assert (info.value.size, info.value.limit) == (11, 10)
    split = FrameDecoder(10)
    assert split.feed(b"\x00\x00") == []
    with pytest.raises(FrameTooLarge):
        split.feed(b"\x01\x00")


def test_accepts_any_bytes_like():
    decoder = FrameDecoder(100)
    assert decoder.feed(bytearray(encode(b"ab"))) == [b"ab"]
    assert decoder.feed(memoryview(encode(b"cd"))) == [b"cd"]
