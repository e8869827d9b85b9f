"""atheris harness: the signed objects of revocation distribution, the parsers that see
bytes from the network (the publication index) and from files (the revocation
manifest, the trust list with its publisher keys): engine/revocation/publication.py
``Index``, engine/revocation/manifest.py ``Manifest``, engine/formats/trustlist.py.

Input: byte 0 picks the parser (0 index, 1 manifest, 2 trust list), the rest is the
object.  Each must either refuse with its documented error (PublicationError,
ManifestError, FormatError / TrustListError) or decode to an object that encodes back
to exactly the bytes it came from (canonical encoding: one byte string per value), with
its entries consistent (an index's names are plain file names, deltas in order).  A
signature is then checked against a fixed key, which must not verify a forgery.
"""

from __future__ import annotations

import atheris
import common

common.load_core()

with atheris.instrument_imports(include=["engine"]):
    import nacl.signing

    from engine.formats import encoding as enc
    from engine.formats.trustlist import PublisherKey, TrustList, TrustListError
    from engine.revocation.manifest import Manifest, ManifestError
    from engine.revocation.publication import NAME_RE, Index, PublicationError

KEY = nacl.signing.SigningKey(bytes(32))
PUBLISHERS = {
    "rev-pub-01": PublisherKey("rev-pub-01", bytes(KEY.verify_key), 0, 2**40),
}


def index(data: bytes) -> None:
    try:
        ix = Index.decode_unverified(data)
    except PublicationError:
        return
    common.check(ix.encode() == data, "index accepted in a non-canonical form", data)
    for e in ix.entries:
        common.check(bool(NAME_RE.match(e.name)) and "/" not in e.name, "index name", data)
    seqs = [e.sequence for e in ix.entries]
    common.check(seqs == sorted(set(seqs)) and ix.sequence == seqs[-1], "index order", data)
    try:
        Index.decode(data, PUBLISHERS)
    except PublicationError:
        return
    # Verified: only what KEY signed (the seeds) can get here.
    common.check(KEY.sign(ix.body).signature == ix.signature, "index forgery verified", data)


def manifest(data: bytes) -> None:
    try:
        m = Manifest.decode(data)
    except ManifestError:
        return
    common.check(m.encode() == data, "manifest accepted in a non-canonical form", data)
    common.check(len(m.base_digest) in (0, 32), "base digest length", data)
    try:
        m.verify(PUBLISHERS)
    except ManifestError:
        return
    common.check(KEY.sign(m.body).signature == m.signature, "manifest forgery verified", data)


def trust_list(data: bytes) -> None:
    try:
        t = TrustList.decode_unverified(data)
    except (enc.FormatError, TrustListError):
        return
    common.check(t.encode() == data, "trust list accepted in a non-canonical form", data)
    common.check(t.version in (1, 2), "trust list version", data)
    common.check(t.version == 2 or not t.publishers, "publishers in a version 1 list", data)


PARSERS = (index, manifest, trust_list)


def test_one(data: bytes) -> None:
    if not data:
        return
    PARSERS[data[0] % len(PARSERS)](data[1:])


if __name__ == "__main__":
    common.fuzz(test_one)
