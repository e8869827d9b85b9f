"""Credentials (issued to one app instance of one card) and presentations (the QR payload).

Both are ``[body, signature]`` pairs: ``body`` is the canonical msgpack encoding of a
fixed-length array whose first element is a domain-separation tag, and the signature
is Ed25519 over exactly those body bytes (docs/FORMATS.md, sections 3 and 4).
"""

from __future__ import annotations

import dataclasses
import enum
import re

import nacl.signing

from engine.formats import encoding as enc

CREDENTIAL_TAG = "essc/credential"
PRESENTATION_TAG = "essc/presentation"
CREDENTIAL_VERSION = 1
PRESENTATION_VERSION = 1

CARD_NUMBER_RE = re.compile(r"[A-Z][0-9]{8}\Z")
REGION_RE = re.compile(r"[1-9][0-9]{5}\Z")

SERIAL_BYTES = 16
NONCE_BYTES = 16
DIGEST_BYTES = 32


class Purpose(enum.IntEnum):
    IDENTITY = 1
    MEDICAL_SETTLEMENT = 2
    PAYMENT = 3
    BENEFIT_COLLECTION = 4


def _signed_pair(data: bytes, field: str) -> tuple[bytes, bytes]:
    outer = enc.array(enc.unpack(data, field), field, 2)
    body = enc.binary(outer[0], f"{field}.body")
    signature = enc.binary(outer[1], f"{field}.signature", 64)
    return body, signature


@dataclasses.dataclass(frozen=True)
class Credential:
    issuer_key_id: str
    card_number: str
    citizen_digest: bytes
    region: str
    channel: str
    serial: bytes
    not_before: int  # unix seconds, inclusive
    not_after: int  # unix seconds, inclusive
    holder_key: bytes
    signature: bytes = b""  # issuer's, over body()

    def body(self) -> bytes:
        return enc.pack(
            [
                CREDENTIAL_TAG,
                CREDENTIAL_VERSION,
                self.issuer_key_id,
                self.card_number,
                self.citizen_digest,
                self.region,
                self.channel,
                self.serial,
                self.not_before,
                self.not_after,
                self.holder_key,
            ]
        )

    def encode(self) -> bytes:
        return enc.pack([self.body(), self.signature])

    def signed(self, issuer_key: nacl.signing.SigningKey) -> Credential:
        return dataclasses.replace(self, signature=issuer_key.sign(self.body()).signature)

    @classmethod
    def decode(cls, data: bytes, field: str = "credential") -> Credential:
        return cls.decode_with_body(data, field)[0]

    @classmethod
    def decode_with_body(cls, data: bytes, field: str = "credential") -> tuple[Credential, bytes]:
        """(credential, the body bytes its issuer signed)."""
        body, signature = _signed_pair(data, field)
        f = enc.array(enc.unpack(body, f"{field}.body"), f"{field}.body", 11)
        enc.tag(f[0], f"{field}.tag", CREDENTIAL_TAG)
        enc.version(f[1], f"{field}.version", CREDENTIAL_VERSION)
        cred = cls(
            issuer_key_id=enc.identifier(f[2], f"{field}.issuer_key_id"),
            card_number=enc.text(f[3], f"{field}.card_number", CARD_NUMBER_RE),
            citizen_digest=enc.binary(f[4], f"{field}.citizen_digest", DIGEST_BYTES),
            region=enc.text(f[5], f"{field}.region", REGION_RE),
            channel=enc.identifier(f[6], f"{field}.channel"),
            serial=enc.binary(f[7], f"{field}.serial", SERIAL_BYTES),
            not_before=enc.uint(f[8], f"{field}.not_before"),
            not_after=enc.uint(f[9], f"{field}.not_after"),
            holder_key=enc.binary(f[10], f"{field}.holder_key", 32),
            signature=signature,
        )
        if cred.not_after < cred.not_before:
            raise enc.FormatError(f"{field}.not_after", "earlier than not_before")
        return cred, body


@dataclasses.dataclass(frozen=True)
class Presentation:
    credential: Credential
    timestamp_ms: int  # unix milliseconds, when the holder's app made it
    nonce: bytes
    purpose: Purpose
    signature: bytes = b""  # holder's, over body()
    credential_bytes: bytes = b""  # the credential exactly as embedded

    def body(self) -> bytes:
        cred = self.credential_bytes or self.credential.encode()
        return enc.pack(
            [
                PRESENTATION_TAG,
                PRESENTATION_VERSION,
                cred,
                self.timestamp_ms,
                self.nonce,
                int(self.purpose),
            ]
        )

    def encode(self) -> bytes:
        return enc.pack([self.body(), self.signature])

    def signed(self, holder_key: nacl.signing.SigningKey) -> Presentation:
        return dataclasses.replace(self, signature=holder_key.sign(self.body()).signature)

    @classmethod
    def decode(cls, data: bytes, field: str = "presentation") -> Presentation:
        return cls.decode_parts(data, field)[0]

    @classmethod
    def decode_parts(
        cls, data: bytes, field: str = "presentation"
    ) -> tuple[Presentation, bytes, bytes]:
        """(presentation, its signed body, the credential's signed body)."""
        body, signature = _signed_pair(data, field)
        f = enc.array(enc.unpack(body, f"{field}.body"), f"{field}.body", 6)
        enc.tag(f[0], f"{field}.tag", PRESENTATION_TAG)
        enc.version(f[1], f"{field}.version", PRESENTATION_VERSION)
        cred_bytes = enc.binary(f[2], f"{field}.credential")
        credential, cred_body = Credential.decode_with_body(cred_bytes, "credential")
        purpose_value = enc.uint(f[5], f"{field}.purpose")
        try:
            purpose = Purpose(purpose_value)
        except ValueError:
            raise enc.FormatError(f"{field}.purpose", f"unknown purpose {purpose_value}") from None
        pres = cls(
            credential=credential,
            timestamp_ms=enc.uint(f[3], f"{field}.timestamp_ms"),
            nonce=enc.binary(f[4], f"{field}.nonce", NONCE_BYTES),
            purpose=purpose,
            signature=signature,
            credential_bytes=cred_bytes,
        )
        return pres, body, cred_body
