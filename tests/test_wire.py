"""The native wire codec (engine/native/wire.c) against engine/wire/protocol.py.

The parser may decline anything (the server then uses parse_request), but what it
accepts, parse_request must accept with the same reading; and it must take the normal
encodings of verify and verify_batch requests.  The encoders must write exactly the
bytes of verify_response / batch_response.  The contexts the server's batches keep
from the same parse (RequestBatch.add_frames) must be parse_request's too.
"""

from __future__ import annotations

import struct

import msgpack
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from engine import _core
from engine.verifier import _PURPOSES
from engine.wire import protocol as proto

SETTINGS = settings(max_examples=400, suppress_health_check=list(HealthCheck), deadline=None)
MAX_DEPTH = 8  # ESC_WIRE_MAX_DEPTH
KNOWN = ("id", "type", "presentation", "presentations", "context")

fast = _core._wire_parse_verify_request


def reference(payload: bytes, max_items: int):
    """What parse_request reads, in the fast parser's terms; None if it rejects or the
    request is of another type."""
    try:
        req = proto.parse_request(payload, max_items)
    except proto.RequestError:
        return None
    if req.type not in (proto.VERIFY, proto.VERIFY_BATCH):
        return None
    ctx = req.context or {}
    return (
        req.id,
        req.type == proto.VERIFY_BATCH,
        req.presentations,
        ctx.get("merchant_id"),
        ctx.get("terminal_id"),
    )


def check(payload: bytes, max_items: int = 256):
    """The fast reading, after checking that parse_request reads the same."""
    got = fast(payload, max_items)
    want = reference(payload, max_items)
    if currently_in_test_context():
        event(f"fast path took it: {got is not None}; parse_request: {want is not None}")
    if got is not None:
        assert got == want, payload.hex()
    return got


def payload_of(frame: bytes) -> bytes:
    assert struct.unpack(">I", frame[:4])[0] == len(frame) - 4
    return frame[4:]


# --- msgpack with a choice of encodings ------------------------------------------------


def _pick(options, draw):
    return options[0] if len(options) == 1 else draw(st.sampled_from(options))


def _sized(n, draw, fix_limit, fix_tag, tags):
    """A header for n (length or count): the fix form where it fits, then the tags."""
    out = [bytes([fix_tag | n])] if n < fix_limit else []
    for tag, fmt in tags:
        if n < 1 << (8 * struct.calcsize(fmt)):
            out.append(bytes([tag]) + struct.pack(fmt, n))
    return _pick(out, draw)


def pack_any(value, draw) -> bytes:
    """A valid msgpack encoding of value, each header drawn from the forms that fit
    (msgpack-python decodes them all to the same value)."""
    if value is None:
        return b"\xc0"
    if value is True or value is False:
        return b"\xc3" if value else b"\xc2"
    if isinstance(value, int):
        out = []
        if 0 <= value < 128:
            out.append(bytes([value]))
        if -32 <= value < 0:
            out.append(struct.pack(">b", value))
        for tag, fmt in ((0xCC, ">B"), (0xCD, ">H"), (0xCE, ">I"), (0xCF, ">Q")):
            if 0 <= value < 1 << (8 * struct.calcsize(fmt)):
                out.append(bytes([tag]) + struct.pack(fmt, value))
        for tag, fmt in ((0xD0, ">b"), (0xD1, ">h"), (0xD2, ">i"), (0xD3, ">q")):
            bits = 8 * struct.calcsize(fmt)
            if -(1 << (bits - 1)) <= value < 1 << (bits - 1):
                out.append(bytes([tag]) + struct.pack(fmt, value))
        return _pick(out, draw)
    if isinstance(value, float):
        return b"\xcb" + struct.pack(">d", value)
    if isinstance(value, str):
        raw = value.encode()
        return _sized(len(raw), draw, 32, 0xA0, ((0xD9, ">B"), (0xDA, ">H"), (0xDB, ">I"))) + raw
    if isinstance(value, bytes):
        return _sized(len(value), draw, 0, 0, ((0xC4, ">B"), (0xC5, ">H"), (0xC6, ">I"))) + value
    if isinstance(value, list):
        head = _sized(len(value), draw, 16, 0x90, ((0xDC, ">H"), (0xDD, ">I")))
        return head + b"".join(pack_any(v, draw) for v in value)
    if isinstance(value, dict):
        return pack_items(list(value.items()), draw)
    raise TypeError(type(value))


