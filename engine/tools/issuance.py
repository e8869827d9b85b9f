"""Issuing credentials in bulk for synthetic cardholders (``python -m engine issue``).

Holder key pairs and issuer signatures are made in native batches across all cores,
so a million credentials take well under a minute on two cores.  The synthetic
population follows the national distribution: provinces weighted by population, a
city within each, card numbers unique, and a channel mix of the department's app,
banks and payment platforms.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from tqdm import tqdm

from engine.formats import encoding as enc
from engine.formats import wallets
from engine.formats.credentials import CREDENTIAL_TAG, CREDENTIAL_VERSION, SERIAL_BYTES
from engine.formats.wallets import Wallet
from engine.sigverify import keypairs_from_seeds, sign_batch
from engine.tools.pki import Pki, issuer_key_id
from engine.tools.regions import PROVINCES

DEFAULT_VALIDITY_DAYS = 365
CHUNK = 10_000
CARD_SPACE = 26 * 10**8  # one letter, eight digits

# Share of credentials provisioned through each channel.
CHANNEL_MIX: dict[str, float] = {
    "hrss-app": 0.30,
    "alipay": 0.25,
    "wechat-pay": 0.25,
    "icbc": 0.05,
    "ccb": 0.05,
    "abc": 0.04,
    "boc": 0.03,
    "bocom": 0.03,
}
CITIES_PER_PROVINCE = 12

# ISO 7064 MOD 11-2 weights and check characters of the 18-character citizen id.
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def citizen_id(region: str, birth: str, sequence: int) -> str:
    """A well-formed (synthetic) 18-character citizen id."""
    body = f"{region}{birth}{sequence % 1000:03d}"
    return body + _ID_CHECK[sum(int(c) * w for c, w in zip(body, _ID_WEIGHTS)) % 11]


def citizen_digest(digest_key: bytes, citizen: str) -> bytes:
    """Keyed BLAKE2b-256 of the citizen id: linkable by the issuer only, never reversible."""
    return hashlib.blake2b(citizen.encode(), digest_size=32, key=digest_key).digest()


def card_number(index: int) -> str:
    return f"{chr(65 + index // 10**8)}{index % 10**8:08d}"


class Issuer:
    """Issues credentials from an opened PKI directory (which holds the issuer keys)."""

    def __init__(self, pki: Pki, *, rng_seed: int | None = None, threads: int | None = None):
        self.pki = pki
        self.threads = threads
        self._digest_key = pki.digest_key()
        self._issuer_sks = {}
        for province in PROVINCES:
            key_id = issuer_key_id(province.code)
            key = pki.issuer_signing_key(key_id)
            self._issuer_sks[key_id] = bytes(key) + bytes(key.verify_key)  # libsodium's sk
        # A fixed seed makes everything reproducible (tests, vectors); otherwise key
        # seeds and serials come from the OS.
        self._deterministic = rng_seed is not None
        self._rng = np.random.default_rng(rng_seed)
        weights = np.array([p.population_m for p in PROVINCES], dtype=float)
        self._province_p = weights / weights.sum()
        self._channels = list(CHANNEL_MIX)
        self._channel_p = np.array(list(CHANNEL_MIX.values()))
        self._channel_p /= self._channel_p.sum()

    def _random_bytes(self, n: int) -> bytes:
        return self._rng.bytes(n) if self._deterministic else os.urandom(n)

    def issue(
        self,
        count: int,
        *,
        now: int | None = None,
        validity_days: int = DEFAULT_VALIDITY_DAYS,
        chunk: int = CHUNK,
    ) -> Iterator[list[Wallet]]:
        """Chunks of freshly issued wallets, ``count`` in all."""
        if count < 0:
            raise ValueError("count must not be negative")
        if count > CARD_SPACE // 2:
            raise ValueError(f"at most {CARD_SPACE // 2} cards per run")
        now = int(time.time()) if now is None else now
        not_after = now + validity_days * 86400
        cards: Any = self._rng.choice(CARD_SPACE, size=count, replace=False) if count else []
        for start in range(0, count, chunk):
            n = min(chunk, count - start)
            yield self._issue_chunk(cards[start : start + n], now, not_after)

    def _issue_chunk(self, cards: Any, not_before: int, not_after: int) -> list[Wallet]:
        n = len(cards)
        rng = self._rng
        seeds = np.frombuffer(self._random_bytes(32 * n), dtype=np.uint8).reshape(n, 32)
        holder_pks, _ = keypairs_from_seeds(seeds, threads=self.threads)
        serials = self._random_bytes(SERIAL_BYTES * n)
        provinces = rng.choice(len(PROVINCES), size=n, p=self._province_p)
        cities = rng.integers(1, CITIES_PER_PROVINCE + 1, size=n)
        channels = rng.choice(len(self._channels), size=n, p=self._channel_p)
        births = rng.integers(0, 365 * 80, size=n)
        seqs = rng.integers(0, 1000, size=n)
        bodies, sks = [], []
        for i in range(n):
            province = PROVINCES[provinces[i]].code
            region = f"{province[:2]}{cities[i]:02d}00"
            birth = time.strftime("%Y%m%d", time.gmtime(-631152000 + int(births[i]) * 86400))
            key_id = issuer_key_id(province)
            bodies.append(
                enc.pack(
                    [
                        CREDENTIAL_TAG,
                        CREDENTIAL_VERSION,
                        key_id,
                        card_number(int(cards[i])),
                        citizen_digest(self._digest_key, citizen_id(region, birth, int(seqs[i]))),
                        region,
                        self._channels[channels[i]],
                        serials[SERIAL_BYTES * i : SERIAL_BYTES * (i + 1)],
                        not_before,
                        not_after,
                        holder_pks[i].tobytes(),
                    ]
                )
            )
            sks.append(self._issuer_sks[key_id])
        sigs = sign_batch(bodies, sks, threads=self.threads)
        return [
            Wallet(enc.pack([body, sigs[i].tobytes()]), seeds[i].tobytes())
            for i, body in enumerate(bodies)
        ]


def issue_to_file(
    pki: Pki,
    count: int,
    out: str | os.PathLike[str],
    *,
    now: int | None = None,
    validity_days: int = DEFAULT_VALIDITY_DAYS,
    rng_seed: int | None = None,
    progress: bool = True,
) -> int:
    """Issue ``count`` credentials into a wallet file (written atomically)."""
    issuer = Issuer(pki, rng_seed=rng_seed)
    header = {
        "count": count,
        "created_at": int(time.time()) if now is None else now,
        "trust_list_sequence": pki.trust_list.sequence,
    }
    with tqdm(
        total=count, unit="cred", unit_scale=True, disable=not progress, file=sys.stderr
    ) as bar:

        def chunks() -> Iterator[list[Wallet]]:
            for chunk in issuer.issue(count, now=now, validity_days=validity_days):
                bar.update(len(chunk))
                yield chunk

        return wallets.write(out, header, chunks())
