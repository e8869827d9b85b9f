"""Verdict codes: the one stable answer the engine gives for each presentation.

The numeric values are part of the wire protocol and never change meaning; new codes
are only ever added.  Precedence is the numeric order: when several verdicts apply
to one presentation, the lowest-numbered one is returned (OK only when none apply).
The order follows what can be trusted: a presentation that cannot be parsed says
nothing; one whose signatures fail says nothing about the card; only an authentic
presentation can be expired, revoked or replayed.
"""

from __future__ import annotations

import enum
from typing import Any, NamedTuple


class Verdict(enum.IntEnum):
    OK = 0
    MALFORMED = 1
    UNKNOWN_ISSUER = 2
    BAD_ISSUER_SIGNATURE = 3
    BAD_HOLDER_SIGNATURE = 4
    ISSUER_INVALID = 5
    UNKNOWN_CHANNEL = 6
    CHANNEL_REVOKED = 7
    NOT_YET_VALID = 8
    EXPIRED = 9
    STALE = 10
    REVOCATION_DATA_STALE = 11
    CARD_REVOKED = 12
    CREDENTIAL_REVOKED = 13
    REPLAYED = 14
    BUSY = 15

    @property
    def meaning(self) -> str:
        return MEANINGS[self]


class Result(NamedTuple):
    """One presentation's answer, the same whether the verifier ran in-process
    (engine.verifier) or a server sent it (engine.wire.client)."""

    verdict: Verdict
    reason: str | None = None  # what exactly failed; never personal data
    claims: dict[str, Any] | None = None  # on OK only
    repeat: bool = False  # OK again for a safe retry of an accepted presentation

    @classmethod
    def from_map(cls, m: dict[str, Any]) -> Result:
        """From a result map of the protocol (docs/PROTOCOL.md)."""
        return cls(Verdict(m["verdict"]), m.get("reason"), m.get("claims"), m.get("repeat") is True)


MEANINGS: dict[Verdict, str] = {
    Verdict.OK: "authentic, fresh, unused, and the card and credential are in good standing",
    Verdict.MALFORMED: "not a well-formed presentation (the reason says which field)",
    Verdict.UNKNOWN_ISSUER: "the credential names an issuer key that is not in the trust list",
    Verdict.BAD_ISSUER_SIGNATURE: "the issuer's signature over the credential does not verify",
    Verdict.BAD_HOLDER_SIGNATURE: "the holder's signature over the presentation does not verify",
    Verdict.ISSUER_INVALID: "the issuer key is suspended or revoked, outside its validity "
    "window, or issued for a region outside its province",
    Verdict.UNKNOWN_CHANNEL: "the credential's channel is not in the trust list",
    Verdict.CHANNEL_REVOKED: "the credential's channel is suspended or revoked",
    Verdict.NOT_YET_VALID: "the credential's validity window has not started",
    Verdict.EXPIRED: "the credential's validity window has ended",
    Verdict.STALE: "the presentation's timestamp is outside the freshness window",
    Verdict.REVOCATION_DATA_STALE: "the revocation data is older than allowed, or became "
    "unreadable; the engine fails closed",
    Verdict.CARD_REVOKED: "the card is revoked (lost, cancelled or replaced)",
    Verdict.CREDENTIAL_REVOKED: "this credential (one app instance) is revoked",
    Verdict.REPLAYED: "this presentation's nonce was already used",
    Verdict.BUSY: "the server is overloaded or draining; retry later (never a verdict on the card)",
}

assert set(MEANINGS) == set(Verdict)
