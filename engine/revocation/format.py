"""Revocation files on disk: the header, its checks, and memory-mapped opening.

Layout, checks and the reasons behind them: docs/FORMATS.md, section 8.  Everything
that reads or writes a revocation file goes through this module, so the layout is
defined once.  Files are opened read-only and mapped; a file is never modified in
place (see ``map_file``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import mmap
import os
import struct
import sys
from typing import NoReturn

import numpy as np

from engine import _core
from engine.errors import EsscError
from engine.formats.files import StrPath
from engine.revocation.manifest import MAX_MANIFEST_BYTES, Manifest, ManifestError, section_digests
from engine.revocation.source import CARD, CREDENTIAL

SNAPSHOT_MAGIC = b"ESSCREVS"
DELTA_MAGIC = b"ESSCREVD"
MAGICS = {SNAPSHOT_MAGIC: "snapshot", DELTA_MAGIC: "delta"}
VERSION = 1  # unsigned files (written without a signing key)
SIGNED_VERSION = 2  # files whose last section is the signed manifest (section 8.7)
VERSIONS = (VERSION, SIGNED_VERSION)
MANIFEST_SECTION = 3  # where a version 2 file keeps its manifest, snapshot or delta
HEADER_SIZE = 256
ALIGN = 4096  # sections start on page boundaries (and so on cache lines)

# Hash ids: what (kind byte || id) hashes to.  An id must hash the same forever, so a
# changed function gets a new id; never redefine an existing one.
HASH_XXH64_PAIR = 1
HASHES = {HASH_XXH64_PAIR: "xxh64-pair-v1"}

# Kind codes: the first byte of the hashed key.
KIND_CODES = {CARD: _core.KIND_CARD, CREDENTIAL: _core.KIND_CREDENTIAL}

BLOOM_BLOCK_BYTES = 32
FP_BYTES = 16
MAX_BLOOM_BLOCKS = 1 << 32  # the block index is taken from 32 hash bits

_FIXED = struct.Struct("<8sIIII QQQqQ QQQQ dII 8Q")
_SECTIONS = 4
assert _FIXED.size == 176
_CRC_OFFSET = 248  # header_crc32c u32, then file_crc32c u32
CRC_OFFSET = _CRC_OFFSET


class RevocationFileError(EsscError):
    """A revocation file that cannot be used; the message names the file and the problem."""


@dataclasses.dataclass(frozen=True)
class Header:
    kind: str  # "snapshot" or "delta"
    version: int
    hash_id: int
    seed: int
    sequence: int
    base_sequence: int  # delta: the snapshot sequence it applies to; snapshot: 0
    created_at: int  # unix seconds
    file_size: int
    cards: int  # snapshot: entries; delta: added
    credentials: int
    removed_cards: int  # delta only
    removed_credentials: int
    target_fpr: float  # snapshot only
    bucket_bits: int  # snapshot only: bits of the exact tier's bucket index
    sections: tuple[tuple[int, int], ...]  # (offset, length) x 4
    flags: int = 0

    @property
    def magic(self) -> bytes:
        return SNAPSHOT_MAGIC if self.kind == "snapshot" else DELTA_MAGIC

    @property
    def signed(self) -> bool:
        return self.version == SIGNED_VERSION

    @property
    def entries(self) -> int:
        return self.cards + self.credentials

    @property
    def removed(self) -> int:
        return self.removed_cards + self.removed_credentials

    def pack(self) -> bytes:
        """The 248 bytes that the two checksums cover first (CRC fields excluded)."""
        flat = [x for s in self.sections for x in s]
        body = _FIXED.pack(
            self.magic,
            self.version,
            HEADER_SIZE,
            self.hash_id,
            self.flags,
            self.seed,
            self.sequence,
            self.base_sequence,
            self.created_at,
            self.file_size,
            self.cards,
            self.credentials,
            self.removed_cards,
            self.removed_credentials,
            self.target_fpr,
            self.bucket_bits,
            0,
            *flat,
        )
        return body.ljust(_CRC_OFFSET, b"\0")


def seal_header(packed: bytes, payload_crc: int) -> bytes:
    """The full 256-byte header: packed fields, header CRC, whole-file CRC.

    ``payload_crc`` is the CRC32C of bytes [HEADER_SIZE, file_size), continued from the
    CRC of the packed fields (``_core.crc32c(payload, _core.crc32c(packed))``).
    """
    return packed + struct.pack("<II", _core.crc32c(packed), payload_crc)


def layout(lengths: list[int]) -> tuple[tuple[tuple[int, int], ...], int]:
    """Aligned (offset, length) of each section after the header, and the file size."""
    sections = []
    pos = HEADER_SIZE
    for length in lengths:
        pos = _align(pos)
        sections.append((pos, length))
        pos += length
    while len(sections) < _SECTIONS:
        sections.append((0, 0))
    return tuple(sections), pos


def _align(pos: int) -> int:
    return -(-pos // ALIGN) * ALIGN


# --- Bloom filter sizing -----------------------------------------------------------


def sbbf_fpr(keys_per_block: float) -> float:
    """False-positive rate of a split-block Bloom filter with this mean load.

    Keys per block are Poisson distributed; a block holding c keys has each of its
    eight 32-bit words' bits set with probability 1 - (31/32)^c, and a query needs
    its one bit in each of the eight words.
    """
    lam = float(keys_per_block)
    if lam <= 0:
        return 0.0
    top = int(lam + 12 * math.sqrt(lam) + 40)
    c = np.arange(top + 1, dtype=np.float64)
    log_pois = c * math.log(lam) - lam - np.array([math.lgamma(x + 1) for x in c])
    return float(np.sum(np.exp(log_pois) * (1.0 - (31.0 / 32.0) ** c) ** 8))


def bloom_blocks_for(n: int, fpr: float) -> int:
    """Fewest blocks whose expected false-positive rate for n keys is at most fpr."""
    if not 0 < fpr < 1:
        raise ValueError(f"false-positive rate must be between 0 and 1, got {fpr}")
    if n == 0:
        return 1
    lo, hi = 1e-6, 64.0  # keys per block; sbbf_fpr rises with it
    for _ in range(100):
        mid = (lo + hi) / 2
        if sbbf_fpr(mid) > fpr:
            hi = mid
        else:
            lo = mid
    blocks = max(1, math.ceil(n / lo))
    if blocks > MAX_BLOOM_BLOCKS:
        raise ValueError(f"{n} entries at fpr {fpr} need more than 2^32 Bloom blocks")
    return blocks


# --- Reading -----------------------------------------------------------------------


@dataclasses.dataclass
class MappedFile:
    """A validated revocation file, mapped read-only.  The arrays are views of the map."""

    path: str
    header: Header
    mapping: mmap.mmap
    arrays: dict[str, np.ndarray]
    manifest: Manifest | None = None  # signed files: checked against the header and sections


def _fail(path: StrPath, problem: str) -> NoReturn:
    raise RevocationFileError(f"{os.fspath(path)}: {problem}")


def parse_header(path: StrPath, data: bytes, file_length: int) -> Header:
    """Checks a header against itself and the file length; returns it decoded."""
    if len(data) < 16:
        _fail(path, f"truncated: {file_length} bytes, too short for a revocation file header")
    magic = bytes(data[:8])
    if magic not in MAGICS:
        _fail(path, f"not a revocation file (magic {magic!r})")
    version, header_size = struct.unpack_from("<II", data, 8)
    if version not in VERSIONS:
        _fail(path, f"unsupported format version {version} (this engine reads {list(VERSIONS)})")
    if len(data) < HEADER_SIZE:
        _fail(path, f"truncated: {file_length} bytes, shorter than the {HEADER_SIZE}-byte header")
    if header_size != HEADER_SIZE:
        _fail(path, f"header size {header_size}, expected {HEADER_SIZE}")
    header_crc, _ = struct.unpack_from("<II", data, _CRC_OFFSET)
    if _core.crc32c(bytes(data[:_CRC_OFFSET])) != header_crc:
        _fail(path, "header checksum mismatch (the header is corrupt)")
    f = _FIXED.unpack_from(data, 0)
    sections = tuple((f[17 + 2 * i], f[18 + 2 * i]) for i in range(_SECTIONS))
    h = Header(
        kind=MAGICS[magic],
        version=version,
        hash_id=f[3],
        flags=f[4],
        seed=f[5],
        sequence=f[6],
        base_sequence=f[7],
        created_at=f[8],
        file_size=f[9],
        cards=f[10],
        credentials=f[11],
        removed_cards=f[12],
        removed_credentials=f[13],
        target_fpr=f[14],
        bucket_bits=f[15],
        sections=sections,
    )
    if h.hash_id not in HASHES:
        _fail(path, f"unknown hash id {h.hash_id} (this engine knows {sorted(HASHES)})")
    if h.flags != 0:
        _fail(path, f"unknown flags {h.flags:#x}")
    if h.file_size != file_length:
        _fail(path, f"header says {h.file_size} bytes, the file has {file_length} (truncated?)")
    _check_layout(path, h)
    return h


def _expected_lengths(h: Header) -> list[int]:
    if h.kind == "snapshot":
        if h.bucket_bits > 32:
            raise ValueError(f"bucket index bits {h.bucket_bits} (at most 32)")
        lengths = [
            -1,  # the Bloom filter: any whole number of blocks, checked below
            ((1 << h.bucket_bits) + 1) * 8,
            h.entries * FP_BYTES,
        ]
    else:
        lengths = [h.entries * FP_BYTES, h.removed * FP_BYTES, 0]
    if h.signed:
        lengths[MANIFEST_SECTION:] = [-2]  # the manifest: 1 to MAX_MANIFEST_BYTES
    return lengths


def _check_layout(path: StrPath, h: Header) -> None:
    try:
        expected = _expected_lengths(h)
    except ValueError as e:
        _fail(path, str(e))
    if h.kind == "delta" and h.sequence <= h.base_sequence:
        _fail(path, f"delta sequence {h.sequence} is not after its snapshot's {h.base_sequence}")
    end = HEADER_SIZE
    for i, (offset, length) in enumerate(h.sections):
        if i >= len(expected):
            if (offset, length) != (0, 0):
                _fail(path, f"section {i} is set but unused")
            continue
        want = expected[i]
        if want == 0 and (offset, length) == (0, 0):
            continue  # a delta's unused section before its manifest
        if want == -2:
            if not 1 <= length <= MAX_MANIFEST_BYTES:
                _fail(path, f"manifest section of {length} bytes (1 to {MAX_MANIFEST_BYTES})")
        elif want == -1:
            blocks = length // BLOOM_BLOCK_BYTES
            if length % BLOOM_BLOCK_BYTES or not 1 <= blocks <= MAX_BLOOM_BLOCKS:
                _fail(path, f"Bloom filter of {length} bytes is not 1 to 2^32 whole blocks")
        elif length != want:
            _fail(path, f"section {i} is {length} bytes, the counts say {want}")
        if offset % 64 or offset < end or offset + length > h.file_size:
            _fail(path, f"section {i} at {offset}+{length} is misplaced or past the end")
        end = offset + length


def read_header(path: StrPath) -> Header:
    """The header of a revocation file, checked (its payload is not read)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            data = f.read(HEADER_SIZE)
    except OSError as e:
        _fail(path, f"cannot read: {e.strerror}")
    return parse_header(path, data, size)


