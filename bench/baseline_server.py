"""The straightforward server the engine is measured against (docs/BENCHMARKS.md).

Same protocol (docs/PROTOCOL.md: verify, verify_batch, revocation_check, ping, status),
same verdicts,
written the obvious way: asyncio streams, one request at a time per connection, the
reference decoder, one PyNaCl call per signature, a Python set for revocation and a
dict for replay.  No batching, no native core.

    python -m bench.baseline_server --pki demo/pki --port 7800 [--revoked FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import struct
import sys
import time

import msgpack
import nacl.exceptions
import nacl.signing

from engine.formats.credentials import Presentation
from engine.formats.encoding import FormatError
from engine.formats.trustlist import Status, TrustList
from engine.tools.pki import Pki
from engine.verdicts import Verdict

FRESHNESS_MS, SKEW_MS = 60_000, 5_000


class BaselineVerifier:
    def __init__(
        self,
        trust: TrustList,
        revoked_cards: set[str],
        revoked_serials: set[bytes],
        has_revocation: bool = True,
    ):
        self.trust = trust
        self.has_revocation = has_revocation
        self.keys = {k: nacl.signing.VerifyKey(v.public_key) for k, v in trust.issuers.items()}
        self.revoked_cards = revoked_cards
        self.revoked_serials = revoked_serials
        self.seen: dict[bytes, int] = {}

    def verify(self, data: bytes, now_ms: int) -> dict:
        try:
            pres, pres_body, cred_body = Presentation.decode_parts(data)
        except FormatError as e:
            return {"verdict": int(Verdict.MALFORMED), "reason": str(e)}
        cred = pres.credential
        issuer = self.trust.issuers.get(cred.issuer_key_id)
        if issuer is None:
            return {"verdict": int(Verdict.UNKNOWN_ISSUER)}
        for key, body, sig, bad in (
            (
                self.keys[cred.issuer_key_id],
                cred_body,
                cred.signature,
                Verdict.BAD_ISSUER_SIGNATURE,
            ),
            (
                nacl.signing.VerifyKey(cred.holder_key),
                pres_body,
                pres.signature,
                Verdict.BAD_HOLDER_SIGNATURE,
            ),
        ):
            try:
                key.verify(body, sig)
            except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
                return {"verdict": int(bad)}
        now_s = now_ms // 1000
        channel = self.trust.channels.get(cred.channel)
        if (
            issuer.status is not Status.ACTIVE
            or not issuer.not_before <= now_s <= issuer.not_after
            or not issuer.covers_region(cred.region)
        ):
            verdict = Verdict.ISSUER_INVALID
        elif channel is None:
            verdict = Verdict.UNKNOWN_CHANNEL
        elif channel.status is not Status.ACTIVE:
            verdict = Verdict.CHANNEL_REVOKED
        elif now_s < cred.not_before:
            verdict = Verdict.NOT_YET_VALID
        elif now_s > cred.not_after:
            verdict = Verdict.EXPIRED
        elif not now_ms - FRESHNESS_MS - SKEW_MS <= pres.timestamp_ms <= now_ms + SKEW_MS:
            verdict = Verdict.STALE
        elif cred.card_number in self.revoked_cards:
            verdict = Verdict.CARD_REVOKED
        elif cred.serial in self.revoked_serials:
            verdict = Verdict.CREDENTIAL_REVOKED
        else:
            key = cred.serial + pres.nonce
            expiry = self.seen.get(key)
            if expiry is not None and expiry >= now_ms:
                verdict = Verdict.REPLAYED
            else:
                self.seen[key] = pres.timestamp_ms + FRESHNESS_MS + SKEW_MS
                return {
                    "verdict": 0,
                    "claims": {
                        "card_number": cred.card_number,
                        "region": cred.region,
                        "channel": cred.channel,
                        "issuer": cred.issuer_key_id,
                        "serial": cred.serial,
                        "purpose": pres.purpose.name.lower(),
                        "presented_at_ms": pres.timestamp_ms,
                        "valid_until": cred.not_after,
                    },
                }
        return {"verdict": int(verdict)}

    def revocation_check(self, msg: dict) -> dict:
        # The load generator asks this before a run with revoked outcomes in its mix.
        if not self.has_revocation:
            return {"error": "no_revocation_data", "message": "no revocation data loaded"}
        return {
            "cards": [c in self.revoked_cards for c in msg.get("cards", [])],
            "credentials": [bytes(s) in self.revoked_serials for s in msg.get("credentials", [])],
            "revocation_sequence": 0,
        }


async def handle(verifier: BaselineVerifier, reader, writer) -> None:
    try:
        while True:
            (size,) = struct.unpack(">I", await reader.readexactly(4))
            msg = msgpack.unpackb(await reader.readexactly(size), raw=False)
            rid, kind = msg.get("id"), msg.get("type")
            now_ms = int(time.time() * 1000)
            if kind == "verify":
                out = {"id": rid, **verifier.verify(msg["presentation"], now_ms)}
            elif kind == "verify_batch":
                out = {
                    "id": rid,
                    "results": [verifier.verify(p, now_ms) for p in msg["presentations"]],
                }
            elif kind == "revocation_check":
                out = {"id": rid, **verifier.revocation_check(msg)}
            elif kind == "ping":
                out = {"id": rid, "pong": True}
            elif kind == "status":
                out = {"id": rid, "status": {"trust_list_sequence": verifier.trust.sequence}}
            else:
                out = {"id": rid, "error": "unknown_type", "message": str(kind)}
            payload = msgpack.packb(out, use_bin_type=True)
            writer.write(struct.pack(">I", len(payload)) + payload)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def read_revoked(path: str | None) -> tuple[set[str], set[bytes]]:
    cards: set[str] = set()
    serials: set[bytes] = set()
    if path:
        with open(path) as f:
            for line in f:
                kind, _, value = line.strip().partition(" ")
                if kind == "card":
                    cards.add(value)
                elif kind == "credential":
                    serials.add(bytes.fromhex(value))
    return cards, serials


async def main(args) -> None:
    pki = Pki.open(args.pki)
    verifier = BaselineVerifier(
        pki.trust_list, *read_revoked(args.revoked), has_revocation=args.revoked is not None
    )
    server = await asyncio.start_server(lambda r, w: handle(verifier, r, w), args.host, args.port)
    port = server.sockets[0].getsockname()[1]
    print(
        json.dumps({"event": "listening", "address": f"{args.host}:{port}"}),
        flush=True,
        file=sys.stderr,
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python -m bench.baseline_server",
        description="The straightforward asyncio + PyNaCl server the engine is compared with.",
    )
    parser.add_argument("--pki", required=True, help="PKI directory (trust list)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7800)
    parser.add_argument("--revoked", help="revocation input text: `card N` / `credential HEX`")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args()))
