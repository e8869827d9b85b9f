"""The load corpus: cardholders grouped by the verdict their presentations must draw.

``python -m loadgen corpus --pki DIR --cards N --out DIR`` issues N credentials (the
realistic population of ``engine.tools.issuance``), splits them by a mix of expected
outcomes, shapes each group's credentials so that they draw their verdict
(``engine.tools.scenarios``), and writes::

    corpus.json          manifest: outcomes, expected verdicts, weights, files (written last)
    <outcome>.essc       wallet file (docs/FORMATS.md, section 5) of that outcome's holders
    revoked.txt          revocation input naming every revoked card and credential

Presentations are not stored: they are valid for a minute only, so the run signs
fresh ones from these wallets while it sends (loadgen.sources).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time
from collections.abc import Iterator

import nacl.signing

from engine.errors import EsscError
from engine.formats import wallets
from engine.formats.credentials import Credential
from engine.formats.files import write_atomically
from engine.formats.wallets import Wallet
from engine.sigverify import sign_batch
from engine.tools.issuance import Issuer
from engine.tools.pki import Pki
from engine.tools.scenarios import ROGUE_ISSUER, shape_credential, spoil_credential
from engine.verdicts import Verdict

MANIFEST = "corpus.json"
REVOCATION_INPUT = "revoked.txt"
FORMAT = "essc-loadgen-corpus"
VERSION = 1

# Outcome name -> the verdict its presentations draw.  "replayed" holders are valid:
# each of their presentations is sent twice, answered OK once and REPLAYED once.
OUTCOMES: dict[str, Verdict] = {
    "valid": Verdict.OK,
    "malformed": Verdict.MALFORMED,
    "unknown-issuer": Verdict.UNKNOWN_ISSUER,
    "bad-issuer-signature": Verdict.BAD_ISSUER_SIGNATURE,
    "bad-holder-signature": Verdict.BAD_HOLDER_SIGNATURE,
    "issuer-invalid": Verdict.ISSUER_INVALID,
    "unknown-channel": Verdict.UNKNOWN_CHANNEL,
    "channel-revoked": Verdict.CHANNEL_REVOKED,
    "not-yet-valid": Verdict.NOT_YET_VALID,
    "expired": Verdict.EXPIRED,
    "stale": Verdict.STALE,
    "card-revoked": Verdict.CARD_REVOKED,
    "credential-revoked": Verdict.CREDENTIAL_REVOKED,
    "replayed": Verdict.REPLAYED,
}
REVOKED_OUTCOMES = ("card-revoked", "credential-revoked")

# Mostly good traffic, with every kind of failure a payment network meets.
DEFAULT_MIX: dict[str, float] = {
    "valid": 88,
    "bad-issuer-signature": 1,
    "bad-holder-signature": 1,
    "card-revoked": 2,
    "credential-revoked": 1,
    "expired": 2,
    "stale": 1,
    "replayed": 2,
    "unknown-issuer": 1,
    "malformed": 1,
}


class CorpusError(EsscError):
    """A corpus that cannot be built or read; the message says why."""


def parse_mix(text: str) -> dict[str, float]:
    """``valid=90,expired=5,...`` -> {outcome: weight}; outcomes not named get 0."""
    mix: dict[str, float] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip().lower().replace("_", "-")
        if name == "ok":
            name = "valid"
        if not sep or name not in OUTCOMES:
            raise CorpusError(
                f"--mix {part!r}: expected OUTCOME=WEIGHT with OUTCOME one of {', '.join(OUTCOMES)}"
            )
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if not weight >= 0:
            raise CorpusError(f"--mix {part!r}: the weight must be a number >= 0")
        mix[name] = weight
    if not any(w > 0 for w in mix.values()):
        raise CorpusError("--mix: give at least one outcome a positive weight")
    return mix


def allocate(cards: int, mix: dict[str, float]) -> dict[str, int]:
    """Cardholders per outcome in proportion to the weights, at least one per outcome."""
    names = [n for n in OUTCOMES if mix.get(n, 0) > 0]
    if cards < len(names):
        raise CorpusError(f"--cards {cards}: the mix needs at least {len(names)} cardholders")
    total = sum(mix[n] for n in names)
    exact = {n: cards * mix[n] / total for n in names}
    counts = {n: max(1, int(exact[n])) for n in names}
    left = cards - sum(counts.values())
    # Largest remainders get the cards left over; a shortfall (outcomes raised to one)
    # comes out of the biggest groups.
    by_remainder = sorted(names, key=lambda n: exact[n] - int(exact[n]), reverse=True)
    for n in by_remainder[: max(left, 0)]:
        counts[n] += 1
    while left < 0:
        biggest = max(names, key=lambda n: counts[n])
        counts[biggest] -= 1
        left += 1
    return counts


@dataclasses.dataclass(frozen=True)
class Outcome:
    name: str
    expect: Verdict  # what the server must answer (replayed: OK then REPLAYED)
    weight: float
    cards: int
    file: str


@dataclasses.dataclass(frozen=True)
class Corpus:
    directory: pathlib.Path
    outcomes: tuple[Outcome, ...]
    freshness_ms: int
    created_at: int
    trust_list_sequence: int
    revocation_input: str

    @classmethod
    def open(cls, directory: str | os.PathLike) -> Corpus:
        d = pathlib.Path(directory)
        try:
            doc = json.loads((d / MANIFEST).read_text())
        except FileNotFoundError:
            raise CorpusError(
                f"{d}: not a load corpus (no {MANIFEST}); make one with `python -m loadgen corpus`"
            ) from None
        except (OSError, ValueError) as e:
            raise CorpusError(f"{d / MANIFEST}: unreadable: {e}") from None
        if doc.get("format") != FORMAT or doc.get("version") != VERSION:
            raise CorpusError(f"{d / MANIFEST}: not a version {VERSION} {FORMAT} manifest")
        try:
            outcomes = tuple(
                Outcome(
                    o["outcome"], Verdict[o["expect"]], float(o["weight"]), o["cards"], o["file"]
                )
                for o in doc["outcomes"]
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CorpusError(f"{d / MANIFEST}: bad outcome entry ({e})") from None
        for o in outcomes:
            if o.name not in OUTCOMES:
                raise CorpusError(f"{d / MANIFEST}: unknown outcome {o.name!r}")
        return cls(
            d,
            outcomes,
            int(doc["freshness_ms"]),
            int(doc["created_at"]),
            int(doc["trust_list_sequence"]),
            doc["revocation_input"],
        )

    @property
    def revocation_path(self) -> pathlib.Path:
        return self.directory / self.revocation_input

    def outcome(self, name: str) -> Outcome:
        for o in self.outcomes:
            if o.name == name:
                return o
        raise CorpusError(f"{self.directory}: the corpus has no {name!r} cardholders")

    def wallets(self, name: str) -> Iterator[Wallet]:
        return wallets.read(self.directory / self.outcome(name).file)

    def weights(self, override: dict[str, float] | None = None) -> dict[str, float]:
        """Outcome -> weight for a run: the corpus's mix, or ``override`` restricted to it."""
        if override is None:
            return {o.name: o.weight for o in self.outcomes if o.weight > 0}
        missing = [n for n, w in override.items() if w > 0 and n not in self.names]
        if missing:
            raise CorpusError(f"--mix names outcomes the corpus has no cardholders for: {missing}")
        return {n: w for n, w in override.items() if w > 0}

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.outcomes]

    def revoked(self) -> tuple[list[str], list[bytes]]:
        """(card numbers, credential serials) of the revocation input."""
        return read_revocation_input(self.revocation_path)


