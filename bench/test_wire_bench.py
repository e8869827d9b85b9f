"""pytest-benchmark: the native wire codec against engine/wire/protocol.py, per 1000 requests.

Each group times the Python reference and the native codec on the same input, so the
ratios column of the report compares them.  "native" goes through the test bindings
(Python objects in and out, as a caller in Python sees it); "native, C only" keeps the
work in C (the parser over the whole list; the encoder writing 1000 frames into one
buffer), which is what the server's batch orchestration pays.
"""

from __future__ import annotations

import time

import pytest

from engine import _core
from engine.verdicts import Verdict
from engine.verifier import _PURPOSES
from engine.wire import protocol as proto

N = 1000
MAX_ITEMS = 256
CLAIMS = (
    "G12345678",
    "440300",
    "hrss-app",
    "iss-440000-01",
    bytes(range(16)),
    2,
    1_780_000_000_000,
    1_798_761_600,
)
CLAIMS_DICT = {
    "card_number": CLAIMS[0],
    "region": CLAIMS[1],
    "channel": CLAIMS[2],
    "issuer": CLAIMS[3],
    "serial": CLAIMS[4],
    "purpose": _PURPOSES[CLAIMS[5]],
    "presented_at_ms": CLAIMS[6],
    "valid_until": CLAIMS[7],
}
CONTEXT = {"merchant_id": "merchant-0042", "terminal_id": "pos:17"}


@pytest.fixture(scope="module")
def verify_payloads(scenarios):
    batch = scenarios.presentations([Verdict.OK] * N, int(time.time() * 1000))
    return [
        proto.request(i, "verify", presentation=p, context=CONTEXT)[4:] for i, p in enumerate(batch)
    ]


@pytest.fixture(scope="module")
def batch_payloads(scenarios):
    batch = scenarios.presentations([Verdict.OK] * 16, int(time.time() * 1000))
    return [proto.request(i, "verify_batch", presentations=batch)[4:] for i in range(N)]


def _run(benchmark, quick, fn, *args):
    # Quick mode (CI): a smoke run, a few rounds.
    if quick:
        return benchmark.pedantic(fn, args, rounds=3, warmup_rounds=1)
    return benchmark(fn, *args)


def _parse_python(payloads):
    return [proto.parse_request(p, MAX_ITEMS) for p in payloads]


def _parse_native(payloads):
    return [_core._wire_parse_verify_request(p, MAX_ITEMS) for p in payloads]


PARSERS = {
    "python": _parse_python,
    "native": _parse_native,
    "native, C only": lambda payloads: _core._wire_parse_all(payloads, MAX_ITEMS),
}


@pytest.mark.parametrize("impl", list(PARSERS))
def test_parse_verify(benchmark, quick, verify_payloads, impl):
    benchmark.group = "wire: parse 1000 verify requests"
    out = _run(benchmark, quick, PARSERS[impl], verify_payloads)
    assert out == N if impl == "native, C only" else len(out) == N


@pytest.mark.parametrize("impl", list(PARSERS))
def test_parse_verify_batch(benchmark, quick, batch_payloads, impl):
    benchmark.group = "wire: parse 1000 verify_batch requests of 16"
    out = _run(benchmark, quick, PARSERS[impl], batch_payloads)
    assert out == N if impl == "native, C only" else len(out) == N


def _encoders(verdict, reason, claims):
    claims_dict = CLAIMS_DICT if claims else None
    return {
        "python": lambda: [
            proto.verify_response(i, verdict, reason, claims_dict) for i in range(N)
        ],
        "native": lambda: [
            _core._wire_encode_verify_response(i, verdict, reason, claims) for i in range(N)
        ],
        "native, C only": lambda: _core._wire_encode_verify_responses(
            list(range(N)), verdict, reason, claims
        ),
    }


@pytest.mark.parametrize("impl", ["python", "native", "native, C only"])
def test_encode_ok(benchmark, quick, impl):
    benchmark.group = "wire: encode 1000 verify responses, OK with claims"
    out = _run(benchmark, quick, _encoders(0, None, CLAIMS)[impl])
    assert out


@pytest.mark.parametrize("impl", ["python", "native", "native, C only"])
def test_encode_reject(benchmark, quick, impl):
    benchmark.group = "wire: encode 1000 verify responses, EXPIRED with a reason"
    out = _run(benchmark, quick, _encoders(9, "credential expired at 1798761600", None)[impl])
    assert out