def read_manifest(path: StrPath) -> Manifest:
    """The manifest of a signed file, decoded (neither its signature nor the sections
    are checked: ``map_file`` and ``Manifest.verify`` do that)."""
    h = read_header(path)
    if not h.signed:
        _fail(path, "is not signed (format version 1 has no manifest)")
    offset, length = h.sections[MANIFEST_SECTION]
    try:
        with open(path, "rb") as f:
            data = os.pread(f.fileno(), length, offset)
        return Manifest.decode(data)
    except OSError as e:
        _fail(path, f"cannot read: {e.strerror}")
    except ManifestError as e:
        _fail(path, str(e))


def map_file(path: StrPath, *, kind: str | None = None, name: str | None = None) -> MappedFile:
    """Opens, checks and maps a revocation file; RevocationFileError if it is unusable.

    The whole file is checksummed before anything is used.  The mapping is
    read-only and shared, so every process mapping the same file shares one copy in
    the page cache.  Writers never change a file in place: they write a new file and
    rename it over the old name, so an existing mapping keeps the old inode (and its
    pages) for as long as it lives.  Truncating or rewriting a mapped file in place
    would make readers fault (SIGBUS) on the pages that vanish, which is why the
    engine never does it (and maps only its private copies: engine.revocation.private).

    ``name`` is what errors and ``MappedFile.path`` call the file (the configured path
    when ``path`` is the engine's private copy of it).
    """
    shown = os.fspath(path) if name is None else name
    if sys.byteorder != "little":
        _fail(shown, "revocation files are little-endian; this host is not")
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        _fail(shown, f"cannot open: {e.strerror}")
    try:
        size = os.fstat(fd).st_size
        if size < HEADER_SIZE:
            parse_header(shown, os.pread(fd, HEADER_SIZE, 0), size)  # raises the right error
        mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    except OSError as e:
        _fail(shown, f"cannot map: {e.strerror}")
    finally:
        os.close(fd)
    _advise(mm, "MADV_SEQUENTIAL")
    header = parse_header(shown, mm[:HEADER_SIZE], size)
    if kind is not None and header.kind != kind:
        _fail(shown, f"is a {header.kind} file, expected a {kind}")
    view = memoryview(mm)
    try:
        crc = _core.crc32c(view[HEADER_SIZE:], _core.crc32c(view[:_CRC_OFFSET]))
    finally:
        view.release()
    if crc != struct.unpack_from("<I", mm, _CRC_OFFSET + 4)[0]:
        _fail(shown, "checksum mismatch (the payload is corrupt)")
    manifest = check_manifest(shown, header, mm) if header.signed else None
    # Look-ups touch one random block each: read-ahead would only waste cache.
    _advise(mm, "MADV_RANDOM")
    arrays = _section_arrays(shown, header, mm)
    return MappedFile(shown, header, mm, arrays, manifest)