def pack_items(pairs: list, draw) -> bytes:
    """A map of (key, value) pairs, keys possibly repeated."""
    head = _sized(len(pairs), draw, 16, 0x80, ((0xDE, ">H"), (0xDF, ">I")))
    return head + b"".join(pack_any(k, draw) + pack_any(v, draw) for k, v in pairs)


def nesting(value) -> int:
    """Levels of non-empty containers (the fast path declines more than MAX_DEPTH - 1
    under a top-level key)."""
    if isinstance(value, list) and value:
        return 1 + max(nesting(v) for v in value)
    if isinstance(value, dict) and value:
        return 1 + max(nesting(v) for v in value.values())
    return 0


# --- strategies ------------------------------------------------------------------------

INT_EDGES = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63]
ids = st.one_of(st.sampled_from([*INT_EDGES, 2**64 - 1]), st.integers(0, 2**64 - 1))
context_values = st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True)
contexts = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {}, optional={"merchant_id": context_values, "terminal_id": context_values}
    ),
)
presentation = st.one_of(
    st.binary(max_size=400), st.sampled_from([b"", b"\0" * 255, b"\1" * 256, b"\2" * 65536])
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=6) | st.binary(max_size=4), inner, max_size=4)
    ),
    max_leaves=10,
)
extra_keys = st.one_of(
    st.text(max_size=14).filter(lambda k: k not in KNOWN),
    st.binary(max_size=6),
    st.sampled_from(["ID", "Type", "contexts", "presentation ", b"id", b"type", b"context"]),
)


@st.composite
def requests(draw, canonical: bool):
    """(payload, max_items, expected fast reading, nesting of the extra values) of a
    well-formed verify or verify_batch request with extra keys, in random key order."""
    rid = draw(ids)
    batch = draw(st.booleans())
    items = draw(st.lists(presentation, min_size=1, max_size=20)) if batch else [draw(presentation)]
    max_items = draw(st.integers(len(items), 300))
    ctx = draw(contexts)
    fields = {"id": rid, "type": "verify_batch" if batch else "verify"}
    fields["presentations" if batch else "presentation"] = items if batch else items[0]
    if ctx is not None or draw(st.booleans()):
        fields["context"] = ctx
    extra = draw(st.dictionaries(extra_keys, values, max_size=4))
    # The other kind's item key is an unknown key too.
    if draw(st.booleans()):
        extra["presentation" if batch else "presentations"] = draw(values)
    pairs = list(fields.items()) + list(extra.items())
    pairs = draw(st.permutations(pairs))
    if canonical:
        payload = msgpack.packb(dict(pairs), use_bin_type=True)
    else:
        payload = pack_items(pairs, draw)
    ctx = ctx or {}
    expected = (rid, batch, items, ctx.get("merchant_id"), ctx.get("terminal_id"))
    deepest = max((nesting(v) for v in extra.values()), default=0)
    return payload, max_items, expected, deepest


# --- (a) well-formed requests ----------------------------------------------------------


@SETTINGS
@given(
    rid=ids,
    batch=st.booleans(),
    items=st.lists(st.binary(max_size=300), min_size=1, max_size=40),
    ctx=contexts,
)
def test_protocol_requests_all_taken(rid, batch, items, ctx):
    """Every request protocol.request builds takes the fast path."""
    fields = {"presentations": items} if batch else {"presentation": items[0]}
    if ctx is not None:
        fields["context"] = ctx
    payload = payload_of(proto.request(rid, "verify_batch" if batch else "verify", **fields))
    ctx = ctx or {}
    got = check(payload, 256)
    assert got == (
        rid,
        batch,
        items if batch else items[:1],
        ctx.get("merchant_id"),
        ctx.get("terminal_id"),
    )


