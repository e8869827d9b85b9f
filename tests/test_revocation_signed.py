"""Signed revocation data: trust list v2, the manifest, the rollback state, the index
(docs/FORMATS.md, sections 2 and 8.7-8.10)."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import struct

import nacl.signing
import pytest
from revocation_helpers import delta, reseal, snapshot, write_list

from engine.formats import encoding as enc
from engine.formats.trustlist import PublisherKey, Status, TrustList
from engine.revocation.accepted import AcceptedState
from engine.revocation.build import Signer
from engine.revocation.format import RevocationFileError, map_file, read_header, read_manifest
from engine.revocation.publication import INDEX_FILE, Index, PublicationError, publish, read_index
from engine.revocation.store import RevocationStore, SignaturePolicy
from engine.tools import testvectors
from engine.tools.pki import init
from engine.verdicts import Verdict
from engine.verifier import Verifier, VerifierConfig

VECTORS = pathlib.Path(__file__).parent / "vectors"
CARDS = [b"G12345678", b"H00000001"]


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """A PKI of this module's own (with its publisher key) and its signer."""
    pki = init(tmp_path_factory.mktemp("signed") / "pki")
    return pki, Signer.from_file(pki.publisher_key_path)


def _store(snap, deltas=(), *, publishers, require=True, **kw):
    return RevocationStore(snap, deltas, signatures=SignaturePolicy(publishers, require), **kw)


# --- the trust list ---------------------------------------------------------------------


def test_trust_list_v2_carries_publisher_keys_and_v1_still_decodes(own):
    pki, _ = own
    trust = pki.trust_list
    assert trust.version == 2 and list(trust.publishers) == ["rev-pub-01"]
    again = TrustList.decode(trust.encode(), pki.root_public_key)
    assert again.publishers == trust.publishers
    root = pki.root_signing_key()
    v1 = dataclasses.replace(trust, version=1, publishers={}).signed(root)
    old = TrustList.decode(v1.encode(), pki.root_public_key)
    assert old.version == 1 and old.publishers == {} and old.issuers == trust.issuers
    with pytest.raises(ValueError, match="cannot hold publisher keys"):
        dataclasses.replace(trust, version=1).body()


def test_trust_list_of_an_unknown_version_is_refused(own):
    pki, _ = own
    trust = dataclasses.replace(pki.trust_list, version=3).signed(pki.root_signing_key())
    with pytest.raises(enc.FormatError, match="unsupported version 3"):
        TrustList.decode(trust.encode(), pki.root_public_key)


def test_v2_vectors_match_committed_file_and_verify():
    committed = (VECTORS / "essc_v2.json").read_text()
    assert testvectors.dumps(2) == committed
    doc = json.loads(committed)
    root = bytes.fromhex(doc["keys"]["root_public_key"])
    trust = TrustList.decode(bytes.fromhex(doc["trust_list"]["encoded"]), root)
    assert trust.version == 2 and trust.publishers["rev-pub-01"].public_key == bytes.fromhex(
        doc["keys"]["publisher_public_key"]
    )


def test_v2_vector_files_load_and_answer(tmp_path):
    doc = json.loads((VECTORS / "essc_v2.json").read_text())
    root = bytes.fromhex(doc["keys"]["root_public_key"])
    trust = TrustList.decode(bytes.fromhex(doc["trust_list"]["encoded"]), root)
    paths = {}
    for name in ("snapshot", "delta"):
        paths[name] = tmp_path / name
        paths[name].write_bytes(bytes.fromhex(doc["revocation"][name]["file"]))
        manifest = read_manifest(paths[name])
        assert manifest.digest.hex() == doc["revocation"][name]["manifest_digest"]
        assert manifest.body.hex() == doc["revocation"][name]["manifest_body"]
    assert read_manifest(paths["delta"]).base_digest == read_manifest(paths["snapshot"]).digest
    # The vectors' data is from 2026-01-01: load it for what it says, not its age.
    store = _store(paths["snapshot"], [paths["delta"]], publishers=trust.publishers)
    assert store.is_revoked("card", b"G87654321")
    assert not store.is_revoked("card", b"G12345678")  # reinstated by the delta
    assert store.is_revoked("credential", bytes(16))


