"""pytest-benchmark: protocol framing, encode and decode of requests and responses."""

from __future__ import annotations

import time

from engine.verdicts import Verdict
from engine.wire import protocol as proto
from engine.wire.framing import FrameDecoder

N = 1000


def _presentations(scenarios, n):
    return scenarios.presentations([Verdict.OK] * n, int(time.time() * 1000))


def test_encode_requests(benchmark, scenarios):
    batch = _presentations(scenarios, N)
    frames = benchmark(
        lambda: [proto.request(i, "verify", presentation=p) for i, p in enumerate(batch)]
    )
    assert len(frames) == N


def test_decode_requests(benchmark, scenarios):
    batch = _presentations(scenarios, N)
    stream = b"".join(proto.request(i, "verify", presentation=p) for i, p in enumerate(batch))

    def run():
        payloads = FrameDecoder().feed(stream)
        return [proto.parse_request(p, 256) for p in payloads]

    requests = benchmark(run)
    assert [r.id for r in requests] == list(range(N))


def test_encode_responses(benchmark):
    claims = {
        "card_number": "G12345678",
        "region": "440300",
        "channel": "hrss-app",
        "issuer": "iss-440000-01",
        "serial": bytes(16),
        "purpose": "payment",
        "presented_at_ms": 1_780_000_000_000,
        "valid_until": 1_798_761_600,
    }
    frames = benchmark(lambda: [proto.verify_response(i, 0, None, claims) for i in range(N)])
    assert len(frames) == N


def test_decode_responses(benchmark):
    stream = b"".join(proto.verify_response(i, 12, None, None) for i in range(N))
    payloads = benchmark(lambda: FrameDecoder().feed(stream))
    assert len(payloads) == N
