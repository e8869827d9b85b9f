"""The trust list: issuer keys and authorised channels, signed by the national root key.

It carries a sequence number; ``TrustList.load`` verifies the root signature and
``TrustList.may_replace`` enforces that an older list never replaces a newer one
(docs/FORMATS.md, section 2).  Version 2 adds the revocation publisher keys: the keys
that sign revocation data (engine.revocation.manifest).  Version 1 lists (no publisher
keys) still decode; whether a node may serve with one is the server's decision
(``revocation.require_signature``).
"""

from __future__ import annotations

import dataclasses
import enum
import os
from typing import Any

import nacl.exceptions
import nacl.signing

from engine.errors import EsscError
from engine.formats import encoding as enc
from engine.formats.credentials import REGION_RE

TRUST_LIST_TAG = "essc/trust-list"
TRUST_LIST_VERSION = 2  # what this engine writes
TRUST_LIST_VERSIONS = (1, 2)  # what it reads: version 1 has no publisher keys


class Status(enum.IntEnum):
    ACTIVE = 0
    SUSPENDED = 1
    REVOKED = 2


class TrustListError(EsscError):
    """A trust list that cannot be used: names the file (if any) and the problem."""


@dataclasses.dataclass(frozen=True)
class IssuerKey:
    key_id: str
    region: str  # six-digit province-level code: the issuer may issue within its province
    public_key: bytes
    not_before: int  # unix seconds
    not_after: int
    status: Status = Status.ACTIVE

    def encode_fields(self) -> list[Any]:
        return [
            self.key_id,
            self.region,
            self.public_key,
            self.not_before,
            self.not_after,
            int(self.status),
        ]

    def covers_region(self, region: str) -> bool:
        # Province-level issuers: the first two digits name the province.
        return region[:2] == self.region[:2]


@dataclasses.dataclass(frozen=True)
class PublisherKey:
    """A key the national platform signs revocation data with (snapshots, deltas and
    the publication index)."""

    key_id: str
    public_key: bytes
    not_before: int  # unix seconds: data created outside the window is refused
    not_after: int
    status: Status = Status.ACTIVE

    def encode_fields(self) -> list[Any]:
        return [self.key_id, self.public_key, self.not_before, self.not_after, int(self.status)]

    def may_sign(self, created_at: int) -> bool:
        return self.status == Status.ACTIVE and self.not_before <= created_at <= self.not_after


@dataclasses.dataclass(frozen=True)
class Channel:
    channel_id: str
    name: str
    status: Status = Status.ACTIVE

    def encode_fields(self) -> list[Any]:
        return [self.channel_id, self.name, int(self.status)]