# --- signed files -----------------------------------------------------------------------


def test_signed_snapshot_and_delta_load_and_are_described(own, tmp_path):
    pki, signer = own
    snap = snapshot(tmp_path, "s.snap", cards=CARDS[:1], sequence=5, signer=signer)
    d = delta(tmp_path, "d.delta", snap, add=(CARDS[1:], ()), signer=signer)
    assert read_header(snap).version == 2 and map_file(d).manifest.base_sequence == 5
    store = _store(snap, [d], publishers=pki.trust_list.publishers)
    assert store.contains("card", CARDS).tolist() == [True, True]
    assert store.unsigned == ()
    m = read_manifest(d)
    assert store.expires_at == m.expires_at == m.created_at + signer.expires_in_s
    assert store.describe()["manifest"]["sequence"] == 5


def test_unsigned_files_are_refused_unless_allowed(own, tmp_path):
    pki, _ = own
    snap = snapshot(tmp_path, "u.snap", cards=CARDS)
    refusal = r"not signed \(format version 1\), and revocation.require_signature is on"
    with pytest.raises(RevocationFileError, match=refusal):
        _store(snap, publishers=pki.trust_list.publishers)
    store = _store(snap, publishers=pki.trust_list.publishers, require=False)
    assert store.unsigned == (str(snap),) and store.expires_at is None
    assert store.is_revoked("card", CARDS[0])


@pytest.mark.parametrize("section", [0, 1, 2])
def test_a_tampered_section_with_its_crc_recomputed_is_refused(own, tmp_path, section):
    _, signer = own
    snap = snapshot(tmp_path, "t.snap", cards=CARDS, signer=signer)
    offset = read_header(snap).sections[section][0]

    def flip(data):
        data[offset] ^= 0x01

    reseal(snap, flip)
    # The CRC passes (it was recomputed): only the signed digest tells.
    with pytest.raises(RevocationFileError, match=rf"section {section} does not match its SHA-256"):
        map_file(snap)


def test_a_header_field_changed_with_its_crc_recomputed_is_refused(own, tmp_path):
    _, signer = own
    snap = snapshot(tmp_path, "h.snap", cards=CARDS, signer=signer, sequence=3)

    def fresher(data):  # created_at, at offset 48: stale data made to look fresh
        data[48:56] = struct.pack("<q", struct.unpack_from("<q", data, 48)[0] + 86400)

    reseal(snap, fresher)
    with pytest.raises(RevocationFileError, match=r"header created_at .* differs from the signed"):
        map_file(snap)


def test_a_file_signed_by_an_unknown_key_is_refused(own, tmp_path):
    pki, _ = own
    impostor = Signer("rev-pub-01", nacl.signing.SigningKey.generate())
    snap = snapshot(tmp_path, "x.snap", cards=CARDS, signer=impostor)
    map_file(snap)  # whole and consistent: only the signature is wrong
    with pytest.raises(RevocationFileError, match="does not verify"):
        _store(snap, publishers=pki.trust_list.publishers)
    stranger = Signer("rev-pub-99", nacl.signing.SigningKey.generate())
    snap = snapshot(tmp_path, "y.snap", cards=CARDS, signer=stranger)
    with pytest.raises(RevocationFileError, match="not a revocation publisher key"):
        _store(snap, publishers=pki.trust_list.publishers)


def test_a_revoked_publisher_key_signs_nothing(own, tmp_path):
    pki, signer = own
    snap = snapshot(tmp_path, "r.snap", cards=CARDS, signer=signer)
    key = pki.trust_list.publishers["rev-pub-01"]
    revoked = {"rev-pub-01": dataclasses.replace(key, status=Status.REVOKED)}
    with pytest.raises(RevocationFileError, match="revoked or not valid"):
        _store(snap, publishers=revoked)
    expired = {"rev-pub-01": dataclasses.replace(key, not_after=key.not_before)}
    with pytest.raises(RevocationFileError, match="not valid at the data's creation"):
        _store(snap, publishers=expired)