@SETTINGS
@given(req=requests(canonical=True))
def test_requests_with_extra_keys(req):
    payload, max_items, expected, deepest = req
    assert reference(payload, max_items) == expected
    got = check(payload, max_items)
    if deepest < MAX_DEPTH:
        assert got == expected


@SETTINGS
@given(req=requests(canonical=False))
def test_non_canonical_encodings(req):
    """uint64 for small ids, str8 for short strings, map16 for small maps, ...: the
    same values, read the same."""
    payload, max_items, expected, deepest = req
    assert reference(payload, max_items) == expected
    got = check(payload, max_items)
    if deepest < MAX_DEPTH:
        assert got == expected


def test_example_of_the_protocol_document():
    # docs/PROTOCOL.md, section 7: the ping is another type, the verify is taken.
    assert check(bytes.fromhex("82a2696401a474797065a470696e67")) is None
    ctx = {"merchant_id": "m-1", "terminal_id": "t:2"}
    payload = payload_of(proto.request(7, "verify", presentation=b"\x92", context=ctx))
    assert check(payload) == (7, False, [b"\x92"], "m-1", "t:2")


# --- (b) anything else -----------------------------------------------------------------


def _base(rid=5, batch=False, **extra):
    fields = {"id": rid, "type": "verify_batch" if batch else "verify"}
    fields["presentations" if batch else "presentation"] = [b"ab", b"c"] if batch else b"ab"
    fields.update(extra)
    return fields


def _pack(fields) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xc1",
        b"\x80",
        b"\x90",
        b"\xdf\xff\xff\xff\xff",
        b"\xdd\xff\xff\xff\xff",
        b"\xdb\xff\xff\xff\xff",
        _pack(_base()) + b"\x00",  # trailing bytes
        _pack(_base())[:-1],
        _pack([_base()]),
        _pack(_base(rid=-1)),
        _pack(_base(rid=True)),
        _pack(_base(rid=1.0)),
        _pack(_base(rid="1")),
        _pack(_base(rid=None)),
        _pack({"type": "verify", "presentation": b""}),
        _pack(_base(type="ping")),
        _pack(_base(type="status")),
        _pack(_base(type="revocation_check", cards=["A12345678"])),
        _pack(_base(type="Verify")),
        _pack(_base(type=b"verify")),
        _pack(_base(type=None)),
        _pack({"id": 1, "presentation": b""}),
        _pack(_base(presentation="ab")),
        _pack(_base(presentation=None)),
        _pack(_base(presentation=[b"ab"])),
        _pack({"id": 1, "type": "verify", "presentations": [b"ab"]}),
        _pack({"id": 1, "type": "verify_batch", "presentation": b"ab"}),
        _pack(_base(batch=True, presentations=[])),
        _pack(_base(batch=True, presentations=b"ab")),
        _pack(_base(batch=True, presentations=[b"ab", "c"])),
        _pack(_base(batch=True, presentations=[b"ab", None])),
        _pack(_base(batch=True, presentations=[b"x"] * 257)),  # too_many_items
        _pack(_base(context=[])),
        _pack(_base(context="m")),
        _pack(_base(context={"merchant_id": ""})),
        _pack(_base(context={"merchant_id": "x" * 65})),
        _pack(_base(context={"merchant_id": "a b"})),
        _pack(_base(context={"merchant_id": "ab\n"})),
        _pack(_base(context={"merchant_id": "é"})),
        _pack(_base(context={"merchant_id": b"ab"})),
        _pack(_base(context={"merchant_id": 1})),
        _pack(_base(context={b"merchant_id": "ab"})),
        _pack(_base(context={"store_id": "ab"})),
        _pack(_base(context={"merchant_id": "ab", "x": None})),
        _pack({1: 2, **_base()}),  # strict_map_key
        _pack(_base(extra={1: 2})),
        _pack(_base(extra=[{2.5: 1}])),
        _pack(_base(extra=msgpack.ExtType(1, b"x"))),  # valid, but declined
        _pack(_base(extra=msgpack.Timestamp(1))),
        _pack(_base()).replace(b"\xa4type", b"\xa4\xff\xfe\xfd\xfc"),  # invalid UTF-8
        _pack(_base(extra="é")).replace("é".encode(), b"\xc3\x28"),
    ],
)
def test_declined(payload):
    assert check(payload) is None


