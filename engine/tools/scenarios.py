"""Presentations built to draw each verdict: for the demo, the tests and load generation.

``Scenarios`` issues one credential per outcome from a PKI directory (it needs the
issuer keys) and then makes any number of presentations of each outcome, in native
batches.  Outcomes that depend on the verifier's state rather than on the
presentation itself (revocation, replay) come with what the verifier must be given:
``revoked_cards`` / ``revoked_serials`` for the revocation data, and REPLAYED
presentations are sent twice by the caller (the second copy draws REPLAYED).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import nacl.signing

from engine.formats.credentials import Credential, Purpose
from engine.tools.holder import HolderKeys, present_batch
from engine.tools.issuance import card_number, citizen_digest, citizen_id
from engine.tools.pki import Pki, issuer_key_id
from engine.verdicts import Verdict

# Outcomes a presentation can be built for (REVOCATION_DATA_STALE and BUSY depend only on
# the verifier's state, not on the presentation).
BUILDABLE: tuple[Verdict, ...] = (
    Verdict.OK,
    Verdict.MALFORMED,
    Verdict.UNKNOWN_ISSUER,
    Verdict.BAD_ISSUER_SIGNATURE,
    Verdict.BAD_HOLDER_SIGNATURE,
    Verdict.ISSUER_INVALID,
    Verdict.UNKNOWN_CHANNEL,
    Verdict.CHANNEL_REVOKED,
    Verdict.NOT_YET_VALID,
    Verdict.EXPIRED,
    Verdict.STALE,
    Verdict.CARD_REVOKED,
    Verdict.CREDENTIAL_REVOKED,
    Verdict.REPLAYED,
)

HOME = "440000"  # Guangdong: the province the scenario credentials come from
DAY = 86_400


class Scenarios:
    """Credentials for every outcome, issued at ``now_s`` from the PKI in ``pki``."""

    def __init__(
        self,
        pki: Pki,
        now_s: int,
        *,
        holders_per_outcome: int = 4,
        freshness_ms: int = 60_000,
    ):
        self.pki = pki
        self.now_s = now_s
        self.freshness_ms = freshness_ms
        home_key = pki.issuer_signing_key(issuer_key_id(HOME))
        rogue = nacl.signing.SigningKey.generate()
        digest_key = pki.digest_key()
        self._credentials: dict[Verdict, list[bytes]] = {}
        seeds: list[bytes] = []
        self.revoked_cards: set[bytes] = set()
        self.revoked_serials: set[bytes] = set()
        card_index = int.from_bytes(os.urandom(4), "big") % (10**8)
        for verdict in BUILDABLE:
            creds = []
            for _ in range(holders_per_outcome):
                seed = os.urandom(32)
                card_index += 1
                cred = Credential(
                    issuer_key_id=issuer_key_id(HOME),
                    card_number=card_number(card_index),
                    citizen_digest=citizen_digest(
                        digest_key, citizen_id("440100", "19800101", card_index)
                    ),
                    region="440300",
                    channel="hrss-app",
                    serial=os.urandom(16),
                    not_before=now_s - DAY,
                    not_after=now_s + 365 * DAY,
                    holder_key=bytes(nacl.signing.SigningKey(seed).verify_key),
                )
                if verdict is Verdict.CARD_REVOKED:
                    self.revoked_cards.add(cred.card_number.encode())
                elif verdict is Verdict.CREDENTIAL_REVOKED:
                    self.revoked_serials.add(cred.serial)
                cred = shape_credential(verdict, cred, now_s)
                signer = rogue if cred.issuer_key_id == ROGUE_ISSUER else home_key
                cred = spoil_credential(verdict, cred.signed(signer))
                creds.append(cred.encode())
                seeds.append(seed)
            self._credentials[verdict] = creds
        self._all_credentials = [c for v in BUILDABLE for c in self._credentials[v]]
        self._keys = HolderKeys(seeds)
        self._first = {}
        k = 0
        for v in BUILDABLE:
            self._first[v] = k
            k += holders_per_outcome
        self.holders_per_outcome = holders_per_outcome

    def credentials(self, verdict: Verdict) -> list[bytes]:
        return self._credentials[verdict]

    def presentations(
        self, outcomes: Sequence[Verdict], now_ms: int, *, purpose: Purpose = Purpose.PAYMENT
    ) -> list[bytes]:
        """One presentation per requested outcome, made at ``now_ms``.

        A REPLAYED entry yields a presentation that is valid the first time; send it a
        second time to draw REPLAYED.
        """
        indices = []
        stamps = []
        for j, verdict in enumerate(outcomes):
            indices.append(self._first[verdict] + j % self.holders_per_outcome)
            stamps.append(presentation_time_ms(verdict, now_ms, self.freshness_ms))
        out = present_batch(
            self._all_credentials, self._keys, indices, stamps, [int(purpose)] * len(indices)
        )
        return [spoil_presentation(v, p) for v, p in zip(outcomes, out)]


# How a credential or presentation is made to draw each verdict: shared with the load
# generator (loadgen.corpus), which applies them to a whole issued population.

ROGUE_ISSUER = "iss-rogue-01"  # signs with a key that is not in any trust list
UNLISTED_CHANNEL = "unlisted-app"
REVOKED_CHANNEL = "legacy-wallet"  # revoked in the demo trust list (engine.tools.pki)


def shape_credential(verdict: Verdict, cred: Credential, now_s: int) -> Credential:
    """``cred`` with the fields changed that make its presentations draw ``verdict``.

    The result must be (re)signed: by a key outside the trust list when its issuer is
    ``ROGUE_ISSUER``, otherwise by its issuer; then ``spoil_credential``.  Revocation
    outcomes need no change here: the caller revokes the card or the serial.
    """
    if verdict is Verdict.UNKNOWN_ISSUER:
        return dataclasses.replace(cred, issuer_key_id=ROGUE_ISSUER)
    if verdict is Verdict.ISSUER_INVALID:  # a region outside the issuer's province
        return dataclasses.replace(cred, region="440300" if cred.region[:2] == "11" else "110100")
    if verdict is Verdict.UNKNOWN_CHANNEL:
        return dataclasses.replace(cred, channel=UNLISTED_CHANNEL)
    if verdict is Verdict.CHANNEL_REVOKED:
        return dataclasses.replace(cred, channel=REVOKED_CHANNEL)
    if verdict is Verdict.NOT_YET_VALID:
        start = now_s + 30 * DAY
        return dataclasses.replace(cred, not_before=start, not_after=max(cred.not_after, start))
    if verdict is Verdict.EXPIRED:
        return dataclasses.replace(cred, not_before=now_s - 400 * DAY, not_after=now_s - DAY)
    return cred


def spoil_credential(verdict: Verdict, cred: Credential) -> Credential:
    """A signed credential, with its issuer signature broken for BAD_ISSUER_SIGNATURE."""
    if verdict is Verdict.BAD_ISSUER_SIGNATURE:
        return dataclasses.replace(cred, signature=_flip(cred.signature, 10))
    return cred


def presentation_time_ms(verdict: Verdict, now_ms: int, freshness_ms: int) -> int:
    """The timestamp a presentation made at ``now_ms`` carries (STALE: far outside the window)."""
    return now_ms - 2 * freshness_ms if verdict is Verdict.STALE else now_ms


def spoil_presentation(verdict: Verdict, data: bytes) -> bytes:
    """A signed presentation, truncated for MALFORMED or its signature broken for
    BAD_HOLDER_SIGNATURE."""
    if verdict is Verdict.MALFORMED:
        return data[: len(data) // 2]
    if verdict is Verdict.BAD_HOLDER_SIGNATURE:
        return data[:-1] + bytes([data[-1] ^ 0x01])
    return data


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x40]) + data[index + 1 :]