def data_sections(h: Header) -> list[tuple[int, int]]:
    """(offset, length) of the sections that hold data (not the manifest)."""
    n = 3 if h.kind == "snapshot" else 2
    return list(h.sections[:n])


def header_facts(h: Header) -> dict[str, object]:
    """The header fields a manifest vouches for, as the manifest states them."""
    return {
        "kind": h.kind,
        "sequence": h.sequence,
        "base_sequence": h.base_sequence,
        "created_at": h.created_at,
        "hash_id": h.hash_id,
        "seed": h.seed,
        "counts": (h.cards, h.credentials, h.removed_cards, h.removed_credentials),
        "target_fpr_bits": struct.unpack("<Q", struct.pack("<d", h.target_fpr))[0],
        "bucket_bits": h.bucket_bits,
    }


def check_manifest(path: StrPath, h: Header, mm: mmap.mmap) -> Manifest:
    """The file's manifest, decoded and checked against its header and every data
    section (the signature is checked by whoever holds the trust list:
    ``Manifest.verify``)."""
    offset, length = h.sections[MANIFEST_SECTION]
    try:
        manifest = Manifest.decode(bytes(mm[offset : offset + length]))
    except ManifestError as e:
        _fail(path, str(e))
    for name, value in header_facts(h).items():
        if getattr(manifest, name) != value:
            _fail(
                path,
                f"header {name} {value!r} differs from the signed manifest's "
                f"{getattr(manifest, name)!r}",
            )
    sections = data_sections(h)
    if [n for n, _ in manifest.sections] != [n for _, n in sections]:
        _fail(path, "section lengths differ from the signed manifest's")
    view = memoryview(mm)
    slices = [view[o : o + n] for o, n in sections]
    try:
        digests = section_digests(slices)
    finally:
        for piece in slices:
            piece.release()
        view.release()
    for i, (digest, (_, want)) in enumerate(zip(digests, manifest.sections)):
        if digest != want:
            _fail(path, f"section {i} does not match its SHA-256 in the signed manifest")
    return manifest


