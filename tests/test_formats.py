"""Encodings of credentials, presentations and trust lists (docs/FORMATS.md)."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import msgpack
import nacl.signing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.formats import encoding as enc
from engine.formats.credentials import Credential, Presentation, Purpose
from engine.formats.trustlist import Status, TrustList, TrustListError
from engine.tools import testvectors
from engine.verdicts import MEANINGS, Verdict
from engine.verifier import Verifier

VECTORS = pathlib.Path(__file__).parent / "vectors"


def test_vectors_match_committed_file_byte_for_byte():
    committed = (VECTORS / "essc_v1.json").read_text()
    assert testvectors.dumps() == committed


def test_vectors_verdicts_hold():
    doc = json.loads((VECTORS / "essc_v1.json").read_text())
    root = bytes.fromhex(doc["keys"]["root_public_key"])
    trust = TrustList.decode(bytes.fromhex(doc["trust_list"]["encoded"]), root)
    assert trust.sequence == 7
    for case in doc["verdicts"]:
        (result,) = Verifier(trust).verify([bytes.fromhex(case["presentation"])], case["now_ms"])
        assert result.verdict.name == case["verdict"], case["name"]
        assert int(result.verdict) == case["code"]


def test_vector_signatures_cover_exactly_the_body():
    doc = json.loads((VECTORS / "essc_v1.json").read_text())
    k = doc["keys"]
    cred = Credential.decode(bytes.fromhex(doc["credential"]["encoded"]))
    body = bytes.fromhex(doc["credential"]["body"])
    nacl.signing.VerifyKey(bytes.fromhex(k["issuer_public_key"])).verify(body, cred.signature)
    # The body starts with its domain-separation tag.
    assert msgpack.unpackb(body)[0] == "essc/credential"
    pres = Presentation.decode(bytes.fromhex(doc["presentation"]["encoded"]))
    pbody = bytes.fromhex(doc["presentation"]["body"])
    nacl.signing.VerifyKey(bytes.fromhex(k["holder_public_key"])).verify(pbody, pres.signature)


def _credential(**changes) -> Credential:
    base = Credential(
        issuer_key_id="iss-440000-01",
        card_number="G12345678",
        citizen_digest=bytes(32),
        region="440300",
        channel="hrss-app",
        serial=bytes(16),
        not_before=1,
        not_after=2,
        holder_key=bytes(32),
        signature=bytes(64),
    )
    return dataclasses.replace(base, **changes)


def test_round_trip():
    cred = _credential()
    assert Credential.decode(cred.encode()) == cred
    pres = Presentation(cred, 5, bytes(range(16)), Purpose.IDENTITY, bytes(64))
    back = Presentation.decode(pres.encode())
    assert back.credential == cred
    assert (back.timestamp_ms, back.nonce, back.purpose) == (5, bytes(range(16)), Purpose.IDENTITY)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"card_number": "g12345678"}, "card_number"),
        ({"card_number": "G1234567"}, "card_number"),
        ({"region": "44030"}, "region"),
        ({"region": "040300"}, "region"),
        ({"serial": bytes(15)}, "serial"),
        ({"holder_key": bytes(33)}, "holder_key"),
        ({"citizen_digest": b""}, "citizen_digest"),
        ({"issuer_key_id": ""}, "issuer_key_id"),
        ({"channel": "bad channel"}, "channel"),
        ({"not_before": 3, "not_after": 2}, "not_after"),
        ({"not_before": -1}, "not_before"),
        ({"signature": bytes(63)}, "signature"),
    ],
)
def test_invalid_fields_are_named(changes, field):
    with pytest.raises(enc.FormatError) as info:
        Credential.decode(_credential(**changes).encode())
    assert info.value.field.endswith(field)


def test_wrong_types_and_versions():
    good = msgpack.unpackb(_credential().body())
    for index, value, why in [
        (0, "essc/presentation", "tag"),
        (1, 2, "unsupported format version"),
        (8, True, "unsigned integer"),
        (8, 1.5, "unsigned integer"),
        (4, "x" * 32, "bin"),
        (3, b"G12345678", "str"),
    ]:
        fields = list(good)
        fields[index] = value
        data = enc.pack([enc.pack(fields), bytes(64)])
        with pytest.raises(enc.FormatError, match=why):
            Credential.decode(data)
    with pytest.raises(enc.FormatError, match="array of 11"):
        Credential.decode(enc.pack([enc.pack([*good, 0]), bytes(64)]))
    with pytest.raises(enc.FormatError, match="array of 11"):
        Credential.decode(enc.pack([enc.pack(good[:-1]), bytes(64)]))


def test_non_canonical_encoding_rejected():
    cred = _credential()
    body = cred.body()
    # not_before = 1 re-encoded as uint32 instead of a positive fixint.
    fields = msgpack.unpackb(body)
    head = msgpack.packb(fields[:8], use_bin_type=True)
    assert head[0] == 0x98  # fixarray of 8
    stretched = bytes([0x9B]) + head[1:] + b"\xce\x00\x00\x00\x01"
    stretched += msgpack.packb(fields[9], use_bin_type=True)
    stretched += msgpack.packb(fields[10], use_bin_type=True)
    assert msgpack.unpackb(stretched) == fields  # same value, other bytes
    with pytest.raises(enc.FormatError, match="canonical"):
        Credential.decode(enc.pack([stretched, bytes(64)]))
    with pytest.raises(enc.FormatError, match="trailing"):
        Credential.decode(cred.encode() + b"\x00")


def test_trust_list_signature_sequence_and_errors(pki, tmp_path):
    trust = pki.trust_list
    assert len(trust.issuers) == 31
    other_root = bytes(nacl.signing.SigningKey.generate().verify_key)
    with pytest.raises(TrustListError, match="root signature"):
        TrustList.decode(trust.encode(), other_root)
    newer = dataclasses.replace(trust, sequence=trust.sequence + 1)
    older = dataclasses.replace(trust, sequence=trust.sequence - 1)
    assert newer.may_replace(trust)
    assert not older.may_replace(trust)
    assert trust.may_replace(trust)
    changed = dataclasses.replace(
        trust, channels={**trust.channels, "x": dataclasses.replace(trust.channels["icbc"])}
    )
    assert not changed.may_replace(trust)  # same sequence, different content
    path = tmp_path / "broken.essc"
    path.write_bytes(trust.encode()[:-5])
    with pytest.raises(TrustListError, match=str(path)):
        TrustList.load(path, pki.root_public_key)
    with pytest.raises(TrustListError, match="cannot read"):
        TrustList.load(tmp_path / "missing", pki.root_public_key)


def test_trust_list_statuses_round_trip(pki):
    root = pki.root_signing_key()
    key = next(iter(pki.trust_list.issuers.values()))
    t = dataclasses.replace(
        pki.trust_list,
        issuers={key.key_id: dataclasses.replace(key, status=Status.SUSPENDED)},
    ).signed(root)
    back = TrustList.decode(t.encode(), pki.root_public_key)
    assert back.issuers[key.key_id].status is Status.SUSPENDED


def test_verdict_codes_are_stable():
    # The numeric values are part of the wire protocol: changing one is a breaking change.
    assert {v.name: int(v) for v in Verdict} == {
        "OK": 0,
        "MALFORMED": 1,
        "UNKNOWN_ISSUER": 2,
        "BAD_ISSUER_SIGNATURE": 3,
        "BAD_HOLDER_SIGNATURE": 4,
        "ISSUER_INVALID": 5,
        "UNKNOWN_CHANNEL": 6,
        "CHANNEL_REVOKED": 7,
        "NOT_YET_VALID": 8,
        "EXPIRED": 9,
        "STALE": 10,
        "REVOCATION_DATA_STALE": 11,
        "CARD_REVOKED": 12,
        "CREDENTIAL_REVOKED": 13,
        "REPLAYED": 14,
        "BUSY": 15,
    }
    assert all(MEANINGS[v] for v in Verdict)


def test_formats_doc_lists_every_verdict():
    doc = (VECTORS.parent.parent / "docs" / "FORMATS.md").read_text()
    for v in Verdict:
        assert f"| {int(v)} | `{v.name}` |" in doc


# --- malformed input never raises: property tests -------------------------------------


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=600))
def test_random_bytes_are_malformed(pki, data):
    (result,) = Verifier(pki.trust_list).verify([data])
    assert result.verdict is Verdict.MALFORMED
    assert result.reason


_msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=70),
    lambda children: st.lists(children, max_size=12),
    max_leaves=30,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=_msgpack_values)
def test_random_structures_are_malformed(pki, value):
    data = msgpack.packb(value, use_bin_type=True)
    wrapped = msgpack.packb([msgpack.packb(value, use_bin_type=True), bytes(64)])
    for candidate in (data, wrapped):
        (result,) = Verifier(pki.trust_list).verify([candidate])
        assert result.verdict is Verdict.MALFORMED


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0), flips=st.lists(st.integers(min_value=0), max_size=4))
def test_mutated_presentations_never_raise(pki, scenarios, now_s, cut, flips):
    (good,) = scenarios.presentations([Verdict.OK], now_s * 1000)
    data = bytearray(good)
    for f in flips:
        data[f % len(data)] ^= 1 << (f % 8)
    data = bytes(data[: len(data) - cut % 40]) if cut % 3 == 0 else bytes(data)
    (result,) = Verifier(pki.trust_list).verify([data], now_s * 1000)
    assert isinstance(result.verdict, Verdict)
    if data != good:
        assert result.verdict is not Verdict.OK
    if result.verdict is Verdict.MALFORMED:
        assert result.reason


def test_absurd_lengths_are_malformed(pki):
    huge = msgpack.packb([os.urandom(70_000), bytes(64)], use_bin_type=True)
    (result,) = Verifier(pki.trust_list).verify([huge])
    assert result.verdict is Verdict.MALFORMED
    assert "exceeds" in result.reason
    # A header claiming 4 GiB of bin with nothing behind it.
    (result,) = Verifier(pki.trust_list).verify([b"\x92\xc6\xff\xff\xff\xff"])
    assert result.verdict is Verdict.MALFORMED
