"""Audit logging on the fast path: with ``log.audit`` on, verify and verify_batch
requests are still parsed in C, and each audit line carries the context the client
sent (or none), exactly as the Python parser reads it."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from engine.server import batcher, logs
from engine.verdicts import Verdict
from engine.wire import protocol as proto
from engine.wire.client import Client

CONTEXTS = [
    {"merchant_id": "M-4403-0001", "terminal_id": "T:17"},
    {"merchant_id": "m.only"},
    {"terminal_id": "t_only-9"},
    None,
]


@pytest.fixture
def audit_lines(caplog):
    logs.setup("info")
    logger = logging.getLogger(logs.LOGGER)
    logger.propagate = True
    with caplog.at_level(logging.INFO, logger=logs.LOGGER):
        yield lambda: [r for r in caplog.records if r.getMessage() == "verified"]
    logger.propagate = False


def test_audit_contexts_come_from_the_c_parser(start_server, scenarios, audit_lines, monkeypatch):
    python_parsed = []
    real_parse = proto.parse_request

    def spy(payload, max_items):
        req = real_parse(payload, max_items)
        python_parsed.append(req.type)
        return req

    monkeypatch.setattr(batcher.proto, "parse_request", spy)
    srv = start_server(log__audit=True)
    now = int(time.time() * 1000)
    singles = scenarios.presentations([Verdict.OK] * len(CONTEXTS), now)
    batches = [scenarios.presentations([Verdict.OK, Verdict.EXPIRED], now) for _ in CONTEXTS]

    async def go():
        async with await Client.connect("127.0.0.1", srv.port) as client:
            for pres, ctx in zip(singles, CONTEXTS):
                assert (await client.verify(pres, context=ctx)).verdict is Verdict.OK
            for batch, ctx in zip(batches, CONTEXTS):
                await client.verify_batch(batch, context=ctx)
            assert await client.ping()

    asyncio.run(go())
    srv.stop()  # every audit line is written before the server has drained
    assert python_parsed == ["ping"]  # only the ping took the Python path
    lines = audit_lines()
    assert len(lines) == 2 * len(CONTEXTS)
    for line, ctx in zip(lines, CONTEXTS + CONTEXTS):
        ctx = ctx or {}
        assert line.fields["merchant_id"] == ctx.get("merchant_id")
        assert line.fields["terminal_id"] == ctx.get("terminal_id")
    assert [line.fields["verdicts"] for line in lines[len(CONTEXTS) :]] == [
        ["OK", "EXPIRED"]
    ] * len(CONTEXTS)
