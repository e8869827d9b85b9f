"""Test vectors for third-party implementations: fixed keys and times, exact bytes.

``python -m engine vectors --set N --out FILE`` writes them; the test suite regenerates
them and compares byte for byte with the committed copies (tests/vectors/essc_v1.json:
credentials, presentations and a version 1 trust list; essc_v2.json: a version 2 trust
list with a revocation publisher key, and a signed revocation snapshot and delta), so
any change to an encoding shows up as a failing test and a diff.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import tempfile
from typing import Any

import nacl.signing

from engine.formats.credentials import Credential, Presentation, Purpose
from engine.formats.trustlist import Channel, IssuerKey, PublisherKey, Status, TrustList
from engine.tools.issuance import citizen_digest
from engine.verdicts import Verdict

ISSUED_AT = 1_767_225_600  # 2026-01-01T00:00:00Z
PRESENTED_AT_MS = 1_780_000_000_000  # 2026-05-28T20:26:40Z


def _seed(label: str) -> bytes:
    return hashlib.sha256(f"essc test vector {label}".encode()).digest()


def build() -> dict[str, Any]:
    root = nacl.signing.SigningKey(_seed("root"))
    issuer = nacl.signing.SigningKey(_seed("issuer 440000"))
    holder = nacl.signing.SigningKey(_seed("holder"))
    digest_key = _seed("citizen digest key")

    trust = TrustList(
        version=1,
        sequence=7,
        issued_at=ISSUED_AT,
        issuers={
            "iss-440000-01": IssuerKey(
                "iss-440000-01",
                "440000",
                bytes(issuer.verify_key),
                ISSUED_AT,
                ISSUED_AT + 10 * 365 * 86400,
            )
        },
        channels={
            "hrss-app": Channel("hrss-app", "National social security public service app"),
            "legacy-wallet": Channel("legacy-wallet", "Retired wallet", Status.REVOKED),
        },
    ).signed(root)
    credential = Credential(
        issuer_key_id="iss-440000-01",
        card_number="G12345678",
        citizen_digest=citizen_digest(digest_key, "440300198001010011"),
        region="440300",
        channel="hrss-app",
        serial=bytes(range(16)),
        not_before=ISSUED_AT,
        not_after=ISSUED_AT + 365 * 86400,
        holder_key=bytes(holder.verify_key),
    ).signed(issuer)
    presentation = Presentation(
        credential=credential,
        timestamp_ms=PRESENTED_AT_MS,
        nonce=bytes(range(0xA0, 0xB0)),
        purpose=Purpose.MEDICAL_SETTLEMENT,
    ).signed(holder)
    encoded = presentation.encode()
    tampered_holder_sig = encoded[:-1] + bytes([encoded[-1] ^ 1])
    return {
        "description": "e-SSC format v1 test vectors (docs/FORMATS.md). All byte strings are "
        "hex. Seeds are SHA-256('essc test vector <label>'). Verdicts assume the default "
        "freshness window (60000 ms) and skew (5000 ms), no revocation data, empty replay cache.",
        "keys": {
            "root_seed": bytes(root).hex(),
            "root_public_key": bytes(root.verify_key).hex(),
            "issuer_seed": bytes(issuer).hex(),
            "issuer_public_key": bytes(issuer.verify_key).hex(),
            "holder_seed": bytes(holder).hex(),
            "holder_public_key": bytes(holder.verify_key).hex(),
            "citizen_digest_key": digest_key.hex(),
        },
        "trust_list": {"body": trust.body().hex(), "encoded": trust.encode().hex()},
        "credential": {"body": credential.body().hex(), "encoded": credential.encode().hex()},
        "presentation": {"body": presentation.body().hex(), "encoded": encoded.hex()},
        "verdicts": [
            _case("as issued, 1 s later", encoded, PRESENTED_AT_MS + 1000, Verdict.OK),
            _case("two minutes later", encoded, PRESENTED_AT_MS + 120_000, Verdict.STALE),
            _case("10 s before it was made", encoded, PRESENTED_AT_MS - 10_000, Verdict.STALE),
            _case(
                "after the credential expired",
                encoded,
                (ISSUED_AT + 366 * 86400) * 1000,
                Verdict.EXPIRED,
            ),
            _case(
                "holder signature bit flipped",
                tampered_holder_sig,
                PRESENTED_AT_MS + 1000,
                Verdict.BAD_HOLDER_SIGNATURE,
            ),
            _case("truncated", encoded[:100], PRESENTED_AT_MS + 1000, Verdict.MALFORMED),
        ],
    }


def _case(name: str, presentation: bytes, now_ms: int, verdict: Verdict) -> dict[str, Any]:
    return {
        "name": name,
        "presentation": presentation.hex(),
        "now_ms": now_ms,
        "verdict": verdict.name,
        "code": int(verdict),
    }


SETS = (1, 2)


def build_v2() -> dict[str, Any]:
    """A version 2 trust list naming a revocation publisher key, and revocation files it
    signs: a snapshot of one card and one credential, and a delta on it."""
    from engine.revocation.build import Signer, build_delta, build_snapshot
    from engine.revocation.format import map_file, read_manifest

    root = nacl.signing.SigningKey(_seed("root"))
    publisher = nacl.signing.SigningKey(_seed("revocation publisher"))
    v1 = TrustList.decode(bytes.fromhex(build()["trust_list"]["encoded"]), bytes(root.verify_key))
    trust = TrustList(
        sequence=8,
        issued_at=ISSUED_AT,
        issuers=v1.issuers,
        channels=v1.channels,
        publishers={
            "rev-pub-01": PublisherKey(
                "rev-pub-01", bytes(publisher.verify_key), ISSUED_AT, ISSUED_AT + 5 * 365 * 86400
            )
        },
    ).signed(root)
    signer = Signer("rev-pub-01", publisher, expires_in_s=2 * 86400)
    files: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        d = pathlib.Path(tmp)
        (d / "revoked.txt").write_text("card G12345678\ncredential " + "00" * 16 + "\n")
        (d / "added.txt").write_text("card G87654321\n")
        (d / "reinstated.txt").write_text("card G12345678\n")
        build_snapshot(
            d / "s.snap",
            [d / "revoked.txt"],
            sequence=100,
            created_at=ISSUED_AT + 3600,
            seed=0x0123456789ABCDEF,
            signer=signer,
        )
        build_delta(
            d / "d.delta",
            d / "s.snap",
            add=[d / "added.txt"],
            remove=[d / "reinstated.txt"],
            created_at=ISSUED_AT + 7200,
            signer=signer,
        )
        for name, file in (("snapshot", "s.snap"), ("delta", "d.delta")):
            map_file(d / file)  # checked as the engine checks it
            manifest = read_manifest(d / file)
            files[name] = {
                "file": (d / file).read_bytes().hex(),
                "manifest_body": manifest.body.hex(),
                "manifest_digest": manifest.digest.hex(),
            }
    return {
        "description": "e-SSC format v2 test vectors (docs/FORMATS.md, sections 2 and 8.7): a "
        "version 2 trust list with a revocation publisher key, and revocation files signed "
        "by it. All byte strings are hex. Seeds are SHA-256('essc test vector <label>'). "
        "The snapshot revokes card G12345678 and credential 00..00 (16 zero bytes); the "
        "delta revokes card G87654321 and reinstates G12345678.",
        "keys": {
            "root_public_key": bytes(root.verify_key).hex(),
            "publisher_seed": bytes(publisher).hex(),
            "publisher_public_key": bytes(publisher.verify_key).hex(),
        },
        "trust_list": {"body": trust.body().hex(), "encoded": trust.encode().hex()},
        "revocation": files,
    }


def dumps(vector_set: int = 1) -> str:
    doc = build() if vector_set == 1 else build_v2()
    return json.dumps(doc, indent=1) + "\n"
