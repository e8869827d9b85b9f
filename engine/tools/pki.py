"""Demo trust material: national root, one issuer key per province, channels, trust list.

Layout of a PKI directory (docs/FORMATS.md, section 6)::

    root.key  root.pub        national root key pair (private file mode 0600)
    digest.key                secret for the citizen-id digest (0600)
    revocation-publisher.key  the key revocation data is signed with (0600), and
    revocation-publisher.pub  its public half, certified in the trust list
    issuers/<key_id>.key      one issuer key per province (0600; directory 0700)
    trustlist.essc            the signed trust list
    pki.json                  manifest: public keys, regions, channels (no secrets)
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time

import nacl.signing

from engine.errors import EsscError
from engine.formats import keys
from engine.formats.files import write_atomically
from engine.formats.trustlist import Channel, IssuerKey, PublisherKey, Status, TrustList
from engine.tools.regions import PROVINCES

TRUST_LIST_FILE = "trustlist.essc"
MANIFEST_FILE = "pki.json"
ISSUER_VALIDITY_S = 10 * 365 * 86400
PUBLISHER_KEY_FILE = "revocation-publisher.key"
PUBLISHER_PUBLIC_FILE = "revocation-publisher.pub"
PUBLISHER_KEY_ID = "rev-pub-01"
PUBLISHER_VALIDITY_S = 5 * 365 * 86400

# (channel id, name, status): the department's own app, banks, payment platforms, and
# one retired wallet kept in the list as revoked.
DEMO_CHANNELS: tuple[tuple[str, str, Status], ...] = (
    ("hrss-app", "National social security public service app", Status.ACTIVE),
    ("icbc", "Industrial and Commercial Bank of China app", Status.ACTIVE),
    ("ccb", "China Construction Bank app", Status.ACTIVE),
    ("abc", "Agricultural Bank of China app", Status.ACTIVE),
    ("boc", "Bank of China app", Status.ACTIVE),
    ("bocom", "Bank of Communications app", Status.ACTIVE),
    ("alipay", "Alipay", Status.ACTIVE),
    ("wechat-pay", "WeChat Pay", Status.ACTIVE),
    ("legacy-wallet", "Retired third-party wallet", Status.REVOKED),
)


class PkiError(EsscError):
    """A PKI directory that cannot be created or used; the message says why."""


def issuer_key_id(region_code: str) -> str:
    return f"iss-{region_code}-01"


@dataclasses.dataclass(frozen=True)
class Pki:
    """A PKI directory opened for issuing (holds private keys) or for verifying."""

    directory: pathlib.Path
    root_public_key: bytes
    trust_list: TrustList

    @classmethod
    def open(cls, directory: str | os.PathLike[str]) -> Pki:
        d = pathlib.Path(directory)
        if not (d / MANIFEST_FILE).is_file():
            raise PkiError(f"{d}: not a PKI directory (no {MANIFEST_FILE}); run `pki init` first")
        root_public_key = keys.read_public(d / "root.pub")
        return cls(d, root_public_key, TrustList.load(d / TRUST_LIST_FILE, root_public_key))

    @property
    def trust_list_path(self) -> pathlib.Path:
        return self.directory / TRUST_LIST_FILE

    def issuer_signing_key(self, key_id: str) -> nacl.signing.SigningKey:
        return keys.read_private(self.directory / "issuers" / f"{key_id}.key")[0]

    def digest_key(self) -> bytes:
        return keys.read_secret(self.directory / "digest.key")[0]

    def root_signing_key(self) -> nacl.signing.SigningKey:
        return keys.read_private(self.directory / "root.key")[0]

    @property
    def publisher_key_path(self) -> pathlib.Path:
        """The revocation publisher's private key file (``--signing-key``)."""
        return self.directory / PUBLISHER_KEY_FILE


def init(directory: str | os.PathLike[str], *, now: int | None = None) -> Pki:
    """Create a complete demo PKI in ``directory`` (which must not hold one already)."""
    d = pathlib.Path(directory)
    now = int(time.time()) if now is None else now
    if (d / MANIFEST_FILE).exists():
        raise PkiError(f"{d}: already holds a PKI ({MANIFEST_FILE} exists); refusing to overwrite")
    d.mkdir(parents=True, exist_ok=True)
    (d / "issuers").mkdir(mode=0o700, exist_ok=True)

    root = nacl.signing.SigningKey.generate()
    keys.write_private(d / "root.key", bytes(root), "root", "root")
    keys.write_public(d / "root.pub", bytes(root.verify_key), "root", "root")
    keys.write_private(d / "digest.key", os.urandom(32), "citizen-digest", "digest")

    issuers = {}
    for province in PROVINCES:
        key_id = issuer_key_id(province.code)
        key = nacl.signing.SigningKey.generate()
        keys.write_private(d / "issuers" / f"{key_id}.key", bytes(key), "issuer", key_id)
        issuers[key_id] = IssuerKey(
            key_id=key_id,
            region=province.code,
            public_key=bytes(key.verify_key),
            not_before=now - 86400,
            not_after=now + ISSUER_VALIDITY_S,
        )
    channels = {cid: Channel(cid, name, status) for cid, name, status in DEMO_CHANNELS}
    publishers = {PUBLISHER_KEY_ID: _new_publisher_key(d, now)}
    trust = TrustList(
        sequence=1, issued_at=now, issuers=issuers, channels=channels, publishers=publishers
    ).signed(root)
    write_atomically(d / TRUST_LIST_FILE, trust.encode())
    _write_manifest(d, root.verify_key, trust)
    return Pki(d, bytes(root.verify_key), trust)