@dataclasses.dataclass(frozen=True)
class TrustList:
    sequence: int
    issued_at: int  # unix seconds
    issuers: dict[str, IssuerKey]
    channels: dict[str, Channel]
    publishers: dict[str, PublisherKey] = dataclasses.field(default_factory=dict)
    signature: bytes = b""
    encoded: bytes = dataclasses.field(default=b"", compare=False, repr=False)
    version: int = TRUST_LIST_VERSION

    def body(self) -> bytes:
        fields: list[Any] = [
            TRUST_LIST_TAG,
            self.version,
            self.sequence,
            self.issued_at,
            [k.encode_fields() for k in self.issuers.values()],
            [c.encode_fields() for c in self.channels.values()],
        ]
        if self.version >= 2:
            fields.append([p.encode_fields() for p in self.publishers.values()])
        elif self.publishers:
            raise ValueError("a version 1 trust list cannot hold publisher keys")
        return enc.pack(fields)

    def encode(self) -> bytes:
        return enc.pack([self.body(), self.signature])

    def signed(self, root_key: nacl.signing.SigningKey) -> TrustList:
        body = self.body()
        signature = root_key.sign(body).signature
        return dataclasses.replace(self, signature=signature, encoded=enc.pack([body, signature]))

    def may_replace(self, current: TrustList | None) -> bool:
        """A newer sequence replaces; the same sequence only with the same content."""
        if current is None:
            return True
        if self.sequence != current.sequence:
            return self.sequence > current.sequence
        return self.encode() == current.encode()

    @classmethod
    def decode(cls, data: bytes, root_public_key: bytes, field: str = "trust_list") -> TrustList:
        """Decode and verify against the pinned root key; FormatError or TrustListError."""
        body, signature = _outer(data, field)
        try:
            nacl.signing.VerifyKey(root_public_key).verify(body, signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
            raise TrustListError("the root signature does not verify") from None
        return cls._parse(data, body, signature, field)

    @classmethod
    def decode_unverified(cls, data: bytes, field: str = "trust_list") -> TrustList:
        """Decode without checking the root signature: for inspection tools only."""
        body, signature = _outer(data, field)
        return cls._parse(data, body, signature, field)

    @classmethod
    def _parse(cls, data: bytes, body: bytes, signature: bytes, field: str) -> TrustList:
        decoded = enc.unpack(body, f"{field}.body", max_bytes=enc.MAX_TRUST_LIST_BYTES)
        # The version decides the length, so it is read before the array is checked.
        if type(decoded) is not list or len(decoded) < 2:
            raise enc.FormatError(f"{field}.body", "expected an array of 6 or 7")
        enc.tag(decoded[0], f"{field}.tag", TRUST_LIST_TAG)
        version = _version(decoded[1], f"{field}.version")
        f = enc.array(decoded, f"{field}.body", 6 if version == 1 else 7)
        issuers: dict[str, IssuerKey] = {}
        for i, item in enumerate(_list(f[4], f"{field}.issuers")):
            where = f"{field}.issuers[{i}]"
            g = enc.array(item, where, 6)
            key = IssuerKey(
                key_id=enc.identifier(g[0], f"{where}.key_id"),
                region=enc.text(g[1], f"{where}.region", REGION_RE),
                public_key=enc.binary(g[2], f"{where}.public_key", 32),
                not_before=enc.uint(g[3], f"{where}.not_before"),
                not_after=enc.uint(g[4], f"{where}.not_after"),
                status=_status(g[5], f"{where}.status"),
            )
            if key.key_id in issuers:
                raise enc.FormatError(f"{where}.key_id", f"duplicate key id {key.key_id!r}")
            issuers[key.key_id] = key
        channels: dict[str, Channel] = {}
        for i, item in enumerate(_list(f[5], f"{field}.channels")):
            where = f"{field}.channels[{i}]"
            g = enc.array(item, where, 3)
            channel = Channel(
                channel_id=enc.identifier(g[0], f"{where}.channel_id"),
                name=enc.text(g[1], f"{where}.name"),
                status=_status(g[2], f"{where}.status"),
            )
            if channel.channel_id in channels:
                raise enc.FormatError(
                    f"{where}.channel_id", f"duplicate channel {channel.channel_id!r}"
                )
            channels[channel.channel_id] = channel
        publishers: dict[str, PublisherKey] = {}
        for i, item in enumerate(_list(f[6], f"{field}.publishers") if version >= 2 else []):
            where = f"{field}.publishers[{i}]"
            g = enc.array(item, where, 5)
            publisher = PublisherKey(
                key_id=enc.identifier(g[0], f"{where}.key_id"),
                public_key=enc.binary(g[1], f"{where}.public_key", 32),
                not_before=enc.uint(g[2], f"{where}.not_before"),
                not_after=enc.uint(g[3], f"{where}.not_after"),
                status=_status(g[4], f"{where}.status"),
            )
            if publisher.key_id in publishers:
                raise enc.FormatError(
                    f"{where}.key_id", f"duplicate publisher key id {publisher.key_id!r}"
                )
            publishers[publisher.key_id] = publisher
        return cls(
            sequence=enc.uint(f[2], f"{field}.sequence"),
            issued_at=enc.uint(f[3], f"{field}.issued_at"),
            issuers=issuers,
            channels=channels,
            publishers=publishers,
            signature=signature,
            encoded=bytes(data),
            version=version,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str], root_public_key: bytes) -> TrustList:
        """Read, decode and verify a trust-list file; errors name the file."""
        try:
            with open(path, "rb") as f:
                data = f.read(enc.MAX_TRUST_LIST_BYTES + 1)
        except OSError as e:
            raise TrustListError(f"{path}: cannot read: {e.strerror}") from None
        try:
            return cls.decode(data, root_public_key)
        except (enc.FormatError, TrustListError) as e:
            raise TrustListError(f"{path}: {e}") from None


def _outer(data: bytes, field: str) -> tuple[bytes, bytes]:
    outer = enc.array(enc.unpack(data, field, max_bytes=enc.MAX_TRUST_LIST_BYTES), field, 2)
    return enc.binary(outer[0], f"{field}.body"), enc.binary(outer[1], f"{field}.signature", 64)


def _list(value: object, field: str) -> list[Any]:
    if type(value) is not list:
        raise enc.FormatError(field, "expected an array")
    return value


def _version(value: object, field: str) -> int:
    v = enc.uint(value, field)
    if v not in TRUST_LIST_VERSIONS:
        raise enc.FormatError(
            field, f"unsupported version {v} (this engine reads {list(TRUST_LIST_VERSIONS)})"
        )
    return v


def _status(value: object, field: str) -> Status:
    v = enc.uint(value, field)
    try:
        return Status(v)
    except ValueError:
        raise enc.FormatError(field, f"unknown status {v}") from None