def test_a_signed_delta_names_its_snapshot_by_digest(own, tmp_path):
    pki, signer = own
    seed = 12345
    a = snapshot(tmp_path, "a.snap", cards=CARDS[:1], sequence=9, seed=seed, signer=signer)
    b = snapshot(tmp_path, "b.snap", cards=CARDS[1:], sequence=9, seed=seed, signer=signer)
    on_b = delta(tmp_path, "b.delta", b, add=((b"J00000009",), ()), signer=signer)
    # Same sequence, same seed: only the digest tells a delta for b from one for a.
    with pytest.raises(RevocationFileError, match="names another snapshot"):
        _store(a, [on_b], publishers=pki.trust_list.publishers)
    assert _store(b, [on_b], publishers=pki.trust_list.publishers).sequence == 10


def test_signed_deltas_need_a_signed_snapshot(own, tmp_path):
    from engine.revocation.input import RevocationInputError

    _, signer = own
    unsigned = snapshot(tmp_path, "n.snap", cards=CARDS)
    with pytest.raises(RevocationInputError, match="is not signed"):
        delta(tmp_path, "n.delta", unsigned, signer=signer)


# --- expiry -------------------------------------------------------------------------------


def test_expired_signed_data_is_stale_whatever_the_age_limit(own, tmp_path, now_s):
    from engine.tools.scenarios import Scenarios

    pki, _ = own
    short = Signer("rev-pub-01", pki_signing_key(pki), expires_in_s=60)
    snap = snapshot(tmp_path, "e.snap", cards=CARDS, signer=short, created_at=now_s - 120)
    store = _store(snap, publishers=pki.trust_list.publishers)
    assert store.expires_at == now_s - 60
    scenarios = Scenarios(pki, now_s, holders_per_outcome=1)
    (ok,) = scenarios.presentations([Verdict.OK], now_s * 1000)
    config = VerifierConfig(max_revocation_age_s=86400.0)
    (result,) = Verifier(pki.trust_list, revocation=store, config=config).verify([ok], now_s * 1000)
    assert result.verdict is Verdict.REVOCATION_DATA_STALE
    assert "expired 60 s ago" in result.reason
    # Before the expiry the same data answers.
    earlier = (now_s - 90) * 1000
    (ok,) = scenarios.presentations([Verdict.OK], earlier)
    (result,) = Verifier(pki.trust_list, revocation=store, config=config).verify([ok], earlier)
    assert result.verdict is Verdict.OK
    # fail_open: the operator prefers old data to none, expiry or age alike.
    opened = dataclasses.replace(config, revocation_fail_open=True)
    (ok,) = scenarios.presentations([Verdict.OK], now_s * 1000)
    (result,) = Verifier(pki.trust_list, revocation=store, config=opened).verify([ok], now_s * 1000)
    assert result.verdict is Verdict.OK


def pki_signing_key(pki):
    from engine.formats import keys

    return keys.read_private(pki.publisher_key_path)[0]


# --- the rollback state ---------------------------------------------------------------------


def test_older_data_is_refused_after_a_restart_unless_forced(own, tmp_path):
    pki, signer = own
    state = AcceptedState(tmp_path / "state" / "accepted.json")
    pubs = pki.trust_list.publishers
    old = snapshot(tmp_path, "old.snap", cards=CARDS[:1], sequence=4, signer=signer)
    new = snapshot(tmp_path, "new.snap", cards=CARDS, sequence=6, signer=signer)
    d7 = delta(tmp_path, "7.delta", new, signer=signer, sequence=7)
    store = _store(new, [d7], publishers=pubs, accepted=state)
    assert (state.read().snapshot_sequence, state.read().sequence) == (6, 7)
    assert state.read().snapshot_digest == read_manifest(new).digest.hex()
    del store
    # A restart offered older data: an older snapshot, or the snapshot without its delta.
    with pytest.raises(RevocationFileError, match="snapshot 4 is older than snapshot 6"):
        _store(old, publishers=pubs, accepted=state)
    with pytest.raises(RevocationFileError, match="sequence 6 is older than sequence 7"):
        _store(new, publishers=pubs, accepted=state)
    assert state.read().sequence == 7  # refusals record nothing
    # The operator's deliberate roll-back, recorded.
    store = _store(old, publishers=pubs, accepted=state, allow_rollback=True)
    assert store.sequence == 4 and state.read().sequence == 4


