"""The native batches: VerifyBatch (the pipeline's) and RequestBatch (the server's, a
VerifyBatch that also knows the requests its presentations came in)."""

from __future__ import annotations

import pytest

from engine import _core
from engine.replay import MemoryReplayCache
from engine.revocation.source import SetRevocation
from engine.tools.scenarios import BUILDABLE
from engine.verdicts import Verdict
from engine.verifier import Verifier
from engine.wire import protocol as proto

SERVER_SIDE = (
    "add_request",
    "add_frames",
    "arrivals",
    "request_verdicts",
    "encode",
    "contexts",
    "requests",
    "first_arrival",
)
BIG = 1 << 40


@pytest.fixture
def verifier(pki, scenarios):
    revocation = SetRevocation(scenarios.revoked_cards, scenarios.revoked_serials)
    return Verifier(pki.trust_list, revocation=revocation, replay=MemoryReplayCache())


def test_the_server_side_is_request_batch_only():
    assert issubclass(_core.RequestBatch, _core.VerifyBatch)
    for name in SERVER_SIDE:
        assert not hasattr(_core.VerifyBatch, name), name
        assert hasattr(_core.RequestBatch, name), name
    with pytest.raises(TypeError):
        _core.RequestBatch([b"x"])  # its presentations come with their requests


def test_fields_are_named(verifier, scenarios, now_s):
    now_ms = now_s * 1000
    data = scenarios.presentations([Verdict.OK, Verdict.MALFORMED], now_ms)
    batch = _core.VerifyBatch(data)
    verifier.run(batch, now_ms)
    f = batch.fields(0)
    assert isinstance(f, _core.PresentationFields) and isinstance(f, tuple)
    key_id, card, region, channel, serial, nonce, timestamp_ms, purpose, not_after = f
    assert (f.issuer_key_id, f.card_number, f.region, f.channel) == (key_id, card, region, channel)
    assert (f.serial, f.nonce, f.timestamp_ms, f.purpose) == (serial, nonce, timestamp_ms, purpose)
    assert f.not_after == not_after and f == tuple(f)
    assert len(f.serial) == len(f.nonce) == 16 and f.region == "440300"
    assert batch.fields(1) is None  # malformed


def test_accessors_check_the_index_and_the_stage():
    batch = _core.VerifyBatch([b"not a presentation"])
    assert batch.verdicts().tolist() == [0]  # "not failed yet", not stale memory
    for accessor in (batch.fields, batch.detail):
        with pytest.raises(IndexError):
            accessor(1)
        with pytest.raises(RuntimeError, match="not been checked"):
            accessor(0)  # nothing parsed to read yet
    with pytest.raises(RuntimeError, match="not been checked"):
        batch.candidates()
    requests = _core.RequestBatch()
    for r in (0, -1):
        with pytest.raises(IndexError):
            requests.request_verdicts(r)
    with pytest.raises(RuntimeError, match="not been checked"):
        requests.encode({})


def test_a_rejected_request_leaves_no_trace():
    batch = _core.RequestBatch()
    with pytest.raises(TypeError):
        batch.add_request(0, 1, True, [b"a", "not bytes"], 0.0)
    with pytest.raises(TypeError):
        batch.add_frames(0, [b"\x80", bytearray(b"\x80")], 0, 0.0, BIG, BIG, BIG, 4)
    assert (len(batch), batch.requests, batch.contexts) == (0, 0, [])


def test_requests_from_both_paths_encoded_like_the_protocol(pki, scenarios, now_s):
    """Requests taken in C (add_frames, their contexts kept) and in Python
    (add_request) in one batch: per connection, the frames protocol.py builds from
    Verifier.verify's results, and each request's verdicts and context."""
    now_ms = now_s * 1000
    outcomes = [v for v in BUILDABLE if v is not Verdict.REPLAYED]
    singles = scenarios.presentations(outcomes, now_ms)
    items = scenarios.presentations(outcomes, now_ms)
    revocation = SetRevocation(scenarios.revoked_cards, scenarios.revoked_serials)

    def verifier():
        return Verifier(pki.trust_list, revocation=revocation, replay=MemoryReplayCache())

    batch = _core.RequestBatch()
    ctx = {"merchant_id": "m-1"}
    frames = [
        proto.request(k, "verify", presentation=p, context=ctx)[4:] for k, p in enumerate(singles)
    ]
    i, taken, slow, busy, _, _ = batch.add_frames(
        2, frames, 0, 1.5, BIG, BIG, BIG, 256, keep_contexts=True
    )
    assert (i, taken, slow, busy) == (len(frames), len(singles), [], b"")
    batch.add_request(1, 7, True, items, 2.5, {"terminal_id": "t-9"})
    assert batch.first_arrival == 1.5 and batch.arrivals().tolist() == [1.5] * len(singles) + [2.5]
    assert batch.contexts == [ctx] * len(singles) + [{"terminal_id": "t-9"}]

    reasons = verifier().run(batch, now_ms)
    got = {
        slot: data for slot, data, _ in batch.encode({i: r.encode() for i, r in reasons.items()})
    }

    results = verifier().verify(singles + items, now_ms)
    expected = {2: b"", 1: b""}
    for k, r in enumerate(results[: len(singles)]):
        expected[2] += proto.verify_response(k, r.verdict, r.reason, r.claims)
    expected[1] += proto.batch_response(7, [proto.result_map(*r) for r in results[len(singles) :]])
    assert got == expected
    verdicts = [int(r.verdict) for r in results]
    assert batch.request_verdicts(0) == (2, 0, verdicts[:1])
    assert batch.request_verdicts(batch.requests - 1) == (1, 7, verdicts[len(singles) :])
