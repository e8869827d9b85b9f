"""Writing revocation snapshots and deltas (``python -m engine revocation build|delta``).

A build streams its input in chunks and spools the 16-byte fingerprints of each id
kind to a temporary file, so memory is bounded by the fingerprints themselves
(sorted in place, in C) plus the Bloom filter: about 35 bytes per entry at the
peak, whatever the input looks like.  The file is written beside its final name,
fsynced and renamed over it (engine.formats.files.atomic_writer): a reader, or another
process that has the old file mapped, never sees a half-written one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import tempfile
import time
from collections.abc import Sequence

import nacl.signing
import numpy as np
from tqdm import tqdm

from engine import _core
from engine.formats import keys, wallets
from engine.formats.files import StrPath, atomic_writer
from engine.revocation.format import (
    ALIGN,
    HASH_XXH64_PAIR,
    HEADER_SIZE,
    MANIFEST_SECTION,
    SIGNED_VERSION,
    VERSION,
    Header,
    bloom_blocks_for,
    data_sections,
    header_facts,
    layout,
    read_header,
    read_manifest,
    seal_header,
)
from engine.revocation.input import (
    BadLines,
    RevocationInputError,
    input_size,
    is_wallet_file,
    read_ids,
)
from engine.revocation.manifest import Manifest

DEFAULT_FPR = 0.01
DEFAULT_EXPIRES_IN_S = 2 * 86400  # a signed file's expires_at: created_at + this
WRITE_SLICE = 64 << 20
INSERT_SLICE = 1 << 20


@dataclasses.dataclass
class BuildResult:
    path: str
    header: Header
    bad: BadLines  # lines skipped with skip_bad (count 0 otherwise)
    read: int  # ids read, duplicates included
    manifest: Manifest | None = None  # signed files


@dataclasses.dataclass(frozen=True)
class Signer:
    """A revocation publisher key, and how long what it signs stays current."""

    key_id: str
    key: nacl.signing.SigningKey
    expires_in_s: int = DEFAULT_EXPIRES_IN_S

    @classmethod
    def from_file(cls, path: StrPath, expires_in_s: int = DEFAULT_EXPIRES_IN_S) -> Signer:
        """From a private key file (``pki init`` writes revocation-publisher.key)."""
        if expires_in_s <= 0:
            raise RevocationInputError("the expiry must be a positive number of seconds")
        try:
            key, key_id = keys.read_private(pathlib.Path(path))
        except keys.KeyFileError as e:
            raise RevocationInputError(str(e)) from None
        return cls(key_id, key, expires_in_s)


class _Spool:
    """Fingerprints of one id kind, parked in a temporary file until the input ends."""

    def __init__(self, directory: str | os.PathLike[str]):
        # Closed (and so deleted) by unique(), or by the collector if the build fails.
        self.file = tempfile.TemporaryFile(prefix=".revocation-build-", dir=directory)  # noqa: SIM115
        self.count = 0

    def add(self, fps: np.ndarray) -> None:
        fps.tofile(self.file)
        self.count += len(fps)

    def unique(self) -> np.ndarray:
        """All fingerprints, sorted, without duplicates."""
        self.file.seek(0)
        fps = np.fromfile(self.file, dtype=np.uint64, count=2 * self.count).reshape(-1, 2)
        self.file.close()
        return fps[: _core.fp_sort_unique(fps)]


def _collect(
    inputs: Sequence[str | os.PathLike[str]],
    seed: int,
    spool_dir: str | os.PathLike[str],
    *,
    by: str,
    skip_bad: bool,
    progress: bool,
    bad: BadLines,
) -> tuple[np.ndarray, np.ndarray, int]:
    """(unique card fingerprints, unique credential fingerprints, ids read)."""
    spools = {_core.KIND_CARD: _Spool(spool_dir), _core.KIND_CREDENTIAL: _Spool(spool_dir)}
    read = 0
    try:
        for path in inputs:
            if os.fspath(path) != "-" and not os.path.isfile(path):
                raise RevocationInputError(f"{os.fspath(path)}: no such file")
            count = _wallet_count(path)
            is_wallets = count is not None
            total = count if is_wallets else input_size(path) or None
            with tqdm(
                total=total,
                unit="wallet" if is_wallets else "B",
                unit_scale=True,
                desc=f"reading {os.path.basename(os.fspath(path))}",
                disable=not progress,
                leave=False,
            ) as bar:
                for kinds, rows in read_ids(
                    path, by=by, skip_bad=skip_bad, bad=bad, progress=bar.update
                ):
                    fps = _core.fingerprint_rows(seed, kinds, rows)
                    for code, spool in spools.items():
                        spool.add(fps[kinds == code])
                    read += len(kinds)
    except BaseException:
        for spool in spools.values():
            spool.file.close()
        raise
    return spools[_core.KIND_CARD].unique(), spools[_core.KIND_CREDENTIAL].unique(), read


def _wallet_count(path: StrPath) -> int | None:
    """The wallet count of a wallet file; None for text input."""
    if not is_wallet_file(path):
        return None
    try:
        return int(wallets.read_header(path)["count"])
    except wallets.WalletFileError as e:
        raise RevocationInputError(str(e)) from None


def build_snapshot(
    out: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]],
    *,
    fpr: float = DEFAULT_FPR,
    sequence: int = 1,
    created_at: int | None = None,
    seed: int | None = None,
    by: str = "credential",
    skip_bad: bool = False,
    progress: bool = False,
    signer: Signer | None = None,
) -> BuildResult:
    """Reads every input and writes a snapshot to ``out`` (atomically); signed with
    ``signer`` (format version 2), else unsigned (version 1)."""
    if not 0 < fpr < 1:
        raise RevocationInputError(f"--fpr must be between 0 and 1, got {fpr}")
    if sequence < 0:
        raise RevocationInputError("sequence must not be negative")
    seed = int.from_bytes(os.urandom(8), "little") if seed is None else seed
    bad = BadLines()
    spool_dir = pathlib.Path(out).resolve().parent
    cards, creds, read = _collect(
        inputs, seed, spool_dir, by=by, skip_bad=skip_bad, progress=progress, bad=bad
    )
    header, manifest = write_snapshot(
        out,
        cards,
        creds,
        fpr=fpr,
        sequence=sequence,
        created_at=created_at,
        seed=seed,
        progress=progress,
        signer=signer,
    )
    return BuildResult(os.fspath(out), header, bad, read, manifest)


def write_snapshot(
    out: str | os.PathLike[str],
    cards: np.ndarray,
    creds: np.ndarray,
    *,
    fpr: float,
    sequence: int,
    seed: int,
    created_at: int | None = None,
    progress: bool = False,
    signer: Signer | None = None,
) -> tuple[Header, Manifest | None]:
    """Writes a snapshot from sorted duplicate-free card and credential fingerprints."""
    n_cards, n_creds = len(cards), len(creds)
    fps = _core.fp_merge(cards, creds)
    del cards, creds
    nblocks = bloom_blocks_for(len(fps), fpr)
    bloom = np.zeros(nblocks * 8, dtype=np.uint32)
    with tqdm(
        total=len(fps), unit="id", unit_scale=True, desc="Bloom filter", disable=not progress
    ) as bar:
        for start in range(0, len(fps), INSERT_SLICE):
            part = fps[start : start + INSERT_SLICE, 0]
            _core.bloom_insert(bloom, part)
            bar.update(len(part))
    bits = _core.fpset_bits_for(len(fps))
    index = _core.fpset_index(fps, bits)
    sections, size = layout([bloom.nbytes, index.nbytes, fps.nbytes])
    header = Header(
        kind="snapshot",
        version=VERSION,
        hash_id=HASH_XXH64_PAIR,
        seed=seed,
        sequence=sequence,
        base_sequence=0,
        created_at=int(time.time()) if created_at is None else int(created_at),
        file_size=size,
        cards=n_cards,
        credentials=n_creds,
        removed_cards=0,
        removed_credentials=0,
        target_fpr=fpr,
        bucket_bits=bits,
        sections=sections,
    )
    return _write(out, header, [bloom, index, fps], progress, signer)


def build_delta(
    out: str | os.PathLike[str],
    base: str | os.PathLike[str],
    *,
    add: Sequence[str | os.PathLike[str]] = (),
    remove: Sequence[str | os.PathLike[str]] = (),
    sequence: int | None = None,
    created_at: int | None = None,
    by: str = "credential",
    skip_bad: bool = False,
    progress: bool = False,
    signer: Signer | None = None,
) -> BuildResult:
    """Writes a delta on top of snapshot ``base``: ids to add and ids to reinstate.

    A signed delta names its snapshot by the digest of the snapshot's manifest, so the
    snapshot must be signed too."""
    snap = read_header(base)
    if snap.kind != "snapshot":
        raise RevocationInputError(f"{os.fspath(base)}: is a {snap.kind}, not a snapshot")
    base_digest = b""
    if signer is not None:
        if not snap.signed:
            raise RevocationInputError(
                f"{os.fspath(base)}: is not signed, so a signed delta cannot name it"
            )
        base_digest = read_manifest(base).digest
    sequence = snap.sequence + 1 if sequence is None else sequence
    if sequence <= snap.sequence:
        raise RevocationInputError(
            f"a delta's sequence ({sequence}) must be after its snapshot's ({snap.sequence})"
        )
    bad = BadLines()
    spool_dir = pathlib.Path(out).resolve().parent
    add_cards, add_creds, n_add = _collect(
        add, snap.seed, spool_dir, by=by, skip_bad=skip_bad, progress=progress, bad=bad
    )
    rm_cards, rm_creds, n_rm = _collect(
        remove, snap.seed, spool_dir, by=by, skip_bad=skip_bad, progress=progress, bad=bad
    )
    adds = _core.fp_merge(add_cards, add_creds)
    removes = _core.fp_merge(rm_cards, rm_creds)
    both = len(adds) + len(removes) - len(_core.fp_merge(adds, removes))
    if both:
        raise RevocationInputError(f"{both} id(s) are both added and removed in this delta")
    sections, size = layout([adds.nbytes, removes.nbytes])
    header = Header(
        kind="delta",
        version=VERSION,
        hash_id=snap.hash_id,
        seed=snap.seed,
        sequence=sequence,
        base_sequence=snap.sequence,
        created_at=int(time.time()) if created_at is None else int(created_at),
        file_size=size,
        cards=len(add_cards),
        credentials=len(add_creds),
        removed_cards=len(rm_cards),
        removed_credentials=len(rm_creds),
        target_fpr=0.0,
        bucket_bits=0,
        sections=sections,
    )
    header, manifest = _write(out, header, [adds, removes], progress, signer, base_digest)
    return BuildResult(os.fspath(out), header, bad, n_add + n_rm, manifest)


def sign_file(
    source: StrPath, out: StrPath, signer: Signer, *, base: StrPath | None = None
) -> BuildResult:
    """Writes a signed copy of an unsigned (version 1) file: the same sections, header
    fields and creation time, with a manifest.  A delta names its signed snapshot
    ``base``.  For migrating to signed data, and for benchmarks."""
    from engine.revocation.format import map_file

    mapped = map_file(source)
    h = mapped.header
    if h.signed:
        raise RevocationInputError(f"{os.fspath(source)}: is signed already")
    base_digest = b""
    if h.kind == "delta":
        if base is None:
            raise RevocationInputError("a delta is signed with --base, its signed snapshot")
        snap = read_manifest(base)
        if (snap.kind, snap.sequence, snap.seed) != ("snapshot", h.base_sequence, h.seed):
            raise RevocationInputError(
                f"{os.fspath(base)}: is not snapshot {h.base_sequence} with this delta's seed"
            )
        base_digest = snap.digest
    names = ["bloom", "index", "fps"] if h.kind == "snapshot" else ["add", "remove"]
    header, manifest = _write(out, h, [mapped.arrays[n] for n in names], False, signer, base_digest)
    return BuildResult(os.fspath(out), header, BadLines(), 0, manifest)


def _write(
    out: StrPath,
    header: Header,
    arrays: list[np.ndarray],
    progress: bool,
    signer: Signer | None = None,
    base_digest: bytes = b"",
) -> tuple[Header, Manifest | None]:
    """Writes the sections, then (signed) the manifest over their digests; the header
    goes in last, once the CRC is known.  The manifest's length does not depend on the
    digests, so its place, and so the whole header, is fixed before anything is written."""
    if signer is not None:
        header = _signed_layout(header, _manifest(header, signer, base_digest, []))
    packed = header.pack()
    crc = _core.crc32c(packed)
    digests = [hashlib.sha256() for _ in arrays]
    with (
        atomic_writer(out) as f,
        tqdm(
            total=header.file_size,
            unit="B",
            unit_scale=True,
            desc="writing",
            disable=not progress,
            leave=False,
        ) as bar,
    ):
        f.write(bytes(HEADER_SIZE))
        pos = HEADER_SIZE
        for (offset, length), arr, digest in zip(header.sections, arrays, digests):
            pad = bytes(offset - pos)
            f.write(pad)
            crc = _core.crc32c(pad, crc)
            data = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
            assert len(data) == length
            for start in range(0, length, WRITE_SLICE):
                piece = data[start : start + WRITE_SLICE]
                f.write(piece.data)
                crc = _core.crc32c(piece, crc)
                digest.update(piece.data)
                bar.update(len(piece))
            pos = offset + length
        manifest = None
        if signer is not None:
            manifest = _manifest(header, signer, base_digest, [d.digest() for d in digests])
            offset, length = header.sections[MANIFEST_SECTION]
            encoded = manifest.encode()
            assert len(encoded) == length
            for chunk in (bytes(offset - pos), encoded):
                f.write(chunk)
                crc = _core.crc32c(chunk, crc)
        f.seek(0)
        f.write(seal_header(packed, crc))
    return header, manifest


def _manifest(header: Header, signer: Signer, base_digest: bytes, digests: list[bytes]) -> Manifest:
    """The signed manifest of ``header``'s file (zero digests: for its length only)."""
    lengths = [length for _, length in data_sections(header)]
    digests = digests or [bytes(32)] * len(lengths)
    facts = header_facts(header)
    return Manifest(
        publisher_key_id=signer.key_id,
        base_digest=base_digest,
        expires_at=header.created_at + signer.expires_in_s,
        sections=tuple(zip(lengths, digests)),
        **facts,  # type: ignore[arg-type]
    ).signed(signer.key)


def _signed_layout(header: Header, draft: Manifest) -> Header:
    """Version 2, with the manifest in the last section, page-aligned after the data."""
    end = max(offset + length for offset, length in header.sections)
    offset = -(-end // ALIGN) * ALIGN
    sections = list(header.sections)
    sections[MANIFEST_SECTION] = (offset, len(draft.encode()))
    return dataclasses.replace(
        header,
        version=SIGNED_VERSION,
        sections=tuple(sections),
        file_size=offset + len(draft.encode()),
    )