def test_a_reload_below_the_state_is_refused_and_newer_data_recorded(own, tmp_path):
    pki, signer = own
    state = AcceptedState(tmp_path / "accepted.json")
    pubs = pki.trust_list.publishers
    s5 = snapshot(tmp_path, "5.snap", cards=CARDS, sequence=5, signer=signer)
    store = _store(s5, publishers=pubs, accepted=state)
    d6 = delta(tmp_path, "6.delta", s5, signer=signer)
    store.reload(s5, [d6])
    assert state.read().sequence == 6
    with pytest.raises(RevocationFileError, match="older"):
        store.reload(s5, [])
    assert store.sequence == 6


def test_a_damaged_state_file_is_an_error_not_a_fresh_start(own, tmp_path):
    pki, signer = own
    path = tmp_path / "accepted.json"
    path.write_text("{not json")
    snap = snapshot(tmp_path, "s.snap", cards=CARDS, signer=signer)
    with pytest.raises(RevocationFileError, match="not JSON"):
        _store(snap, publishers=pki.trust_list.publishers, accepted=AcceptedState(path))


# --- the publication index --------------------------------------------------------------------


def test_publish_writes_files_then_a_signed_index(own, tmp_path):
    pki, signer = own
    pub = tmp_path / "pub"
    ids = write_list(tmp_path / "ids.txt", cards=CARDS[:1])
    more = write_list(tmp_path / "more.txt", cards=CARDS[1:])
    first = publish(pub, signer, snapshot=[ids])
    assert (first.entry.kind, first.entry.sequence) == ("snapshot", 1)
    second = publish(pub, signer, add=[more])
    third = publish(pub, signer)  # an empty delta: still current
    index = read_index(pub, pki.trust_list.publishers)
    assert index == third.index and index.sequence == 3
    assert [e.name for e in index.deltas] == [second.entry.name, third.entry.name]
    store = _store(
        pub / index.snapshot.name,
        [pub / e.name for e in index.deltas],
        publishers=pki.trust_list.publishers,
    )
    assert store.contains("card", CARDS).tolist() == [True, True] and store.sequence == 3
    # A new snapshot starts a new generation; the previous index's files stay one more.
    fourth = publish(pub, signer, snapshot=[ids, more])
    assert fourth.index.deltas == () and fourth.removed == []
    fifth = publish(pub, signer)
    assert sorted(fifth.removed) == sorted(e.name for e in third.index.entries)