def test_boundaries_taken():
    assert check(_pack(_base(batch=True, presentations=[b"x"] * 256)), 256)
    assert check(_pack(_base(batch=True, presentations=[b"x"] * 257)), 257)
    assert check(_pack(_base(batch=True, presentations=[b"x"] * 3)), 2) is None
    assert check(_pack(_base(context={"merchant_id": "x" * 64}))) == (
        5,
        False,
        [b"ab"],
        "x" * 64,
        None,
    )
    assert check(_pack(_base(context=None))) == (5, False, [b"ab"], None, None)
    assert check(_pack(_base(context={}))) == (5, False, [b"ab"], None, None)
    # bytes keys are unknown keys, whatever they spell.
    fields = {b"id": -1, b"type": "x", b"context": 7, **_base()}
    assert check(_pack(fields)) == (5, False, [b"ab"], None, None)
    # A signed form of a non-negative id is an id; a negative one is not.
    body = _pack(_base(rid=0))
    at = body.index(b"\xa2id") + 3
    for form in (b"\xd0\x7f", b"\xd1\x00\x01", b"\xd2\x7f\xff\xff\xff", b"\xd3" + bytes(8)):
        assert check(body[:at] + form + body[at + 1 :])[0] == msgpack.unpackb(form)
    for form in (b"\xd0\xff", b"\xd3\x80" + bytes(7), b"\xff"):
        assert check(body[:at] + form + body[at + 1 :]) is None


def test_nesting_limit():
    def nested(levels):
        v = 1
        for _ in range(levels):
            v = [v]
        return v

    assert check(_pack(_base(extra=nested(MAX_DEPTH - 1))))
    assert check(_pack(_base(extra=nested(MAX_DEPTH)))) is None
    assert check(_pack(_base(extra=nested(MAX_DEPTH + 20)))) is None
    # Deeper than msgpack-python packs (or, at 2000, unpacks): a one-key map per level.
    body = _pack(_base())
    deep = bytes([body[0] + 1]) + body[1:] + b"\xa1x" + b"\x81\xa1k" * 2000 + b"\xc0"
    assert check(deep) is None
    assert check(_pack(_base(extra=[*nested(MAX_DEPTH - 1), []]))) is not None


def test_duplicate_keys_declined():
    # The dict keeps the later value: a fast path reading the earlier one would lie.
    def dup(key, first, second):
        body = _pack(_base())
        extra = _pack({key: first})[1:] + _pack({key: second})[1:]
        return bytes([body[0] + 2]) + body[1:] + extra

    for key, a, b in [
        ("id", 1, 2),
        ("type", "verify", "verify"),
        ("presentation", b"a", b"b"),
        ("context", None, None),
        ("presentations", [b"a"], [b"b"]),
    ]:
        payload = dup(key, a, b)
        msgpack.unpackb(payload, raw=False, strict_map_key=True)  # valid msgpack
        assert check(payload) is None
    # Unknown keys may repeat.
    assert check(dup("note", 1, 2)) == (5, False, [b"ab"], None, None)
    ctx = b"\x82\xabmerchant_id\xa1a\xabmerchant_id\xa1b"
    payload = _pack(_base(context=None)).replace(b"\xa7context\xc0", b"\xa7context" + ctx)
    assert reference(payload, 256)[3] == "b"
    assert check(payload) is None


def _utf8_cases():
    """Byte strings around every boundary of UTF-8 validity."""
    edges = [0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF]
    edges += [0xE0, 0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF]
    tails = [0x7F, 0x80, 0xBF, 0xC0]
    cases = [bytes([a, b]) for a in range(256) for b in range(256)]
    cases += [bytes([a, b, c]) for a in edges for b in edges for c in tails]
    cases += [bytes([a, b, c, d]) for a in edges[12:] for b in edges for c in tails for d in tails]
    return cases


