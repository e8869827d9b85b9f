"""pytest-benchmark: the verification pipeline, N presentations verified in process."""

from __future__ import annotations

import time

import pytest

from engine.replay import MemoryReplayCache
from engine.revocation.source import SetRevocation
from engine.tools.scenarios import BUILDABLE
from engine.verdicts import Verdict
from engine.verifier import Verifier, VerifierConfig

SIZES = [1, 64, 512]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("threads", [1, None], ids=["1-thread", "all-cores"])
def test_verify_valid(benchmark, pki, scenarios, quick, size, threads):
    size = min(size, 64) if quick else size
    now_ms = int(time.time() * 1000)
    batch = scenarios.presentations([Verdict.OK] * size, now_ms)
    verifier = Verifier(pki.trust_list, config=VerifierConfig(threads=threads))

    def run():
        verifier.replay = MemoryReplayCache()  # the same batch again must not be a replay
        return verifier.verify(batch, now_ms)

    results = benchmark.pedantic(run, rounds=3 if quick else 20, warmup_rounds=1)
    assert all(r.verdict is Verdict.OK for r in results)
    benchmark.extra_info["presentations"] = size


def test_verify_every_verdict_mix(benchmark, pki, scenarios, quick):
    now_ms = int(time.time() * 1000)
    outcomes = list(BUILDABLE) * (2 if quick else 20)
    batch = scenarios.presentations(outcomes, now_ms)
    revocation = SetRevocation(scenarios.revoked_cards, scenarios.revoked_serials)
    verifier = Verifier(pki.trust_list, revocation=revocation)

    def run():
        verifier.replay = MemoryReplayCache()
        return verifier.verify(batch, now_ms)

    results = benchmark.pedantic(run, rounds=3 if quick else 20, warmup_rounds=1)
    assert len(results) == len(batch)
    benchmark.extra_info["presentations"] = len(batch)