def _new_publisher_key(d: pathlib.Path, now: int) -> PublisherKey:
    """A new revocation publisher key pair in ``d``, and its trust-list entry."""
    key = nacl.signing.SigningKey.generate()
    public = bytes(key.verify_key)
    keys.write_private(d / PUBLISHER_KEY_FILE, bytes(key), "revocation-publisher", PUBLISHER_KEY_ID)
    keys.write_public(d / PUBLISHER_PUBLIC_FILE, public, "revocation-publisher", PUBLISHER_KEY_ID)
    return PublisherKey(PUBLISHER_KEY_ID, public, now - 86400, now + PUBLISHER_VALIDITY_S)


def ensure_publisher(pki: Pki, *, now: int | None = None) -> Pki:
    """A PKI made before publisher keys existed gets one, certified in the next trust
    list (sequence + 1); one that has it is returned as it is."""
    if pki.publisher_key_path.exists() and pki.trust_list.publishers:
        return pki
    if pki.publisher_key_path.exists():
        raise PkiError(f"{pki.publisher_key_path} exists but the trust list names no publisher key")
    now = int(time.time()) if now is None else now
    publisher = _new_publisher_key(pki.directory, now)
    update_trust_list(pki, publishers={publisher.key_id: publisher}, now=now)
    return Pki.open(pki.directory)


def update_trust_list(
    pki: Pki,
    *,
    issuer_status: dict[str, Status] | None = None,
    channel_status: dict[str, Status] | None = None,
    publisher_status: dict[str, Status] | None = None,
    publishers: dict[str, PublisherKey] | None = None,
    now: int | None = None,
) -> TrustList:
    """Sign and atomically install the next trust list (sequence + 1) with changed
    statuses (and ``publishers`` added or replaced)."""
    current = pki.trust_list
    issuers = dict(current.issuers)
    channels = dict(current.channels)
    all_publishers = {**current.publishers, **(publishers or {})}
    for key_id, status in (publisher_status or {}).items():
        if key_id not in all_publishers:
            raise PkiError(f"unknown publisher key id {key_id!r}")
        all_publishers[key_id] = dataclasses.replace(all_publishers[key_id], status=status)
    for key_id, status in (issuer_status or {}).items():
        if key_id not in issuers:
            raise PkiError(f"unknown issuer key id {key_id!r}")
        issuers[key_id] = dataclasses.replace(issuers[key_id], status=status)
    for channel_id, status in (channel_status or {}).items():
        if channel_id not in channels:
            raise PkiError(f"unknown channel {channel_id!r}")
        channels[channel_id] = dataclasses.replace(channels[channel_id], status=status)
    root = pki.root_signing_key()
    trust = TrustList(
        sequence=current.sequence + 1,
        issued_at=int(time.time()) if now is None else now,
        issuers=issuers,
        channels=channels,
        publishers=all_publishers,
    ).signed(root)
    write_atomically(pki.trust_list_path, trust.encode())
    _write_manifest(pki.directory, root.verify_key, trust)
    return trust


def _write_manifest(d: pathlib.Path, root_key: nacl.signing.VerifyKey, trust: TrustList) -> None:
    manifest = {
        "root_public_key": bytes(root_key).hex(),
        "trust_list": TRUST_LIST_FILE,
        "trust_list_sequence": trust.sequence,
        "issuers": [
            {"key_id": k.key_id, "region": k.region, "public_key": k.public_key.hex()}
            for k in trust.issuers.values()
        ],
        "channels": [
            {"channel_id": c.channel_id, "name": c.name, "status": c.status.name.lower()}
            for c in trust.channels.values()
        ],
        "revocation_publishers": [
            {"key_id": p.key_id, "public_key": p.public_key.hex(), "status": p.status.name.lower()}
            for p in trust.publishers.values()
        ],
    }
    write_atomically(d / MANIFEST_FILE, (json.dumps(manifest, indent=1) + "\n").encode())