def test_an_index_signed_by_another_key_or_tampered_is_refused(own, tmp_path):
    pki, signer = own
    pub = tmp_path / "pub"
    publish(pub, signer, snapshot=[write_list(tmp_path / "ids.txt", cards=CARDS)])
    good = (pub / INDEX_FILE).read_bytes()
    index = Index.decode(good, pki.trust_list.publishers)
    forged = index.signed(nacl.signing.SigningKey.generate()).encode()
    with pytest.raises(PublicationError, match="does not verify"):
        Index.decode(forged, pki.trust_list.publishers)
    body = bytearray(good)
    body[len(body) // 2] ^= 1
    with pytest.raises(PublicationError):
        Index.decode(bytes(body), pki.trust_list.publishers)
    bad_name = dataclasses.replace(
        index, snapshot=dataclasses.replace(index.snapshot, name="../etc/passwd")
    ).signed(signer.key)
    with pytest.raises(PublicationError, match="not a plain file name"):
        Index.decode(bad_name.encode(), pki.trust_list.publishers)


def test_a_delta_cannot_be_published_before_a_snapshot(own, tmp_path):
    _, signer = own
    with pytest.raises(PublicationError, match="publish a snapshot first"):
        publish(tmp_path / "empty", signer)


def test_inspect_checks_the_signature(own, tmp_path, capsys):
    from engine.cli.main import main

    pki, signer = own
    snap = snapshot(tmp_path, "i.snap", cards=CARDS, signer=signer)
    assert main(["revocation", "inspect", "--json", "--pki", str(pki.directory), str(snap)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["signature"] == "ok (revocation publisher key rev-pub-01)"
    assert doc["manifest"]["sections"] == "ok (every SHA-256 matches)"
    other = init(tmp_path / "other-pki")
    assert main(["revocation", "inspect", "--pki", str(other.directory), str(snap)]) == 2
    assert "does not verify" in capsys.readouterr().err


def test_publisher_key_rotation_through_the_trust_list(own, tmp_path):
    """A second publisher key certified in the next list signs; the first, revoked, no more."""
    pki, signer = own
    new_key = nacl.signing.SigningKey.generate()
    trust = pki.trust_list
    publishers = {
        "rev-pub-01": dataclasses.replace(trust.publishers["rev-pub-01"], status=Status.REVOKED),
        "rev-pub-02": PublisherKey("rev-pub-02", bytes(new_key.verify_key), 0, 2**40),
    }
    rotated = dataclasses.replace(trust, sequence=trust.sequence + 1, publishers=publishers)
    old = snapshot(tmp_path, "o.snap", cards=CARDS, signer=signer)
    new = snapshot(tmp_path, "n.snap", cards=CARDS, signer=Signer("rev-pub-02", new_key))
    assert _store(new, publishers=rotated.publishers).is_revoked("card", CARDS[0])
    with pytest.raises(RevocationFileError, match="revoked"):
        _store(old, publishers=rotated.publishers)


def test_data_signed_by_a_key_the_new_trust_list_revokes_stops_answering(own, tmp_path, now_s):
    from engine.tools.scenarios import Scenarios

    pki, signer = own
    snap = snapshot(tmp_path, "d.snap", cards=CARDS, signer=signer)
    store = _store(snap, publishers=pki.trust_list.publishers)
    scenarios = Scenarios(pki, now_s, holders_per_outcome=1)
    verifier = Verifier(pki.trust_list, revocation=store)
    (ok,) = scenarios.presentations([Verdict.OK], now_s * 1000)
    assert verifier.verify([ok], now_s * 1000)[0].verdict is Verdict.OK
    key = pki.trust_list.publishers["rev-pub-01"]
    revoked = {"rev-pub-01": dataclasses.replace(key, status=Status.REVOKED)}
    assert "no longer trusted" in store.recheck(SignaturePolicy(revoked))
    (ok,) = scenarios.presentations([Verdict.OK], now_s * 1000)
    (result,) = verifier.verify([ok], now_s * 1000)
    assert result.verdict is Verdict.REVOCATION_DATA_STALE and "no longer trusted" in result.reason
    # Even fail_open does not use data the trust list disowns.
    opened = Verifier(
        pki.trust_list, revocation=store, config=VerifierConfig(revocation_fail_open=True)
    )
    (ok,) = scenarios.presentations([Verdict.OK], now_s * 1000)
    assert opened.verify([ok], now_s * 1000)[0].verdict is Verdict.REVOCATION_DATA_STALE
    # Trusted again (the key restored): answers again.
    assert store.recheck(SignaturePolicy(pki.trust_list.publishers)) is None
    (ok,) = scenarios.presentations([Verdict.OK], now_s * 1000)
    assert verifier.verify([ok], now_s * 1000)[0].verdict is Verdict.OK


def test_a_pki_made_before_publisher_keys_gets_one(tmp_path):
    """Demo material from before signed revocation data (make run on an old demo/)."""
    from engine.formats.files import write_atomically
    from engine.tools.pki import PUBLISHER_PUBLIC_FILE, Pki, ensure_publisher

    pki = init(tmp_path / "pki")
    pki.publisher_key_path.unlink()
    (pki.directory / PUBLISHER_PUBLIC_FILE).unlink()
    old = dataclasses.replace(pki.trust_list, version=1, publishers={})
    write_atomically(pki.trust_list_path, old.signed(pki.root_signing_key()).encode())
    before = Pki.open(pki.directory)
    assert before.trust_list.version == 1
    after = ensure_publisher(before)
    assert after.trust_list.sequence == before.trust_list.sequence + 1
    assert after.trust_list.version == 2 and list(after.trust_list.publishers) == ["rev-pub-01"]
    signer = Signer.from_file(after.publisher_key_path)
    snap = snapshot(tmp_path, "s.snap", cards=CARDS, signer=signer)
    assert _store(snap, publishers=after.trust_list.publishers).is_revoked("card", CARDS[0])
    assert ensure_publisher(after) is after  # nothing more to do
