"""The in-process demo: trust material, a few credentials, one batch of every verdict.

``python -m engine demo --dir DIR`` creates the demo PKI in DIR/pki if absent, issues
a handful of credentials into DIR/wallets.essc, verifies a batch holding a
presentation of every verdict class and prints what came back.
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Callable

from engine.replay import MemoryReplayCache
from engine.revocation.source import SetRevocation
from engine.tools import issuance
from engine.tools.pki import Pki, ensure_publisher, init
from engine.tools.scenarios import BUILDABLE, Scenarios
from engine.verdicts import Verdict
from engine.verifier import Verifier

DEMO_WALLETS = 1000


def ensure_pki(directory: pathlib.Path) -> Pki:
    pki_dir = directory / "pki"
    if not (pki_dir / "pki.json").exists():
        init(pki_dir)
        print(f"created the demo trust material in {pki_dir}")
    # Demo material made before revocation data was signed gets its publisher key.
    return ensure_publisher(Pki.open(pki_dir))


def run(directory: str, out: Callable[[str], object] = print) -> int:
    """Returns the number of presentations whose verdict was not the expected one."""
    d = pathlib.Path(directory)
    pki = ensure_pki(d)
    wallet_file = d / "wallets.essc"
    if not wallet_file.exists():
        issuance.issue_to_file(pki, DEMO_WALLETS, wallet_file, progress=False)
        out(f"issued {DEMO_WALLETS} credentials into {wallet_file}")

    now = time.time()
    now_ms = int(now * 1000)
    scenarios = Scenarios(pki, int(now), holders_per_outcome=1)
    revocation = SetRevocation(scenarios.revoked_cards, scenarios.revoked_serials)
    verifier = Verifier(pki.trust_list, revocation=revocation, replay=MemoryReplayCache())

    batch = scenarios.presentations(BUILDABLE, now_ms)
    expected = list(BUILDABLE)
    # The REPLAYED entry's first copy is fresh: send it again to draw REPLAYED.
    replayed = BUILDABLE.index(Verdict.REPLAYED)
    expected[replayed] = Verdict.OK
    batch.append(batch[replayed])
    expected.append(Verdict.REPLAYED)

    start = time.perf_counter()
    results = verifier.verify(batch, now_ms)
    elapsed = time.perf_counter() - start

    # Revocation data older than the limit fails closed, whatever the presentation.
    stale_source = SetRevocation(created_at=now - 2 * 86400)
    stale = Verifier(pki.trust_list, revocation=stale_source)
    (stale_result,) = stale.verify(scenarios.presentations([Verdict.OK], now_ms), now_ms)
    rows = [(e.name, e, r) for e, r in zip(expected, results, strict=True)]
    rows.append(("OK, with 2-day-old revocation data", Verdict.REVOCATION_DATA_STALE, stale_result))

    out("")
    out(f"{'#':>2}  {'presentation built for':<36} {'verdict':<22} {'code':>4}  detail")
    out(f"{'-' * 2}  {'-' * 36} {'-' * 22} {'-' * 4}  {'-' * 30}")
    mismatches = 0
    for k, (label, want, got) in enumerate(rows, 1):
        mark = "" if got.verdict == want else f"  <-- expected {want.name}"
        mismatches += got.verdict != want
        detail = got.reason or ""
        if got.claims:
            c = got.claims
            detail = f"card {c['card_number']} region {c['region']} via {c['channel']}"
        out(
            f"{k:>2}  {label:<36} {got.verdict.name:<22} {int(got.verdict):>4}  {detail[:60]}{mark}"
        )
    out("")
    out(
        f"{len(batch)} presentations verified in one batch in {elapsed * 1000:.1f} ms; "
        f"{'all verdicts as expected' if not mismatches else f'{mismatches} unexpected'}"
    )
    return mismatches


def prepare_serving(directory: pathlib.Path) -> pathlib.Path:
    """Demo material for `serve --demo DIR`; returns DIR/engine.toml (written if absent)."""
    pki = ensure_pki(directory)
    wallet_file = directory / "wallets.essc"
    if not wallet_file.exists():
        issuance.issue_to_file(pki, DEMO_WALLETS, wallet_file, progress=False)
        print(f"issued {DEMO_WALLETS} demo credentials into {wallet_file}")
    snapshot = build_demo_revocation(directory)
    config = directory / "engine.toml"
    if not config.exists():
        config.write_text(
            "# Demo configuration written by `python -m engine serve --demo`.\n"
            "# Every setting and its default: docs/OPERATIONS.md.\n\n"
            '[server]\nhost = "127.0.0.1"\nport = 7700\n\n'
            '[metrics]\nhost = "127.0.0.1"\nport = 9700\n\n'
            "[trust]\n"
            f'root_public_key = "{pki.root_public_key.hex()}"\n'
            f'trust_list = "{pki.trust_list_path.resolve()}"\n\n'
            "[revocation]\n"
            f'snapshot = "{snapshot.resolve()}"\n'
            "# Signed by the demo's revocation publisher key (pki/revocation-publisher.key).\n"
            "require_signature = true\n\n"
            "# The demo's revocation data is rebuilt by `make load`: pick it up.\n"
            "[reload]\nwatch_interval_s = 2.0\n"
        )
        print(f"wrote {config}")
    return config


DEMO_REVOKED = 20  # of the demo wallets: half revoked by card, half by credential


def build_demo_revocation(directory: pathlib.Path) -> pathlib.Path:
    """(Re)builds DIR/revocation.snap so the demo never serves stale revocation data,
    signed with the demo's revocation publisher key.

    Revokes some demo wallets (listed in DIR/revoked.txt) plus every id listed in the
    load-generation corpus, DIR/corpus/revoked.txt, when one exists.
    """
    from engine.formats import wallets
    from engine.formats.credentials import Credential
    from engine.revocation.build import Signer, build_snapshot

    listing = directory / "revoked.txt"
    if not listing.exists():
        lines = ["# demo revocations: cards and credentials of the last demo wallets"]
        held = list(wallets.read(directory / "wallets.essc"))
        for i, w in enumerate(held[-DEMO_REVOKED:]):
            cred = Credential.decode(w.credential)
            lines.append(f"card {cred.card_number}" if i % 2 else f"credential {cred.serial.hex()}")
        listing.write_text("\n".join(lines) + "\n")
    inputs = [listing]
    corpus = directory / "corpus" / "revoked.txt"
    if corpus.exists():
        inputs.append(corpus)
    snapshot = directory / "revocation.snap"
    sequence = 1
    if snapshot.exists():
        from engine.revocation.format import read_header

        try:
            sequence = read_header(snapshot).sequence + 1
        except Exception:
            sequence = 1
    pki = ensure_pki(directory)
    build_snapshot(
        snapshot, inputs, sequence=sequence, signer=Signer.from_file(pki.publisher_key_path)
    )
    return snapshot