def _advise(mm: mmap.mmap, name: str) -> None:
    advice = getattr(mmap, name, None)
    if advice is not None and hasattr(mm, "madvise"):
        with contextlib.suppress(OSError):  # advice only
            mm.madvise(advice)


def _section_arrays(path: StrPath, h: Header, mm: mmap.mmap) -> dict[str, np.ndarray]:
    def u64(i: int, width: int) -> np.ndarray:
        offset, length = h.sections[i]
        arr = np.frombuffer(mm, dtype="<u8", count=length // 8, offset=offset)
        return arr.reshape(-1, width) if width > 1 else arr

    if h.kind == "snapshot":
        offset, length = h.sections[0]
        arrays = {
            "bloom": np.frombuffer(mm, dtype="<u4", count=length // 4, offset=offset),
            "index": u64(1, 1),
            "fps": u64(2, 2),
        }
        bad = _core.fpset_check_index(arrays["index"], h.bucket_bits, h.entries)
        if bad:
            _fail(path, f"bucket index is inconsistent at bucket {bad - 1}")
        return arrays
    arrays = {"add": u64(0, 2), "remove": u64(1, 2)}
    for name, fps in arrays.items():
        bits = _core.fpset_bits_for(len(fps))
        if _core.fpset_validate(fps, bits, _core.fpset_index(fps, bits)):
            _fail(path, f"{name} set is not sorted")
    return arrays