def read_revocation_input(path: str | os.PathLike) -> tuple[list[str], list[bytes]]:
    """Parses the text revocation input (``card <number>`` / ``credential <serial-hex>``)."""
    cards, serials = [], []
    for n, line in enumerate(pathlib.Path(path).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        kind, _, value = line.partition(" ")
        value = value.strip()
        if kind == "card":
            cards.append(value)
        elif kind == "credential":
            serials.append(bytes.fromhex(value))
        else:
            raise CorpusError(f"{path}:{n}: expected 'card <number>' or 'credential <hex>'")
    return cards, serials


def build(
    pki_dir: str | os.PathLike,
    cards: int,
    out: str | os.PathLike,
    mix: dict[str, float] | None = None,
    *,
    freshness_ms: int = 60_000,
    seed: int | None = None,
    now: int | None = None,
) -> Corpus:
    """Issues and writes a corpus (see the module doc); returns it opened."""
    pki = Pki.open(pki_dir)
    mix = dict(DEFAULT_MIX if mix is None else mix)
    counts = allocate(cards, mix)
    now = int(time.time()) if now is None else now
    d = pathlib.Path(out)
    d.mkdir(parents=True, exist_ok=True)
    if (d / MANIFEST).exists():
        (d / MANIFEST).unlink()  # a half-rewritten corpus must not look complete

    # One issuing run for everyone, so card numbers are unique across the outcomes
    # (a revoked card must not also be some valid holder's card).
    issued = _wallet_stream(Issuer(pki, rng_seed=seed).issue(cards, now=now))
    shaper = _Shaper(pki, now)
    revoked_cards: list[str] = []
    revoked_serials: list[bytes] = []
    entries = []
    for name, count in counts.items():
        verdict = OUTCOMES[name]

        def chunks(name=name, count=count, verdict=verdict):
            left = count
            while left:
                chunk = [next(issued) for _ in range(min(left, 10_000))]
                left -= len(chunk)
                chunk = shaper.shape(verdict, chunk)
                if name in REVOKED_OUTCOMES:
                    for w in chunk:
                        cred = Credential.decode(w.credential)
                        if name == "card-revoked":
                            revoked_cards.append(cred.card_number)
                        else:
                            revoked_serials.append(cred.serial)
                yield chunk

        file = f"{name}.essc"
        header = {
            "count": count,
            "created_at": now,
            "trust_list_sequence": pki.trust_list.sequence,
            "outcome": name,
        }
        wallets.write(d / file, header, chunks())
        expect = Verdict.REPLAYED if name == "replayed" else verdict
        entries.append(
            {
                "outcome": name,
                "expect": expect.name,
                "weight": mix[name],
                "cards": count,
                "file": file,
            }
        )
    lines = [
        "# Revocation input for the load corpus: load it into the server under test,",
        "#   python -m engine revocation build --signing-key PKI/revocation-publisher.key "
        "--out FILE " + REVOCATION_INPUT,
        *(f"card {c}" for c in revoked_cards),
        *(f"credential {s.hex()}" for s in revoked_serials),
    ]
    write_atomically(d / REVOCATION_INPUT, ("\n".join(lines) + "\n").encode())
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "created_at": now,
        "pki": str(pathlib.Path(pki_dir).resolve()),
        "trust_list_sequence": pki.trust_list.sequence,
        "freshness_ms": freshness_ms,
        "cards": cards,
        "outcomes": entries,
        "revocation_input": REVOCATION_INPUT,
        "revoked_cards": len(revoked_cards),
        "revoked_credentials": len(revoked_serials),
    }
    write_atomically(d / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    return Corpus.open(d)


def _wallet_stream(chunks: Iterator[list[Wallet]]) -> Iterator[Wallet]:
    for chunk in chunks:
        yield from chunk


class _Shaper:
    """Re-signs credentials whose fields an outcome changes, in native batches."""

    def __init__(self, pki: Pki, now: int):
        self.pki = pki
        self.now = now
        rogue = nacl.signing.SigningKey.generate()
        self._sks = {ROGUE_ISSUER: bytes(rogue) + bytes(rogue.verify_key)}

    def _sk(self, key_id: str) -> bytes:
        sk = self._sks.get(key_id)
        if sk is None:
            key = self.pki.issuer_signing_key(key_id)
            sk = self._sks[key_id] = bytes(key) + bytes(key.verify_key)
        return sk

    def shape(self, verdict: Verdict, chunk: list[Wallet]) -> list[Wallet]:
        if not chunk:
            return chunk
        # An outcome changes the same fields in every credential: look at the first to
        # learn whether this one needs decoding and re-signing at all (most do not).
        first = Credential.decode(chunk[0].credential)
        changes_body = shape_credential(verdict, first, self.now) != first
        if not changes_body and verdict is not Verdict.BAD_ISSUER_SIGNATURE:
            return chunk
        creds = [
            shape_credential(verdict, Credential.decode(w.credential), self.now) for w in chunk
        ]
        if changes_body:
            bodies = [c.body() for c in creds]
            sigs = sign_batch(bodies, [self._sk(c.issuer_key_id) for c in creds])
            creds = [
                dataclasses.replace(c, signature=sigs[i].tobytes()) for i, c in enumerate(creds)
            ]
        return [
            Wallet(spoil_credential(verdict, c).encode(), w.holder_seed)
            for c, w in zip(creds, chunk)
        ]
