"""``python -m engine inspect FILE``: decode any file or object the engine knows, as JSON.

Byte strings are shown as hex; private key material is redacted, never printed.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from engine.errors import EsscError
from engine.formats import encoding as enc
from engine.formats import wallets
from engine.formats.credentials import CREDENTIAL_TAG, PRESENTATION_TAG, Credential, Presentation
from engine.formats.keys import PRIVATE_KIND, PUBLIC_KIND
from engine.formats.trustlist import TRUST_LIST_TAG, PublisherKey, TrustList, TrustListError
from engine.revocation import format as revocation_format
from engine.revocation.manifest import ManifestError
from engine.revocation.publication import INDEX_TAG, Index, PublicationError

WALLET_PREVIEW = 3


class InspectError(EsscError):
    """The file is of no kind the engine knows; the message says what was tried."""


def describe_bytes(data: bytes, root_public_key: bytes | None = None) -> dict[str, Any]:
    """A JSON-ready description of one encoded credential, presentation or trust list."""
    try:
        outer = enc.array(
            enc.unpack(data, "object", max_bytes=enc.MAX_TRUST_LIST_BYTES), "object", 2
        )
        body = enc.unpack(enc.binary(outer[0], "object.body"), "object.body", max_bytes=len(data))
    except enc.FormatError as e:
        raise InspectError(f"not an e-SSC object: {e}") from None
    kind = body[0] if isinstance(body, list) and body else None
    if kind == CREDENTIAL_TAG:
        return {"type": "credential", **_credential(Credential.decode(data))}
    if kind == PRESENTATION_TAG:
        pres = Presentation.decode(data)
        return {
            "type": "presentation",
            "timestamp_ms": pres.timestamp_ms,
            "nonce": pres.nonce.hex(),
            "purpose": pres.purpose.name.lower(),
            "holder_signature": pres.signature.hex(),
            "credential": _credential(pres.credential),
        }
    if kind == TRUST_LIST_TAG:
        return _trust_list(data, root_public_key)
    if kind == INDEX_TAG:
        return _index(data)
    raise InspectError(f"unknown object tag {kind!r}")


def _index(data: bytes) -> dict[str, Any]:
    """A publication index (its signature needs the trust list: not checked here)."""
    try:
        ix = Index.decode_unverified(data)
    except PublicationError as e:
        raise InspectError(str(e)) from None
    return {
        "type": "revocation_index",
        "signature": f"not checked (publisher key {ix.publisher_key_id})",
        "published_at": ix.published_at,
        "expires_at": ix.expires_at,
        "sequence": ix.sequence,
        "files": [
            {
                "name": e.name,
                "kind": e.kind,
                "sequence": e.sequence,
                "size": e.size,
                "sha256": e.sha256.hex(),
                "manifest_digest": e.manifest_digest.hex(),
            }
            for e in ix.entries
        ],
    }


def describe_file(
    path: str | os.PathLike[str], root_public_key: bytes | None = None
) -> dict[str, Any]:
    with open(path, "rb") as f:
        head = f.read(64)
    if head[:8] in revocation_format.MAGICS:
        try:
            return describe_revocation(path)
        except revocation_format.RevocationFileError as e:
            raise InspectError(str(e)) from None
    if head.lstrip().startswith(b"{"):
        return _key_file(path)
    try:
        header = wallets.read_header(path)
    except wallets.WalletFileError:
        pass
    else:
        preview = []
        for i, w in enumerate(wallets.read(path)):
            if i == WALLET_PREVIEW:
                break
            preview.append({"credential": _credential(Credential.decode(w.credential))})
        return {"type": "wallets", "header": header, "first": preview, "holder_seeds": "<redacted>"}
    with open(path, "rb") as f:
        data = f.read(enc.MAX_TRUST_LIST_BYTES + 1)
    return describe_bytes(data, root_public_key)


def to_json(doc: Any) -> str:
    return json.dumps(doc, indent=2, default=lambda b: b.hex() if isinstance(b, bytes) else str(b))


def _credential(c: Credential) -> dict[str, Any]:
    return {
        "issuer_key_id": c.issuer_key_id,
        "card_number": c.card_number,
        "citizen_digest": c.citizen_digest.hex(),
        "region": c.region,
        "channel": c.channel,
        "serial": c.serial.hex(),
        "not_before": c.not_before,
        "not_after": c.not_after,
        "holder_key": c.holder_key.hex(),
        "issuer_signature": c.signature.hex(),
    }


def _trust_list(data: bytes, root_public_key: bytes | None) -> dict[str, Any]:
    try:
        if root_public_key is None:
            t = TrustList.decode_unverified(data)
            status = "not checked (give --root-key)"
        else:
            t = TrustList.decode(data, root_public_key)
            status = "valid"
    except (TrustListError, enc.FormatError) as e:
        raise InspectError(f"trust list: {e}") from None
    return {
        "type": "trust_list",
        "version": t.version,
        "root_signature": status,
        "sequence": t.sequence,
        "issued_at": t.issued_at,
        "issuers": [
            {
                "key_id": k.key_id,
                "region": k.region,
                "public_key": k.public_key.hex(),
                "not_before": k.not_before,
                "not_after": k.not_after,
                "status": k.status.name.lower(),
            }
            for k in t.issuers.values()
        ],
        "channels": [
            {"channel_id": c.channel_id, "name": c.name, "status": c.status.name.lower()}
            for c in t.channels.values()
        ],
        "revocation_publishers": [
            {
                "key_id": p.key_id,
                "public_key": p.public_key.hex(),
                "not_before": p.not_before,
                "not_after": p.not_after,
                "status": p.status.name.lower(),
            }
            for p in t.publishers.values()
        ],
    }


def _key_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        with open(path) as f:
            doc = json.load(f)
    except ValueError:
        raise InspectError(f"{path}: looks like JSON but is not valid JSON") from None
    if not isinstance(doc, dict) or doc.get("kind") not in (PRIVATE_KIND, PUBLIC_KIND):
        raise InspectError(f"{path}: JSON, but not an e-SSC key file")
    if doc["kind"] == PRIVATE_KIND:
        doc = dict(doc, seed="<redacted>")
    return {"type": "key_file", **doc}


# --- Revocation files (also ``revocation inspect``) ---------------------------------


def filter_fpr(words: np.ndarray) -> float:
    """The false-positive rate of this very filter for random queries, from its bits.

    A query lands in a uniformly random block and needs one uniformly random bit in
    each of its eight words, so the rate is the mean over blocks of the product of
    the eight words' fill ratios.
    """
    popcount = np.array([bin(i).count("1") for i in range(256)], dtype=np.float64)
    total = 0.0
    step = 1 << 20  # blocks per slice: bounded temporary memory
    blocks = words.reshape(-1, 8)
    for start in range(0, len(blocks), step):
        part = np.ascontiguousarray(blocks[start : start + step]).view(np.uint8)
        ones = popcount[part].reshape(-1, 8, 4).sum(axis=2)
        total += float(np.prod(ones / 32.0, axis=1).sum())
    return total / len(blocks)


def describe_revocation(
    path: str | os.PathLike[str], publishers: Mapping[str, PublisherKey] | None = None
) -> dict[str, Any]:
    """A JSON-ready description of a revocation file, after every check; the manifest's
    signature is checked against ``publishers`` (a trust list's) when given."""
    m = revocation_format.map_file(path)
    h = m.header
    doc: dict[str, Any] = {
        "type": f"revocation_{h.kind}",
        "format_version": h.version,
        "hash": f"{revocation_format.HASHES[h.hash_id]} (id {h.hash_id})",
        "seed": f"{h.seed:016x}",
        "sequence": h.sequence,
    }
    if h.kind == "delta":
        doc["applies_to_snapshot"] = h.base_sequence
    doc["created_at"] = h.created_at
    doc["created_at_utc"] = datetime.datetime.fromtimestamp(
        h.created_at, datetime.timezone.utc
    ).isoformat()
    doc["file_bytes"] = h.file_size
    doc["checksum"] = "ok (crc32c)"
    if h.kind == "snapshot":
        n = h.entries
        bloom = m.arrays["bloom"]
        doc.update(
            entries=n,
            cards=h.cards,
            credentials=h.credentials,
            bloom_blocks=len(bloom) // 8,
            bloom_bytes=bloom.nbytes,
            bloom_bits_per_entry=round(bloom.nbytes * 8 / n, 3) if n else None,
            target_fpr=h.target_fpr,
            bloom_fpr=filter_fpr(bloom),
            exact_tier_bytes=m.arrays["fps"].nbytes,
            bucket_index_bytes=m.arrays["index"].nbytes,
            bucket_bits=h.bucket_bits,
            file_bits_per_entry=round(h.file_size * 8 / n, 3) if n else None,
        )
    else:
        doc.update(
            added_cards=h.cards,
            added_credentials=h.credentials,
            removed_cards=h.removed_cards,
            removed_credentials=h.removed_credentials,
        )
    if m.manifest is None:
        doc["signature"] = "none: unsigned (format version 1)"
        return doc
    if publishers is None:
        doc["signature"] = "not checked (give --pki or --trust-list)"
    else:
        try:
            key = m.manifest.verify(publishers)
        except ManifestError as e:
            raise InspectError(f"{os.fspath(path)}: {e}") from None
        doc["signature"] = f"ok (revocation publisher key {key.key_id})"
    doc["manifest"] = {
        **m.manifest.describe(),
        "sections": "ok (every SHA-256 matches)",
        "expires_at_utc": datetime.datetime.fromtimestamp(
            m.manifest.expires_at, datetime.timezone.utc
        ).isoformat(),
    }
    return doc
