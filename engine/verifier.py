"""The verification pipeline: a batch of presentations in, one verdict each out.

    verifier = Verifier(trust_list, revocation=store, replay=MemoryReplayCache())
    results = verifier.verify(presentations, now_ms)

Stages, each over the whole batch in the native core (engine._core.VerifyBatch): parse
every presentation strictly, look up its issuer, verify both signatures of every
presentation in one batch call, and make the issuer, channel, validity and freshness
checks; then the revocation look-ups, one call per id kind; then the replay check
last, so that only a presentation that is otherwise OK uses up its nonce.  The server
runs the same stages (``Verifier.run``) and encodes the answers in C; ``verify`` turns
them into Python results.  The verdict is the
lowest-numbered one that applies (engine.verdicts), and it never depends on what else
is in the batch: every check looks at one item at a time, and the replay step takes
items in order, exactly as one-by-one calls would.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from engine import _core
from engine import replay as replay_states
from engine.formats.credentials import Presentation, Purpose
from engine.formats.encoding import FormatError
from engine.formats.trustlist import TrustList
from engine.replay import MemoryReplayCache, ReplayStore
from engine.revocation.source import CARD, CREDENTIAL, RevocationSource
from engine.verdicts import Result, Verdict

DEFAULT_FRESHNESS_MS = 60_000
DEFAULT_SKEW_MS = 5_000
DEFAULT_MAX_REVOCATION_AGE_S = 86_400.0


@dataclasses.dataclass(frozen=True)
class VerifierConfig:
    freshness_ms: int = DEFAULT_FRESHNESS_MS  # how long a presentation stays usable
    skew_ms: int = DEFAULT_SKEW_MS  # clock difference tolerated either way
    # Revocation data older than this fails closed with REVOCATION_DATA_STALE, unless
    # revocation_fail_open is set (then the old data is still used).  None: no limit.
    max_revocation_age_s: float | None = DEFAULT_MAX_REVOCATION_AGE_S
    revocation_fail_open: bool = False
    threads: int | None = None  # signature verification threads; None: every core

    def __post_init__(self) -> None:
        if self.freshness_ms <= 0 or self.skew_ms < 0:
            raise ValueError("freshness_ms must be positive and skew_ms not negative")


# Detail codes of engine/native/presentation.h, for reason texts.
_DETAIL_ISSUER_STATUS, _DETAIL_ISSUER_WINDOW, _DETAIL_ISSUER_REGION, _DETAIL_CHANNEL_STATUS = (
    1,
    2,
    3,
    4,
)
_PURPOSES = {int(p): p.name.lower() for p in Purpose}
_VERDICTS = list(Verdict)
# Verdicts whose answer carries a reason text.
_WITH_REASON = np.array(
    [
        Verdict.MALFORMED,
        Verdict.UNKNOWN_ISSUER,
        Verdict.ISSUER_INVALID,
        Verdict.UNKNOWN_CHANNEL,
        Verdict.CHANNEL_REVOKED,
        Verdict.STALE,
        Verdict.REVOCATION_DATA_STALE,
        Verdict.REPLAYED,
        Verdict.BUSY,
    ],
    dtype=np.uint8,
)


def trust_table(trust: TrustList) -> _core.TrustTable:
    return _core.TrustTable(
        [
            (k.key_id, k.region, k.public_key, k.not_before, k.not_after, int(k.status))
            for k in trust.issuers.values()
        ],
        [(c.channel_id, int(c.status)) for c in trust.channels.values()],
    )


class Verifier:
    """Holds the current trust list, revocation source and replay store.

    ``trust_list`` and ``revocation`` may be replaced at any time (hot reload); a
    batch already running keeps the references it started with.
    """

    def __init__(
        self,
        trust_list: TrustList,
        *,
        revocation: RevocationSource | None = None,
        replay: ReplayStore | None = None,
        config: VerifierConfig | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.trust_list = trust_list
        self.revocation = revocation
        self.replay = MemoryReplayCache() if replay is None else replay
        self.config = config or VerifierConfig()
        self.clock = clock

    @property
    def trust_list(self) -> TrustList:
        return self._trust[0]

    @trust_list.setter
    def trust_list(self, trust: TrustList) -> None:
        # One attribute, so a batch reads the list and its table as one consistent pair.
        self._trust = (trust, trust_table(trust))

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def verify(
        self,
        presentations: Sequence[bytes],
        now_ms: int | None = None,
        *,
        party: bytes | None = None,
    ) -> list[Result]:
        """``party``: who is asking (relying_party()), for a store with safe retries."""
        batch = _core.VerifyBatch(presentations)
        parties = None if party is None else [party] * len(presentations)
        reasons = self.run(batch, now_ms, parties=parties)
        repeats = set(batch.repeats().tolist())
        results = []
        for i, code in enumerate(batch.verdicts().tolist()):
            if code == 0:
                results.append(Result(Verdict.OK, None, _claims(batch.fields(i)), i in repeats))
            else:
                results.append(Result(_VERDICTS[code], reasons.get(i)))
        return results

    def run(
        self,
        batch: _core.VerifyBatch,
        now_ms: int | None = None,
        *,
        parties: Sequence[bytes] | None = None,
    ) -> dict[int, str]:
        """Every stage over ``batch``; returns the reason texts of the items that have one.

        ``parties[i]``: the relying party that sent item i (``relying_party``); with a
        replay store that does safe retries, the same party sending the same accepted
        presentation again gets OK again, marked repeat."""
        now_ms = self.now_ms() if now_ms is None else now_ms
        (trust, table), revocation, cfg = self._trust, self.revocation, self.config
        batch.check(table, now_ms, cfg.freshness_ms, cfg.skew_ms, cfg.threads)
        stale_reason = None
        if revocation is not None:
            age = now_ms / 1000 - revocation.created_at
            limit = cfg.max_revocation_age_s
            # Signed data carries its own expiry, which holds whatever the age limit says.
            expires_at = getattr(revocation, "expires_at", None)
            idx, cards, serials = batch.candidates()
            distrusted = getattr(revocation, "distrusted", None)
            if limit is not None and age > limit:
                stale_reason = f"revocation data {age:.0f} s old"
            elif expires_at is not None and now_ms > expires_at * 1000:
                stale_reason = f"revocation data expired {now_ms / 1000 - expires_at:.0f} s ago"
            if cfg.revocation_fail_open:
                stale_reason = None  # the operator's choice: old data rather than none
            if distrusted is not None:
                stale_reason = distrusted  # data the trust list disowns: never used
            if stale_reason is not None:
                batch.set_verdict(idx, Verdict.REVOCATION_DATA_STALE)
            elif len(idx):
                try:
                    revoked = revocation.contains(CARD, cards)
                    batch.set_verdict(idx[revoked], Verdict.CARD_REVOKED)
                    revoked = revocation.contains(CREDENTIAL, serials)
                    batch.set_verdict(idx[revoked], Verdict.CREDENTIAL_REVOKED)
                except _core.RevocationDataUnreadable:
                    # Data that cannot be read says nothing about a card: fail closed
                    # (whatever revocation_fail_open says) until a reload replaces it.
                    stale_reason = "revocation data unreadable"
                    batch.set_verdict(idx, Verdict.REVOCATION_DATA_STALE)
        unavailable, lost = self._replay_stage(
            batch, now_ms, cfg.freshness_ms + cfg.skew_ms, parties
        )
        reasons: dict[int, str] = {}
        for i in batch.with_verdicts(_WITH_REASON):
            code = batch.verdict_of(i)
            if code == Verdict.REVOCATION_DATA_STALE:
                assert stale_reason is not None  # only the revocation stage above gives it
                reasons[i] = stale_reason
            elif code == Verdict.BUSY:
                reasons[i] = "replay_store_unavailable" if i in unavailable else "replay cache full"
            elif code == Verdict.REPLAYED:
                if i in lost:
                    reasons[i] = "made before the replay store lost its data: present a new one"
            else:
                reason = _reason(
                    code, batch.detail(i), batch.fields(i), batch.presentation(i), trust, now_ms
                )
                if reason is not None:
                    reasons[i] = reason
        return reasons

    def _replay_stage(
        self,
        batch: _core.VerifyBatch,
        now_ms: int,
        horizon_ms: int,
        parties: Sequence[bytes] | None,
    ) -> tuple[set[int], set[int]]:
        """The last stage, through the ReplayStore seam; returns the items the store
        could not answer for (BUSY, "replay_store_unavailable") and those it refused
        under the lost-store rule (REPLAYED)."""
        store = self.replay
        if isinstance(store, _core.ReplayTable):
            # The in-process table: keys, check and verdicts without leaving C.
            batch.replay(store, now_ms, horizon_ms)
            return set(), set()
        idx, keys, expires = batch.replay_candidates(horizon_ms)
        if not len(idx):
            return set(), set()
        tags = None
        if parties is not None and getattr(store, "safe_retries", False):
            tags = [
                _retry_tag(parties[i], batch.presentation(i)) if parties[i] else None
                for i in idx.tolist()
            ]
        # Tags only to a store that does safe retries: any other keeps its 3 arguments.
        answer = (
            store.check_and_record(keys, expires, now_ms)
            if tags is None
            else store.check_and_record(keys, expires, now_ms, tags)
        )
        states = np.asarray(answer, dtype=np.uint8)
        if states.shape != idx.shape:
            raise ValueError(f"the replay store answered {states.size} states for {idx.size} keys")
        batch.set_replay_states(idx, states)
        return (
            set(idx[states == replay_states.UNAVAILABLE].tolist()),
            set(idx[states == replay_states.LOST].tolist()),
        )


def relying_party(
    identity: bytes = b"", merchant_id: str | None = None, terminal_id: str | None = None
) -> bytes:
    """Who a verify request came from, for safe retries: the network's mutual-TLS
    identity (a certificate digest; empty without one) and the ids its context
    claims.  Length-prefixed, so no two different triples read the same; empty for an
    anonymous client (no certificate, no ids), which is never given a repeat."""
    parts = (identity, (merchant_id or "").encode(), (terminal_id or "").encode())
    if not any(parts):
        return b""
    return b"".join(len(p).to_bytes(2, "big") + p for p in parts)


def _retry_tag(party: bytes, presentation: bytes) -> bytes | None:
    """What the store keeps with a nonce: 16 bytes binding the relying party to the
    exact presentation it got OK for (a different presentation under the same nonce,
    or the same one from anyone else, is REPLAYED); None for an anonymous party."""
    if not party:
        return None
    return hashlib.blake2b(party + presentation, digest_size=16).digest()


def _claims(f: _core.PresentationFields | None) -> dict[str, Any]:
    """The non-sensitive claims a relying party receives on OK (no citizen digest)."""
    assert f is not None  # an OK item was well-formed
    return {
        "card_number": f.card_number,
        "region": f.region,
        "channel": f.channel,
        "issuer": f.issuer_key_id,
        "serial": f.serial,
        "purpose": _PURPOSES[f.purpose],
        "presented_at_ms": f.timestamp_ms,
        "valid_until": f.not_after,
    }


def _reason(
    code: int,
    detail: int,
    f: _core.PresentationFields | None,
    data: bytes,
    trust: TrustList,
    now_ms: int,
) -> str | None:
    """What exactly failed, for logs and support (never personal data)."""
    if code == Verdict.MALFORMED:
        # The reference decoder says which field; it rejects whatever the core rejects.
        try:
            Presentation.decode(data)
        except FormatError as e:
            return str(e)
        return "presentation: rejected by the native parser"
    assert f is not None  # well-formed: the core read its fields
    if code == Verdict.UNKNOWN_ISSUER:
        return f"issuer key {f.issuer_key_id!r}"
    if code == Verdict.ISSUER_INVALID:
        if detail == _DETAIL_ISSUER_STATUS:
            return f"issuer key {trust.issuers[f.issuer_key_id].status.name}"
        if detail == _DETAIL_ISSUER_WINDOW:
            return "issuer key outside its validity"
        return f"region {f.region} outside issuer's province"
    if code == Verdict.UNKNOWN_CHANNEL:
        return f"channel {f.channel!r}"
    if code == Verdict.CHANNEL_REVOKED:
        return f"channel {trust.channels[f.channel].status.name}"
    if code == Verdict.STALE:
        return f"timestamp {f.timestamp_ms - now_ms:+d} ms from now"
    return None
