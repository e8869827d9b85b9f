"""The verification pipeline: a batch of presentations in, one verdict each out.

    verifier = Verifier(trust_list, revocation=store, replay=MemoryReplayCache())
    results = verifier.verify(presentations, now_ms)

Steps, each over the whole batch: decode and validate structure; look up the issuer
in the trust list; verify both signatures of every presentation in one native batch
call; issuer, channel, validity and freshness checks; revocation look-ups in batches;
the replay check last, so that only a presentation that is otherwise OK uses up its
nonce.  The verdict is the lowest-numbered one that applies (engine.verdicts), and it
never depends on what else is in the batch: each step looks at one item at a time,
and the replay step processes items in order, exactly as one-by-one calls would.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

from engine import replay as replay_mod
from engine.credentials import Presentation
from engine.encoding import FormatError
from engine.replay import MemoryReplayCache, ReplayStore
from engine.revocation_source import CARD, CREDENTIAL, RevocationSource
from engine.sigverify import verify_batch
from engine.trustlist import Status, TrustList
from engine.verdicts import Verdict

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

    def __post_init__(self):
        if self.freshness_ms <= 0 or self.skew_ms < 0:
            raise ValueError("freshness_ms must be positive and skew_ms not negative")


class Result(NamedTuple):
    verdict: Verdict
    reason: str | None = None  # what exactly failed; never personal data
    claims: dict | None = None  # on OK only


def claims_of(pres: Presentation) -> dict:
    """The non-sensitive claims a relying party receives on OK (no citizen digest)."""
    cred = pres.credential
    return {
        "card_number": cred.card_number,
        "region": cred.region,
        "channel": cred.channel,
        "issuer": cred.issuer_key_id,
        "serial": cred.serial,
        "purpose": pres.purpose.name.lower(),
        "presented_at_ms": pres.timestamp_ms,
        "valid_until": cred.not_after,
    }


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

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def verify(self, presentations: Sequence[bytes], now_ms: int | None = None) -> list[Result]:
        now_ms = self.now_ms() if now_ms is None else now_ms
        trust, revocation, cfg = self.trust_list, self.revocation, self.config
        n = len(presentations)
        results: list[Result | None] = [None] * n

        # 1. Structure and issuer look-up.
        parsed: list[tuple[int, Presentation]] = []
        msgs: list[bytes] = []
        sigs: list[bytes] = []
        pks: list[bytes] = []
        issuers = trust.issuers
        for i, data in enumerate(presentations):
            try:
                pres, pres_body, cred_body = Presentation.decode_parts(data)
            except FormatError as e:
                results[i] = Result(Verdict.MALFORMED, str(e))
                continue
            cred = pres.credential
            issuer = issuers.get(cred.issuer_key_id)
            if issuer is None:
                results[i] = Result(Verdict.UNKNOWN_ISSUER, f"issuer key {cred.issuer_key_id!r}")
                continue
            parsed.append((i, pres))
            msgs += (cred_body, pres_body)
            sigs += (cred.signature, pres.signature)
            pks += (issuer.public_key, cred.holder_key)

        # 2. Both signatures of every presentation, one native call.
        ok = verify_batch(msgs, sigs, pks, threads=cfg.threads) if msgs else ()

        # 3. Trust, validity and freshness.
        candidates: list[tuple[int, Presentation]] = []
        now_s = now_ms // 1000
        channels = trust.channels
        for j, (i, pres) in enumerate(parsed):
            cred = pres.credential
            if not ok[2 * j]:
                results[i] = Result(Verdict.BAD_ISSUER_SIGNATURE)
                continue
            if not ok[2 * j + 1]:
                results[i] = Result(Verdict.BAD_HOLDER_SIGNATURE)
                continue
            issuer = issuers[cred.issuer_key_id]
            channel = channels.get(cred.channel)
            if issuer.status is not Status.ACTIVE:
                results[i] = Result(Verdict.ISSUER_INVALID, f"issuer key {issuer.status.name}")
            elif not issuer.not_before <= now_s <= issuer.not_after:
                results[i] = Result(Verdict.ISSUER_INVALID, "issuer key outside its validity")
            elif not issuer.covers_region(cred.region):
                results[i] = Result(
                    Verdict.ISSUER_INVALID, f"region {cred.region} outside issuer's province"
                )
            elif channel is None:
                results[i] = Result(Verdict.UNKNOWN_CHANNEL, f"channel {cred.channel!r}")
            elif channel.status is not Status.ACTIVE:
                results[i] = Result(Verdict.CHANNEL_REVOKED, f"channel {channel.status.name}")
            elif now_s < cred.not_before:
                results[i] = Result(Verdict.NOT_YET_VALID)
            elif now_s > cred.not_after:
                results[i] = Result(Verdict.EXPIRED)
            elif not (
                now_ms - cfg.freshness_ms - cfg.skew_ms <= pres.timestamp_ms <= now_ms + cfg.skew_ms
            ):
                results[i] = Result(
                    Verdict.STALE, f"timestamp {pres.timestamp_ms - now_ms:+d} ms from now"
                )
            else:
                candidates.append((i, pres))

        # 4. Revocation, batched per id kind.
        if candidates and revocation is not None:
            age = now_ms / 1000 - revocation.created_at
            limit = cfg.max_revocation_age_s
            if limit is not None and age > limit and not cfg.revocation_fail_open:
                for i, _ in candidates:
                    results[i] = Result(
                        Verdict.REVOCATION_DATA_STALE, f"revocation data {age:.0f} s old"
                    )
                candidates = []
            else:
                cards = revocation.contains(
                    CARD, [p.credential.card_number.encode() for _, p in candidates]
                )
                creds = revocation.contains(
                    CREDENTIAL, [p.credential.serial for _, p in candidates]
                )
                kept = []
                for j, (i, pres) in enumerate(candidates):
                    if cards[j]:
                        results[i] = Result(Verdict.CARD_REVOKED)
                    elif creds[j]:
                        results[i] = Result(Verdict.CREDENTIAL_REVOKED)
                    else:
                        kept.append((i, pres))
                candidates = kept

        # 5. Replay, in batch order; only otherwise-OK presentations use their nonce.
        if candidates:
            horizon = cfg.freshness_ms + cfg.skew_ms
            states = self.replay.check_and_record(
                [p.credential.serial + p.nonce for _, p in candidates],
                [p.timestamp_ms + horizon for _, p in candidates],
                now_ms,
            )
            for (i, pres), state in zip(candidates, states):
                if state == replay_mod.FRESH:
                    results[i] = Result(Verdict.OK, None, claims_of(pres))
                elif state == replay_mod.REPLAYED:
                    results[i] = Result(Verdict.REPLAYED)
                else:
                    results[i] = Result(Verdict.BUSY, "replay cache full")
        return results  # type: ignore[return-value]
