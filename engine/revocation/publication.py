"""The national platform's publication point: signed revocation files and their index.

A publication directory holds the current snapshot, the deltas on top of it and
``index.essc``, the signed index that names them with their sizes and digests
(docs/FORMATS.md, section 8.8).  Any static web server or object store can serve the
directory; nodes poll the index (engine.revocation.sync) and fetch what is new.

``publish`` is the platform's one command (``python -m engine revocation publish``):
it builds the next snapshot or delta, signs it, writes it beside the others, and
replaces the index last, so a reader always finds every file the index names.  Files
no index of the last two generations names are removed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import re
import time
from collections.abc import Mapping, Sequence

import nacl.signing

from engine.errors import EsscError
from engine.formats import encoding as enc
from engine.formats.files import write_atomically
from engine.formats.trustlist import PublisherKey
from engine.revocation.build import DEFAULT_FPR, Signer, build_delta, build_snapshot
from engine.revocation.format import read_manifest
from engine.revocation.manifest import ManifestError, verify_signed

INDEX_FILE = "index.essc"
INDEX_TAG = "essc/revocation-index"
INDEX_VERSION = 1
MAX_INDEX_BYTES = 1 << 20
MAX_DELTAS = 4096  # a publisher past this many deltas on one snapshot publishes a snapshot
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # a file name, never a path


class PublicationError(EsscError):
    """An index or publication directory that cannot be used; says which check failed."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """One file the index names."""

    name: str  # file name in the publication directory
    kind: str  # "snapshot" or "delta"
    sequence: int
    size: int  # bytes
    sha256: bytes  # of the whole file
    manifest_digest: bytes  # the file's signed manifest (Manifest.digest)

    def encode_fields(self) -> list[object]:
        return [self.name, self.kind, self.sequence, self.size, self.sha256, self.manifest_digest]


@dataclasses.dataclass(frozen=True)
class Index:
    publisher_key_id: str
    published_at: int  # unix seconds
    expires_at: int  # a node refuses an index past this (a frozen mirror)
    sequence: int  # the newest sequence it names
    snapshot: Entry
    deltas: tuple[Entry, ...]
    body: bytes = dataclasses.field(default=b"", compare=False, repr=False)
    signature: bytes = dataclasses.field(default=b"", compare=False, repr=False)

    @property
    def entries(self) -> tuple[Entry, ...]:
        return (self.snapshot, *self.deltas)

    def encode_body(self) -> bytes:
        return enc.pack(
            [
                INDEX_TAG,
                INDEX_VERSION,
                self.publisher_key_id,
                self.published_at,
                self.expires_at,
                self.sequence,
                self.snapshot.encode_fields(),
                [d.encode_fields() for d in self.deltas],
            ]
        )

    def signed(self, key: nacl.signing.SigningKey) -> Index:
        body = self.encode_body()
        return dataclasses.replace(self, body=body, signature=key.sign(body).signature)

    def encode(self) -> bytes:
        assert self.body and self.signature, "sign the index first"
        return enc.pack([self.body, self.signature])

    @classmethod
    def decode(cls, data: bytes, publishers: Mapping[str, PublisherKey]) -> Index:
        """Decodes and verifies against the trust list's publisher keys; PublicationError."""
        index = cls._decode(data)
        try:
            verify_signed(
                publishers, index.publisher_key_id, index.published_at, index.body,
                index.signature, "index ", "the index's publication time",
            )  # fmt: skip
        except ManifestError as e:
            raise PublicationError(str(e)) from None
        return index

    @classmethod
    def decode_unverified(cls, data: bytes) -> Index:
        """Without checking the signature: for inspection tools only."""
        return cls._decode(data)

    @classmethod
    def _decode(cls, data: bytes) -> Index:
        try:
            outer = enc.array(enc.unpack(data, "index", max_bytes=MAX_INDEX_BYTES), "index", 2)
            body = enc.binary(outer[0], "index.body")
            signature = enc.binary(outer[1], "index.signature", 64)
            f = enc.array(
                enc.unpack(body, "index.body", max_bytes=MAX_INDEX_BYTES), "index.body", 8
            )
            enc.tag(f[0], "index.tag", INDEX_TAG)
            enc.version(f[1], "index.version", INDEX_VERSION)
            snapshot = _entry(f[6], "index.snapshot")
            if type(f[7]) is not list or len(f[7]) > MAX_DELTAS:
                raise enc.FormatError("index.deltas", f"expected an array of at most {MAX_DELTAS}")
            deltas = tuple(_entry(d, f"index.deltas[{i}]") for i, d in enumerate(f[7]))
            index = cls(
                publisher_key_id=enc.identifier(f[2], "index.publisher_key_id"),
                published_at=enc.uint(f[3], "index.published_at"),
                expires_at=enc.uint(f[4], "index.expires_at"),
                sequence=enc.uint(f[5], "index.sequence"),
                snapshot=snapshot,
                deltas=deltas,
                body=body,
                signature=signature,
            )
        except enc.FormatError as e:
            raise PublicationError(f"index does not decode: {e}") from None
        _check_entries(index)
        return index


