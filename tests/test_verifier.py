"""The verification pipeline: every verdict class, precedence, batching invariance."""

from __future__ import annotations

import dataclasses
import random

import pytest

from engine.formats.trustlist import Status
from engine.replay import MemoryReplayCache
from engine.revocation.source import SetRevocation
from engine.tools.pki import issuer_key_id
from engine.tools.scenarios import BUILDABLE, HOME
from engine.verdicts import Verdict
from engine.verifier import Verifier, VerifierConfig


@pytest.fixture
def verifier(pki, scenarios):
    revocation = SetRevocation(scenarios.revoked_cards, scenarios.revoked_serials)
    return Verifier(pki.trust_list, revocation=revocation, replay=MemoryReplayCache())


def first_verdict(outcome: Verdict) -> Verdict:
    # A REPLAYED presentation is fresh the first time it is seen.
    return Verdict.OK if outcome is Verdict.REPLAYED else outcome


@pytest.mark.parametrize("outcome", BUILDABLE, ids=lambda v: v.name)
def test_each_verdict_class_alone(verifier, scenarios, now_s, outcome):
    now_ms = now_s * 1000
    (data,) = scenarios.presentations([outcome], now_ms)
    (result,) = verifier.verify([data], now_ms)
    assert result.verdict is first_verdict(outcome), result.reason
    if outcome is Verdict.REPLAYED:
        (again,) = verifier.verify([data], now_ms + 10)
        assert again.verdict is Verdict.REPLAYED
    if result.verdict is Verdict.OK:
        assert result.claims["region"] == "440300"
        assert result.claims["issuer"] == issuer_key_id(HOME)
        assert result.claims["purpose"] == "payment"
        assert "citizen_digest" not in result.claims
    else:
        assert result.claims is None


def test_revocation_data_stale_fails_closed_then_open(pki, scenarios, now_s):
    now_ms = now_s * 1000
    old = SetRevocation(scenarios.revoked_cards, created_at=now_s - 2 * 86400)
    closed = Verifier(pki.trust_list, revocation=old)
    batch = scenarios.presentations([Verdict.OK, Verdict.CARD_REVOKED, Verdict.EXPIRED], now_ms)
    verdicts = [r.verdict for r in closed.verify(batch, now_ms)]
    assert verdicts == [
        Verdict.REVOCATION_DATA_STALE,
        Verdict.REVOCATION_DATA_STALE,
        Verdict.EXPIRED,
    ]
    open_cfg = VerifierConfig(revocation_fail_open=True)
    opened = Verifier(pki.trust_list, revocation=old, config=open_cfg)
    batch = scenarios.presentations([Verdict.OK, Verdict.CARD_REVOKED], now_ms)
    assert [r.verdict for r in opened.verify(batch, now_ms)] == [Verdict.OK, Verdict.CARD_REVOKED]
    unlimited = Verifier(
        pki.trust_list, revocation=old, config=VerifierConfig(max_revocation_age_s=None)
    )
    batch = scenarios.presentations([Verdict.OK], now_ms)
    assert unlimited.verify(batch, now_ms)[0].verdict is Verdict.OK


def test_full_replay_cache_answers_busy_not_ok(pki, scenarios, now_s):
    now_ms = now_s * 1000
    v = Verifier(pki.trust_list, replay=MemoryReplayCache(capacity=2))
    batch = scenarios.presentations([Verdict.OK] * 3, now_ms)
    assert [r.verdict for r in v.verify(batch, now_ms)] == [Verdict.OK, Verdict.OK, Verdict.BUSY]


def test_issuer_status_and_window(pki, scenarios, now_s):
    now_ms = now_s * 1000
    trust = pki.trust_list
    key_id = issuer_key_id(HOME)
    key = trust.issuers[key_id]
    for changed in (
        dataclasses.replace(key, status=Status.SUSPENDED),
        dataclasses.replace(key, status=Status.REVOKED),
        dataclasses.replace(key, not_after=now_s - 1),
        dataclasses.replace(key, not_before=now_s + 1),
    ):
        t = dataclasses.replace(trust, issuers={**trust.issuers, key_id: changed})
        (result,) = Verifier(t).verify(scenarios.presentations([Verdict.OK], now_ms), now_ms)
        assert result.verdict is Verdict.ISSUER_INVALID


