"""The benchmark baseline server gives the engine's verdicts (a fair comparison needs that)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

from bench.baseline_server import BaselineVerifier
from engine.replay import MemoryReplayCache
from engine.revocation.source import SetRevocation
from engine.tools.scenarios import BUILDABLE
from engine.verdicts import Verdict
from engine.verifier import Verifier
from engine.wire.client import Client


def test_same_verdicts_as_the_engine(pki, scenarios):
    now_ms = int(time.time() * 1000)
    batch = scenarios.presentations(list(BUILDABLE) * 3, now_ms)
    batch += batch[:5]  # replays
    cards = {c.decode() for c in scenarios.revoked_cards}
    baseline = BaselineVerifier(pki.trust_list, cards, scenarios.revoked_serials)
    engine = Verifier(
        pki.trust_list,
        revocation=SetRevocation(scenarios.revoked_cards, scenarios.revoked_serials),
        replay=MemoryReplayCache(),
    )
    expected = [r.verdict for r in engine.verify(batch, now_ms)]
    got = [Verdict(baseline.verify(p, now_ms)["verdict"]) for p in batch]
    assert got == expected
    assert Verdict.REPLAYED in got and Verdict.CARD_REVOKED in got


def test_serves_the_protocol(pki, scenarios, tmp_path):
    card = sorted(scenarios.revoked_cards)[0].decode()
    serial = sorted(scenarios.revoked_serials)[0]
    revoked = tmp_path / "revoked.txt"
    revoked.write_text(f"card {card}\ncredential {serial.hex()}\n")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.baseline_server",
            "--pki",
            str(pki.directory),
            "--port",
            "0",
            "--revoked",
            str(revoked),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(json.loads(proc.stderr.readline())["address"].rsplit(":", 1)[1])

        async def go():
            async with await Client.connect("127.0.0.1", port) as client:
                assert await client.ping()
                batch = scenarios.presentations(
                    [Verdict.OK, Verdict.EXPIRED], int(time.time() * 1000)
                )
                results = await client.verify_batch(batch)
                assert [r.verdict for r in results] == [Verdict.OK, Verdict.EXPIRED]
                assert (await client.verify(batch[0])).verdict is Verdict.REPLAYED
                # The load generator's pre-flight question, answered from the same file.
                answer = await client.revocation_check([card, "X00000000"], [bytes(16), serial])
                assert answer["cards"] == [True, False]
                assert answer["credentials"] == [False, True]

        asyncio.run(asyncio.wait_for(go(), 60))
    finally:
        proc.terminate()
        proc.wait(30)