def test_utf8_exactly_as_python():
    """An unknown str value is taken iff Python decodes it; same for a key."""
    body = _pack(_base())
    head = bytes([body[0] + 1]) + body[1:]
    for raw in _utf8_cases():
        try:
            raw.decode()
            valid = True
        except UnicodeDecodeError:
            valid = False
        value = bytes([0xA0 | len(raw)]) + raw
        key = bytes([0xA1 + len(raw)]) + b"~" + raw  # never a known key
        assert (fast(head + b"\xa1x" + value, 1) is not None) == valid, raw.hex()
        assert (fast(head + key + b"\xc0", 1) is not None) == valid, raw.hex()
    # In longer strings, around the 8-byte strides of the ASCII scan.
    for raw in _utf8_cases()[65536::7] + [bytes([0xC3, b]) for b in range(256)]:
        for pad in (0, 7, 8, 15, 16, 17, 30):
            text = b"a" * pad + raw + b"b" * (pad % 5)
            try:
                text.decode()
                valid = True
            except UnicodeDecodeError:
                valid = False
            value = b"\xd9" + bytes([len(text)]) + text
            assert (fast(head + b"\xa1x" + value, 1) is not None) == valid, text.hex()


@st.composite
def mutated(draw):
    payload, max_items, _, _ = draw(requests(canonical=draw(st.booleans())))
    buf = bytearray(payload)
    for _ in range(draw(st.integers(1, 2))):
        op = draw(st.integers(0, 5))
        pos = draw(st.integers(0, len(buf)))
        if op == 0 and pos < len(buf):
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == 1 and pos < len(buf):
            buf[pos] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xA0, 0xC0, 0xC1, 0xC4, 0xFF]))
        elif op == 2:
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=3))
        elif op == 3:
            del buf[pos : pos + draw(st.integers(1, 3))]
        elif op == 4:
            del buf[pos:]
        else:
            buf += draw(st.binary(min_size=1, max_size=3))
    return bytes(buf), max_items


@settings(SETTINGS, max_examples=600)
@given(case=mutated())
def test_mutations(case):
    check(*case)


@settings(SETTINGS, max_examples=600)
@given(payload=st.binary(max_size=200), max_items=st.integers(0, 4))
def test_random_bytes(payload, max_items):
    check(payload, max_items)


wrong = st.one_of(
    values,
    st.sampled_from(["verify", "verify_batch", "ping", b"verify", -1, 2**64 - 1, 0]),
    st.lists(st.binary(max_size=3) | st.text(max_size=2), max_size=4),
    st.dictionaries(
        st.sampled_from(["merchant_id", "terminal_id", "x"]) | st.binary(max_size=3),
        context_values | st.text(max_size=3) | st.integers(-5, 5),
        max_size=3,
    ),
)


@st.composite
def random_maps(draw):
    """(payload, max_items): a verify or verify_batch request with a few fields dropped,
    replaced by values right or wrong, repeated or added, in any encoding and order."""
    batch = draw(st.booleans())
    pairs = [("id", draw(ids)), ("type", "verify_batch" if batch else "verify")]
    pairs.append(("presentations", [b"a", b"bc"]) if batch else ("presentation", b"abc"))
    if draw(st.booleans()):
        pairs.append(("context", draw(contexts)))
    right = {
        "id": ids,
        "type": st.sampled_from(["verify", "verify_batch"]),
        "presentation": st.binary(max_size=5),
        "presentations": st.lists(st.binary(max_size=3), max_size=4),
        "context": contexts,
    }
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.integers(0, 3))
        i = draw(st.integers(0, len(pairs) - 1)) if pairs else None
        if op == 0 and pairs:
            del pairs[i]
        elif op == 1 and pairs:
            key = pairs[i][0]
            pairs[i] = (key, draw(right[key] if key in right and draw(st.booleans()) else wrong))
        elif op == 2 and pairs:
            pairs.append(pairs[i])
        else:
            key = draw(st.sampled_from([*KNOWN, "x", b"id"]))
            pairs.append((key, draw(right.get(key, wrong))))
    return pack_items(draw(st.permutations(pairs)), draw), draw(st.integers(0, 5))


