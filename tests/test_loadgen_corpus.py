"""The load corpus: outcome mix, revocation input, and presentations that draw their verdicts."""

from __future__ import annotations

import json
import time

import pytest

from engine.formats.credentials import Credential
from engine.replay import MemoryReplayCache
from engine.revocation.source import SetRevocation
from engine.verdicts import Verdict
from engine.verifier import Verifier
from loadgen import corpus as corpus_mod
from loadgen.sources import ChunkMaker, frame_templates


def test_allocation_follows_the_mix_with_one_cardholder_at_least():
    counts = corpus_mod.allocate(1000, corpus_mod.DEFAULT_MIX)
    assert sum(counts.values()) == 1000
    assert set(counts) == set(corpus_mod.DEFAULT_MIX)
    assert counts["valid"] == 880 and counts["card-revoked"] == 20 and counts["stale"] == 10
    tiny = corpus_mod.allocate(12, corpus_mod.DEFAULT_MIX)
    assert sum(tiny.values()) == 12 and min(tiny.values()) == 1
    with pytest.raises(corpus_mod.CorpusError, match="at least 10"):
        corpus_mod.allocate(9, corpus_mod.DEFAULT_MIX)


def test_mix_parsing():
    assert corpus_mod.parse_mix("valid=90, expired=10,OK=5") == {"valid": 5.0, "expired": 10.0}
    for bad in ("valid", "nonsense=1", "valid=-1", "valid=x", "valid=0"):
        with pytest.raises(corpus_mod.CorpusError):
            corpus_mod.parse_mix(bad)


@pytest.fixture(scope="module")
def every_outcome(pki, tmp_path_factory):
    """A corpus with two cardholders for every outcome."""
    out = tmp_path_factory.mktemp("corpus-all")
    mix = dict.fromkeys(corpus_mod.OUTCOMES, 1.0)
    return corpus_mod.build(pki.directory, 2 * len(mix), out, mix, seed=7)


def test_corpus_files_and_revocation_input(every_outcome):
    c = every_outcome
    manifest = json.loads((c.directory / "corpus.json").read_text())
    assert manifest["cards"] == 28
    assert [o.name for o in c.outcomes] == list(corpus_mod.OUTCOMES)
    assert all(o.cards == 2 for o in c.outcomes)
    assert c.outcome("replayed").expect is Verdict.REPLAYED
    assert c.outcome("expired").expect is Verdict.EXPIRED
    # Every wallet file is private, and card numbers are unique across the outcomes.
    cards = []
    for o in c.outcomes:
        assert (c.directory / o.file).stat().st_mode & 0o777 == 0o600
        cards += [Credential.decode(w.credential).card_number for w in c.wallets(o.name)]
    assert len(cards) == len(set(cards)) == 28
    # The revocation input names exactly the revoked outcomes' cards and serials.
    revoked_cards, revoked_serials = c.revoked()
    assert sorted(revoked_cards) == sorted(
        Credential.decode(w.credential).card_number for w in c.wallets("card-revoked")
    )
    assert sorted(revoked_serials) == sorted(
        Credential.decode(w.credential).serial for w in c.wallets("credential-revoked")
    )
    text = c.revocation_path.read_text()
    assert text.startswith("#") and f"card {revoked_cards[0]}\n" in text


def test_every_outcome_draws_its_verdict(pki, every_outcome):
    """Chunks as the signing workers make them, verified in process: each presentation
    gets the verdict it was built for, and a replayed one's copies OK then REPLAYED."""
    c = every_outcome
    weights = dict.fromkeys(c.names, 1.0)
    maker = ChunkMaker(c, weights, batch=4, chunk_presentations=512)
    chunk = maker.make()
    assert chunk.presentations == 512 and len(chunk.frames) == 128
    cards, serials = c.revoked()
    verifier = Verifier(
        pki.trust_list,
        revocation=SetRevocation([x.encode() for x in cards], serials),
        replay=MemoryReplayCache(),
    )
    presentations = _presentations(chunk)
    results = verifier.verify(presentations, int(time.time() * 1000))
    seen = set()
    for item, r in enumerate(results):
        name = maker.names[chunk.outcome[item]]
        seen.add(name)
        assert r.verdict == chunk.expect[item], (name, r.verdict.name, r.reason)
        if chunk.pair[item]:
            assert name == "replayed"
    assert seen == set(corpus_mod.OUTCOMES)  # 512 draws of 14 equally likely outcomes
    pairs = [p for p in chunk.pair if p]
    assert pairs and all(pairs.count(p) == 2 for p in pairs)


def _presentations(chunk) -> list[bytes]:
    """The presentations back out of the request frames (what the server will read)."""
    import msgpack

    out = []
    for frame in chunk.frames:
        msg = msgpack.unpackb(frame[4:] + bytes(8), raw=False)
        out += msg["presentations"] if "presentations" in msg else [msg["presentation"]]
    return out


def test_frame_templates_take_the_id_last():
    import msgpack

    (frame,) = frame_templates([b"abc"], 1)
    full = frame + (7).to_bytes(8, "big")
    assert int.from_bytes(full[:4], "big") == len(full) - 4
    assert msgpack.unpackb(full[4:], raw=False) == {
        "type": "verify",
        "presentation": b"abc",
        "id": 7,
    }
    (frame,) = frame_templates([b"a", b"b"], 2)
    msg = msgpack.unpackb(frame[4:] + (9).to_bytes(8, "big"), raw=False)
    assert msg == {"type": "verify_batch", "presentations": [b"a", b"b"], "id": 9}