def test_freshness_boundaries(pki, scenarios, now_s):
    cfg = VerifierConfig(freshness_ms=60_000, skew_ms=5_000)
    v = Verifier(pki.trust_list, config=cfg)
    t = now_s * 1000
    (data,) = scenarios.presentations([Verdict.OK], t)
    cases = {
        t + 65_000: Verdict.OK,  # oldest accepted: W + K after it was made
        t + 65_001: Verdict.STALE,
        t - 5_000: Verdict.OK,  # made K in the verifier's future
        t - 5_001: Verdict.STALE,
    }
    for now_ms, want in cases.items():
        v.replay = MemoryReplayCache()
        assert v.verify([data], now_ms)[0].verdict is want, now_ms - t


def test_precedence_of_combined_failures(pki, scenarios, now_s):
    """When several verdicts apply, the lowest-numbered wins."""
    now_ms = now_s * 1000
    revocation = SetRevocation(scenarios.revoked_cards, scenarios.revoked_serials)
    v = Verifier(pki.trust_list, revocation=revocation)
    # Expired credential with a bad holder signature: the signature fails first.
    (expired,) = scenarios.presentations([Verdict.EXPIRED], now_ms)
    tampered = expired[:-1] + bytes([expired[-1] ^ 1])
    assert v.verify([tampered], now_ms)[0].verdict is Verdict.BAD_HOLDER_SIGNATURE
    # Revoked card presented stale: STALE (10) before CARD_REVOKED (12).
    (revoked,) = scenarios.presentations([Verdict.CARD_REVOKED], now_ms - 120_000)
    assert v.verify([revoked], now_ms)[0].verdict is Verdict.STALE
    # Expired and stale: EXPIRED (9) before STALE (10).
    (expired_old,) = scenarios.presentations([Verdict.EXPIRED], now_ms - 120_000)
    assert v.verify([expired_old], now_ms)[0].verdict is Verdict.EXPIRED
    # Revoked channel on an expired credential: CHANNEL_REVOKED (7) first.
    t = pki.trust_list
    trust = dataclasses.replace(
        t,
        channels={
            **t.channels,
            "hrss-app": dataclasses.replace(t.channels["hrss-app"], status=Status.REVOKED),
        },
    )
    (expired,) = scenarios.presentations([Verdict.EXPIRED], now_ms)
    assert Verifier(trust).verify([expired], now_ms)[0].verdict is Verdict.CHANNEL_REVOKED


def test_rejected_presentations_do_not_use_their_nonce(pki, scenarios, now_s):
    now_ms = now_s * 1000
    (data,) = scenarios.presentations([Verdict.OK], now_ms)
    old = SetRevocation(created_at=now_s - 2 * 86400)
    v = Verifier(pki.trust_list, revocation=old)
    assert v.verify([data], now_ms)[0].verdict is Verdict.REVOCATION_DATA_STALE
    v.revocation = SetRevocation()  # fresh data arrives (hot swap)
    assert v.verify([data], now_ms)[0].verdict is Verdict.OK
    assert v.verify([data], now_ms)[0].verdict is Verdict.REPLAYED


def test_verdicts_do_not_depend_on_batching(pki, scenarios, now_s):
    now_ms = now_s * 1000
    revocation = SetRevocation(scenarios.revoked_cards, scenarios.revoked_serials)
    outcomes = [v for v in BUILDABLE if v is not Verdict.REPLAYED] * 5
    batch = scenarios.presentations(outcomes, now_ms)
    # Distinct presentations only: REPLAYED depends on order by design (tested below).
    rng = random.Random(7)

    def run(groups):
        v = Verifier(pki.trust_list, revocation=revocation, replay=MemoryReplayCache())
        out = {}
        for group in groups:
            for data, r in zip(group, v.verify(group, now_ms)):
                out[data] = (r.verdict, r.reason, r.claims)
        return out

    alone = run([[d] for d in batch])
    assert [alone[d][0] for d in batch] == [first_verdict(o) for o in outcomes]
    assert run([batch]) == alone
    for _ in range(5):
        shuffled = batch[:]
        rng.shuffle(shuffled)
        cuts = sorted(rng.sample(range(1, len(batch)), 4))
        groups = [shuffled[a:b] for a, b in zip([0, *cuts], [*cuts, len(batch)])]
        assert run(groups) == alone