@settings(SETTINGS, max_examples=600)
@given(case=random_maps())
def test_random_maps(case):
    check(*case)


# --- the contexts RequestBatch.add_frames keeps (audit logging on the fast path) ------

BIG = 1 << 40  # item limit and in-flight budgets that never stop add_frames


def frames_contexts(payloads: list[bytes], max_items: int, keep: bool = True) -> dict:
    """{payload index: its context in the batch} of the requests add_frames took."""
    batch = _core.RequestBatch()
    i, taken, slow, busy, _, _ = batch.add_frames(
        0, payloads, 0, 0.0, BIG, BIG, BIG, max_items, keep_contexts=keep
    )
    assert i == len(payloads) and busy == b""
    took = [k for k in range(len(payloads)) if k not in set(slow)]
    assert batch.requests == len(took) == len(batch.contexts)
    assert taken == len(batch)
    return dict(zip(took, batch.contexts))


def parse_request_context(payload: bytes, max_items: int) -> dict | None:
    """merchant_id and terminal_id as parse_request reads them; None for neither."""
    context = proto.parse_request(payload, max_items).context or {}
    return {k: context[k] for k in proto.CONTEXT_KEYS if k in context} or None


def check_contexts(payloads: list[bytes], max_items: int) -> dict:
    got = frames_contexts(payloads, max_items)
    for k, context in got.items():
        assert context == parse_request_context(payloads[k], max_items), payloads[k].hex()
        assert context is None or all(type(v) is str for v in context.values())
    assert set(frames_contexts(payloads, max_items, keep=False).values()) <= {None}
    return got


@settings(SETTINGS, max_examples=200)
@given(reqs=st.lists(requests(canonical=True) | requests(canonical=False), max_size=4))
def test_add_frames_contexts_are_parse_requests(reqs):
    payloads = [payload for payload, *_ in reqs]
    got = check_contexts(payloads, 300)
    for k, (_, _, expected, deepest) in enumerate(reqs):
        if deepest < MAX_DEPTH:
            merchant, terminal = expected[3:]
            want = {"merchant_id": merchant, "terminal_id": terminal}
            assert got[k] == ({key: v for key, v in want.items() if v is not None} or None)


@settings(SETTINGS, max_examples=300)
@given(cases=st.lists(mutated() | random_maps(), min_size=1, max_size=4))
def test_add_frames_contexts_of_adversarial_payloads(cases):
    """Whatever the fast path takes of damaged or odd requests, it reads the context
    parse_request reads (the payloads it declines go to the Python path)."""
    check_contexts([payload for payload, _ in cases], 300)


def test_add_frames_contexts_each_shape():
    shapes = [
        None,
        {},
        {"merchant_id": "m-1"},
        {"terminal_id": "t:2"},
        {"merchant_id": "M" * 64, "terminal_id": "a.b_c-d:9"},
    ]
    payloads = []
    for k, context in enumerate(shapes):
        fields = {} if context is None else {"context": context}
        payloads.append(payload_of(proto.request(k, "verify", presentation=b"p", **fields)))
        payloads.append(payload_of(proto.request(100 + k, "ping")))  # the Python path's
    payloads.append(_pack({"id": 9, "type": "verify", "presentation": b"p", "context": None}))
    got = check_contexts(payloads, 4)
    assert [got[k] for k in range(0, 2 * len(shapes), 2)] == [None, None, *shapes[2:]]
    assert got[len(payloads) - 1] is None
    assert set(got) == {*range(0, 2 * len(shapes), 2), len(payloads) - 1}


# --- (c) encoders ----------------------------------------------------------------------