def _entry(value: object, field: str) -> Entry:
    g = enc.array(value, field, 6)
    name = enc.text(g[0], f"{field}.name")
    if not NAME_RE.match(name) or name == INDEX_FILE:
        raise enc.FormatError(f"{field}.name", f"not a plain file name: {name!r}")
    kind = enc.text(g[1], f"{field}.kind")
    if kind not in ("snapshot", "delta"):
        raise enc.FormatError(f"{field}.kind", f"unknown kind {kind!r}")
    return Entry(
        name=name,
        kind=kind,
        sequence=enc.uint(g[2], f"{field}.sequence"),
        size=enc.uint(g[3], f"{field}.size"),
        sha256=enc.binary(g[4], f"{field}.sha256", 32),
        manifest_digest=enc.binary(g[5], f"{field}.manifest_digest", 32),
    )


def _check_entries(index: Index) -> None:
    """The entries must make sense together: a snapshot, then deltas in increasing
    sequence above it, distinct names, and the index's sequence the newest."""
    if index.snapshot.kind != "snapshot":
        raise PublicationError("index: its snapshot entry is not a snapshot")
    last = index.snapshot.sequence
    names = {index.snapshot.name}
    for d in index.deltas:
        if d.kind != "delta":
            raise PublicationError(f"index: delta entry {d.name!r} is a {d.kind}")
        if d.sequence <= last:
            raise PublicationError(f"index: delta {d.name!r} is not after the entry before it")
        if d.name in names:
            raise PublicationError(f"index: {d.name!r} is named twice")
        names.add(d.name)
        last = d.sequence
    if index.sequence != last:
        raise PublicationError(f"index: sequence {index.sequence}, but its newest file is {last}")


# --- the platform's side -------------------------------------------------------------------


def file_sha256(path: str | os.PathLike[str]) -> tuple[int, bytes]:
    """(size, SHA-256) of a whole file, read in slices."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
            size += len(chunk)
    return size, h.digest()


def read_index(
    directory: str | os.PathLike[str], publishers: Mapping[str, PublisherKey]
) -> Index | None:
    """The directory's index, verified; None where there is none yet."""
    path = pathlib.Path(directory) / INDEX_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise PublicationError(f"{path}: cannot read: {e.strerror}") from None
    try:
        return Index.decode(data, publishers)
    except PublicationError as e:
        raise PublicationError(f"{path}: {e}") from None


def _entry_for(directory: pathlib.Path, name: str) -> Entry:
    path = directory / name
    manifest = read_manifest(path)
    size, digest = file_sha256(path)
    return Entry(name, manifest.kind, manifest.sequence, size, digest, manifest.digest)


@dataclasses.dataclass
class Published:
    index: Index
    entry: Entry  # the file this publication added
    removed: list[str]  # files no longer named, deleted


def publish(
    directory: str | os.PathLike[str],
    signer: Signer,
    *,
    snapshot: Sequence[str | os.PathLike[str]] | None = None,
    add: Sequence[str | os.PathLike[str]] = (),
    remove: Sequence[str | os.PathLike[str]] = (),
    fpr: float = DEFAULT_FPR,
    by: str = "credential",
    now: int | None = None,
    progress: bool = False,
) -> Published:
    """Publishes the next file: a snapshot of ``snapshot``'s inputs, or else a delta on
    the current snapshot revoking ``add`` and reinstating ``remove`` (none of either: an
    empty delta, which says the data is still current).  The sequence is the index's
    newest + 1.  The file is written and checked first, the index replaced last."""
    d = pathlib.Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    own = {signer.key_id: PublisherKey(signer.key_id, bytes(signer.key.verify_key), 0, 2**63)}
    current = read_index(d, own)
    now = int(time.time()) if now is None else now
    sequence = 1 if current is None else current.sequence + 1
    if snapshot is not None:
        name = f"snapshot-{sequence:012d}.essc"
        build_snapshot(
            d / name,
            snapshot,
            fpr=fpr,
            sequence=sequence,
            created_at=now,
            by=by,
            signer=signer,
            progress=progress,
        )
        deltas: tuple[Entry, ...] = ()
        entry = _entry_for(d, name)
        new_snapshot = entry
    else:
        if current is None:
            raise PublicationError(f"{d}: nothing published yet: publish a snapshot first")
        if len(current.deltas) >= MAX_DELTAS:
            raise PublicationError(f"{d}: {MAX_DELTAS} deltas on one snapshot: publish a snapshot")
        name = f"delta-{sequence:012d}.essc"
        build_delta(
            d / name,
            d / current.snapshot.name,
            add=add,
            remove=remove,
            sequence=sequence,
            created_at=now,
            by=by,
            signer=signer,
            progress=progress,
        )
        entry = _entry_for(d, name)
        new_snapshot = current.snapshot
        deltas = (*current.deltas, entry)
    index = Index(
        publisher_key_id=signer.key_id,
        published_at=now,
        expires_at=now + signer.expires_in_s,
        sequence=sequence,
        snapshot=new_snapshot,
        deltas=deltas,
    ).signed(signer.key)
    write_atomically(d / INDEX_FILE, index.encode())
    # A node that read the previous index may still be fetching its files: keep them.
    keep = {e.name for e in index.entries} | {e.name for e in (current.entries if current else ())}
    removed = []
    for p in d.iterdir():
        published = p.name.startswith(("snapshot-", "delta-")) and p.name.endswith(".essc")
        if published and p.is_file() and p.name not in keep:
            p.unlink()
            removed.append(p.name)
    return Published(index, entry, removed)