def test_duplicates_in_one_batch_are_replays_in_order(verifier, scenarios, now_s):
    now_ms = now_s * 1000
    a, b = scenarios.presentations([Verdict.OK, Verdict.OK], now_ms)
    verdicts = [r.verdict for r in verifier.verify([a, b, a, a, b], now_ms)]
    assert verdicts == [
        Verdict.OK,
        Verdict.OK,
        Verdict.REPLAYED,
        Verdict.REPLAYED,
        Verdict.REPLAYED,
    ]


def test_trust_list_swap_applies_to_the_next_batch(pki, scenarios, now_s):
    now_ms = now_s * 1000
    v = Verifier(pki.trust_list)
    t = pki.trust_list
    revoked = dataclasses.replace(
        t,
        sequence=t.sequence + 1,
        channels={
            **t.channels,
            "hrss-app": dataclasses.replace(t.channels["hrss-app"], status=Status.REVOKED),
        },
    )
    a, b = scenarios.presentations([Verdict.OK, Verdict.OK], now_ms)
    assert v.verify([a], now_ms)[0].verdict is Verdict.OK
    v.trust_list = revoked
    assert v.verify([b], now_ms)[0].verdict is Verdict.CHANNEL_REVOKED


def test_empty_batch(verifier):
    assert verifier.verify([], 0) == []


def test_invalid_config():
    with pytest.raises(ValueError):
        VerifierConfig(freshness_ms=0)


def test_server_encoding_matches_the_python_results(pki, scenarios, now_s):
    """The server's path (requests in a batch, answers encoded in C) gives byte for byte
    the responses the protocol module builds from Verifier.verify's results."""
    from engine import _core
    from engine.wire import protocol as proto

    now_ms = now_s * 1000
    outcomes = [v for v in BUILDABLE if v is not Verdict.REPLAYED] * 2
    batch_items = scenarios.presentations(outcomes, now_ms)
    singles = scenarios.presentations(outcomes, now_ms)
    revocation = SetRevocation(scenarios.revoked_cards, scenarios.revoked_serials)

    def verifier():
        return Verifier(pki.trust_list, revocation=revocation, replay=MemoryReplayCache())

    batch = _core.RequestBatch()
    for k, p in enumerate(singles):
        batch.add_request(k % 3, 1000 + k, False, [p], 0.0)
    batch.add_request(1, 7, True, batch_items, 0.0)
    reasons = verifier().run(batch, now_ms)
    frames = {
        slot: data
        for slot, data, _ in batch.encode({i: r.encode() for i, r in reasons.items() if r})
    }

    results = verifier().verify(singles + batch_items, now_ms)
    expected = {0: b"", 1: b"", 2: b""}
    for k, r in enumerate(results[: len(singles)]):
        expected[k % 3] += proto.verify_response(1000 + k, r.verdict, r.reason, r.claims)
    expected[1] += proto.batch_response(7, [proto.result_map(*r) for r in results[len(singles) :]])
    assert frames == expected


def test_batch_accessors_check_their_index():
    from engine import _core

    batch = _core.VerifyBatch([b"not a presentation"])
    for accessor in (batch.fields, batch.detail, batch.verdict_of, batch.presentation):
        with pytest.raises(IndexError):
            accessor(1)
        with pytest.raises(IndexError):
            accessor(-1)
    with pytest.raises(IndexError):
        _core.RequestBatch().request_verdicts(0)  # no request recorded yet