TIMES = [0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1]
times = st.one_of(st.sampled_from(TIMES), st.integers(0, 2**64 - 1))
ascii_ids = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=32)
claims_tuples = st.tuples(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=9, max_size=9),
    st.text("0123456789", min_size=6, max_size=6),
    st.one_of(ascii_ids, st.sampled_from(["x" * 31, "x" * 32, "y"])),
    st.one_of(ascii_ids, st.sampled_from(["i" * 31, "i" * 32, "j"])),
    st.binary(min_size=16, max_size=16),
    st.integers(1, 4),
    times,
    times,
)
reasons = st.one_of(
    st.none(),
    st.just(""),
    st.text(max_size=40),
    st.builds(
        lambda n, tail: "r" * n + tail,
        st.sampled_from([30, 31, 32, 254, 255, 256, 65534, 65535, 65536, 70000]),
        st.sampled_from(["", "é", "€", "😀"]),
    ),
)
verdicts = st.one_of(st.integers(0, 15), st.sampled_from([127, 128, 255]))
results = st.tuples(verdicts, reasons, st.none() | claims_tuples, st.booleans())


def claims_dict(t):
    if t is None:
        return None
    card, region, channel, issuer, serial, purpose, at_ms, until = t
    return {
        "card_number": card,
        "region": region,
        "channel": channel,
        "issuer": issuer,
        "serial": serial,
        "purpose": _PURPOSES[purpose],
        "presented_at_ms": at_ms,
        "valid_until": until,
    }


def ref_verify(rid, verdict, reason, claims, repeat=False):
    return proto.verify_response(rid, verdict, reason, claims_dict(claims), repeat)


def ref_batch(rid, rs):
    return proto.batch_response(
        rid, [proto.result_map(v, r, claims_dict(c), *rest) for v, r, c, *rest in rs]
    )


@SETTINGS
@given(rid=ids, result=results)
def test_verify_response(rid, result):
    want = ref_verify(rid, *result)
    got = _core._wire_encode_verify_response(rid, *result)
    assert got == want
    assert 0 <= _core._wire_response_bound([result], False) - len(want) <= 8  # id at 9 bytes
    assert _core._wire_encode_verify_response(rid, *result, cap=len(want) - 1) is None
    assert _core._wire_encode_verify_response(rid, *result, cap=len(want)) == want


@settings(SETTINGS, max_examples=150)
@given(
    rid=ids,
    distinct=st.lists(results, min_size=1, max_size=8),
    n=st.one_of(st.integers(1, 300), st.sampled_from([15, 16, 17, 255, 256])),
)
def test_batch_response(rid, distinct, n):
    rs = [distinct[i % len(distinct)] for i in range(n)]
    want = ref_batch(rid, rs)
    assert _core._wire_encode_batch_response(rid, rs) == want
    assert 0 <= _core._wire_response_bound(rs, True) - len(want) <= 8
    assert _core._wire_encode_batch_response(rid, rs, cap=len(want) - 1) is None
    # Verify responses of the same results back to back.
    assert _core._wire_response_bound(rs, False) == sum(len(ref_verify(2**64 - 1, *r)) for r in rs)


def test_batch_response_sizes():
    result = (0, None, ("G12345678", "440300", "app", "iss", bytes(16), 3, 1, 2))
    for n in (0, 1, 15, 16, 65535, 65536):
        rs = [result] * n
        assert _core._wire_encode_batch_response(n, rs) == ref_batch(n, rs), n


def test_example_responses_of_the_protocol_document():
    claims = ("G12345678", "440300", "hrss-app", "iss-440000-01", bytes(range(16)), 2)
    frame = _core._wire_encode_verify_response(7, 0, None, (*claims, 1780000000000, 1798761600))
    assert frame[:4].hex() == "000000be" and len(frame) == 194
    assert _core._wire_encode_verify_response(8, 12, None, None).hex() == (
        "0000000e82a2696408a776657264696374" + "0c"
    )


def test_unencodable_purpose():
    for purpose in (0, 5, 255):
        claims = ("G12345678", "440300", "app", "iss", bytes(16), purpose, 1, 2)
        assert _core._wire_encode_verify_response(1, 0, None, claims) is None
        assert _core._wire_encode_batch_response(1, [(0, None, claims)]) is None


def test_many_verify_responses():
    claims = ("G12345678", "440300", "app", "iss", bytes(16), 4, 10**12, 2**31)
    rids = [0, 1, 128, 2**40, 2**64 - 1]
    want = b"".join(ref_verify(r, 0, "note", claims) for r in rids)
    assert _core._wire_encode_verify_responses(rids, 0, "note", claims) == want
