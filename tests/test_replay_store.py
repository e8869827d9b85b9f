"""The replay stage through its seam (engine.replay.ReplayStore): any store gives the
verdicts the in-process native table gives, keys and expiries are the documented
ones, and a store that cannot answer fails closed."""

from __future__ import annotations

import random

import numpy as np
import pytest
from replay_model import model_states

from engine import replay
from engine.formats.credentials import Presentation
from engine.replay import MemoryReplayCache
from engine.revocation.source import SetRevocation
from engine.tools.scenarios import BUILDABLE
from engine.verdicts import Verdict
from engine.verifier import Verifier, VerifierConfig


class DictReplayStore:
    """A Python reading of the ReplayStore contract, for unit tests only (the native
    table is the real in-process store)."""

    def __init__(self, capacity: int = 1 << 30):
        self.capacity = capacity
        self.model: dict[bytes, int] = {}
        self.calls: list[tuple[list[bytes], list[int], int]] = []

    def check_and_record(self, keys, expires_ms, now_ms):
        rows = [bytes(k) for k in np.asarray(keys, dtype=np.uint8)]
        expires = [int(e) for e in expires_ms]
        self.calls.append((rows, expires, now_ms))
        return model_states(self.model, rows, expires, now_ms, self.capacity)


class Delegating:
    """The native table seen only through the ReplayStore interface, so the verifier
    takes the generic path (keys out as an array, states back) instead of its
    all-native one."""

    def __init__(self, table: MemoryReplayCache):
        self.table = table

    def check_and_record(self, keys, expires_ms, now_ms):
        return self.table.check_and_record(keys, expires_ms, now_ms)


class Unavailable:
    def check_and_record(self, keys, expires_ms, now_ms):
        return [replay.UNAVAILABLE] * len(keys)


def _batches(scenarios, now_ms, rng):
    """Batches with repeats inside each and across them, among every other verdict."""
    pool = scenarios.presentations([Verdict.OK] * 12 + list(BUILDABLE), now_ms)
    return [[rng.choice(pool) for _ in range(rng.randrange(1, 30))] for _ in range(8)]


def _run(pki, scenarios, store, batches, now_ms):
    revocation = SetRevocation(scenarios.revoked_cards, scenarios.revoked_serials)
    v = Verifier(pki.trust_list, revocation=revocation, replay=store)
    return [[(r.verdict, r.reason) for r in v.verify(b, now_ms + k)] for k, b in enumerate(batches)]


@pytest.mark.parametrize("seed", range(4))
def test_any_store_gives_the_native_tables_verdicts(pki, scenarios, now_s, seed):
    now_ms = now_s * 1000
    batches = _batches(scenarios, now_ms, random.Random(seed))
    native = _run(pki, scenarios, MemoryReplayCache(), batches, now_ms)
    assert any(v is Verdict.REPLAYED for b in native for v, _ in b)
    assert _run(pki, scenarios, Delegating(MemoryReplayCache()), batches, now_ms) == native
    assert _run(pki, scenarios, DictReplayStore(), batches, now_ms) == native


def test_a_full_store_answers_busy_through_either_path(pki, scenarios, now_s):
    now_ms = now_s * 1000
    batches = _batches(scenarios, now_ms, random.Random(11))
    native = _run(pki, scenarios, MemoryReplayCache(capacity=5), batches, now_ms)
    assert any(v is Verdict.BUSY for b in native for v, _ in b)
    assert (
        _run(pki, scenarios, Delegating(MemoryReplayCache(capacity=5)), batches, now_ms) == native
    )
    assert _run(pki, scenarios, DictReplayStore(capacity=5), batches, now_ms) == native


def test_the_store_is_asked_for_serial_and_nonce_until_the_freshness_horizon(pki, scenarios, now_s):
    now_ms = now_s * 1000
    cfg = VerifierConfig(freshness_ms=30_000, skew_ms=2_000)
    store = DictReplayStore()
    ok = scenarios.presentations([Verdict.OK] * 3, now_ms)
    failed = scenarios.presentations([Verdict.EXPIRED, Verdict.BAD_HOLDER_SIGNATURE], now_ms)
    Verifier(pki.trust_list, replay=store, config=cfg).verify(
        [ok[0], *failed, ok[1], ok[2]], now_ms
    )
    ((keys, expires, asked_at),) = store.calls
    decoded = [Presentation.decode(d) for d in ok]
    # Only the items that passed every other check, in order.
    assert keys == [p.credential.serial + p.nonce for p in decoded]
    assert expires == [p.timestamp_ms + 32_000 for p in decoded]
    assert asked_at == now_ms


def test_an_unavailable_store_fails_closed(pki, scenarios, now_s):
    now_ms = now_s * 1000
    batch = scenarios.presentations([Verdict.OK, Verdict.EXPIRED, Verdict.OK], now_ms)
    results = Verifier(pki.trust_list, replay=Unavailable()).verify(batch, now_ms)
    assert [r.verdict for r in results] == [Verdict.BUSY, Verdict.EXPIRED, Verdict.BUSY]
    assert results[0].reason == results[2].reason == "replay_store_unavailable"
    # BUSY is no verdict on the card: the same presentations pass where a store answers.
    again = Verifier(pki.trust_list, replay=MemoryReplayCache()).verify(batch, now_ms)
    assert [r.verdict for r in again] == [Verdict.OK, Verdict.EXPIRED, Verdict.OK]


def test_a_store_that_answers_the_wrong_number_of_states_is_an_error(pki, scenarios, now_s):
    class Short:
        def check_and_record(self, keys, expires_ms, now_ms):
            return [replay.FRESH] * (len(keys) - 1)

    now_ms = now_s * 1000
    batch = scenarios.presentations([Verdict.OK, Verdict.OK], now_ms)
    with pytest.raises(ValueError, match="1 states for 2 keys"):
        Verifier(pki.trust_list, replay=Short()).verify(batch, now_ms)


def test_unknown_states_are_refused(pki, scenarios, now_s):
    class Odd:
        def check_and_record(self, keys, expires_ms, now_ms):
            return [7] * len(keys)

    now_ms = now_s * 1000
    batch = scenarios.presentations([Verdict.OK], now_ms)
    with pytest.raises(ValueError):
        Verifier(pki.trust_list, replay=Odd()).verify(batch, now_ms)
