"""The revocation store behind the verification pipeline: revoked cards and credentials,
deltas, and the maximum age of revocation data (fail closed, or open when configured)."""

from __future__ import annotations

import time

import pytest
from revocation_helpers import delta, snapshot

from engine.formats.credentials import Credential
from engine.replay import MemoryReplayCache
from engine.revocation.source import SetRevocation
from engine.revocation.store import RevocationStore
from engine.tools import pki
from engine.tools.scenarios import BUILDABLE, Scenarios
from engine.verdicts import Verdict
from engine.verifier import Verifier, VerifierConfig

OUTCOMES = [v for v in BUILDABLE if v is not Verdict.REPLAYED]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipeline")
    opened = pki.init(d / "pki")
    now_s = int(time.time())
    return d, opened, Scenarios(opened, now_s), now_s


def verdicts(world, store, outcomes, *, config=None, now_s=None) -> list[Verdict]:
    _, opened, scen, issued_s = world
    now_ms = 1000 * (issued_s if now_s is None else now_s)
    verifier = Verifier(
        opened.trust_list,
        revocation=store,
        replay=MemoryReplayCache(),
        config=config,
        clock=lambda: now_ms / 1000,
    )
    return [r.verdict for r in verifier.verify(scen.presentations(outcomes, now_ms), now_ms)]


def test_every_outcome_with_the_mapped_store(world, tmp_path):
    _, _, scen, now_s = world
    snap = snapshot(
        tmp_path,
        "s",
        sorted(scen.revoked_cards),
        sorted(scen.revoked_serials),
        created_at=now_s - 60,
    )
    store = RevocationStore(snap)
    assert verdicts(world, store, OUTCOMES) == OUTCOMES
    # The same answers as the in-memory reference implementation.
    reference = SetRevocation(scen.revoked_cards, scen.revoked_serials, created_at=now_s - 60)
    assert verdicts(world, reference, OUTCOMES) == OUTCOMES


def test_deltas_reach_the_verdicts(world, tmp_path):
    _, _, scen, now_s = world
    snap = snapshot(
        tmp_path, "s", sorted(scen.revoked_cards), sorted(scen.revoked_serials), sequence=5
    )
    ok_serials = [Credential.decode(c).serial for c in scen.credentials(Verdict.OK)]
    d = delta(
        tmp_path,
        "d",
        snap,
        add=((), ok_serials),  # the OK holders' credentials are now revoked
        remove=(sorted(scen.revoked_cards), ()),  # and the revoked cards reinstated
        created_at=now_s,
    )
    store = RevocationStore(snap, [d])
    got = verdicts(world, store, [Verdict.OK, Verdict.CARD_REVOKED, Verdict.CREDENTIAL_REVOKED])
    assert got == [Verdict.CREDENTIAL_REVOKED, Verdict.OK, Verdict.CREDENTIAL_REVOKED]


def test_stale_revocation_data_fails_closed_unless_configured_open(world, tmp_path):
    _, _, scen, now_s = world
    day = 86_400
    snap = snapshot(
        tmp_path,
        "s",
        sorted(scen.revoked_cards),
        sorted(scen.revoked_serials),
        created_at=now_s - 2 * day,
    )
    store = RevocationStore(snap)
    batch = [Verdict.OK, Verdict.CARD_REVOKED, Verdict.CREDENTIAL_REVOKED, Verdict.EXPIRED]
    stale = Verdict.REVOCATION_DATA_STALE
    # Default: at most a day old, fail closed (verdicts that come first still win).
    assert verdicts(world, store, batch) == [stale, stale, stale, Verdict.EXPIRED]
    # A longer limit, or fail-open, serves the old data.
    assert verdicts(world, store, batch, config=VerifierConfig(max_revocation_age_s=3 * day)) == (
        batch
    )
    fail_open = VerifierConfig(revocation_fail_open=True)
    assert verdicts(world, store, batch, config=fail_open) == batch
    # A fresh (even empty) delta brings the data up to date: no longer stale.
    beat = delta(tmp_path, "beat", snap, created_at=now_s - 10)
    store.reload(deltas=[beat])
    assert store.age < day
    assert verdicts(world, store, batch) == batch
