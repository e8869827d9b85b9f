"""atheris harness: the revocation file reader (engine/revocation/format.py parse_header
and map_file, with the native validators esc_fpset_check_index / esc_fpset_validate).

Input: byte 0 holds repair flags, the rest is a file.  Flags (so that mutated files
get past the checksums to the deeper checks): 1 sets the header's file_size to the
real length, 2 recomputes header_crc32c, 4 recomputes file_crc32c.  A file must
either be refused with RevocationFileError (any other exception, or a crash, is a
finding) or come out consistent with docs/FORMATS.md section 8: arrays of the sizes
the counts give, a bucket index that keeps look-ups inside the fingerprints, sorted
delta sets; a snapshot then answers look-ups (through _core.RevocationTable).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import struct
import tempfile

import atheris
import common
import numpy as np

_core = common.load_core()

with atheris.instrument_imports(include=["engine"]):
    from engine.revocation import format as rf
FILE_SIZE_AT = 56
_dir = os.environ.get("ESSC_FUZZ_TMP") or ("/dev/shm" if os.path.isdir("/dev/shm") else None)
_fd, PATH = tempfile.mkstemp(prefix="essc-fuzz-rev-", dir=_dir)
os.close(_fd)
atexit.register(os.unlink, PATH)

_EMPTY_FPS = np.zeros((0, 2), dtype=np.uint64)
_EMPTY_INDEX = _core.fpset_index(_EMPTY_FPS, 0)
_EMPTY_BLOOM = np.zeros(8, dtype=np.uint32)
_PROBES = [b"A00000000", b"G12345678", b"Z99999999"], [bytes(16), b"\xff" * 16]


def repair(flags: int, image: bytes) -> bytes:
    data = bytearray(image)
    if len(data) < rf.HEADER_SIZE:
        return bytes(data)
    if flags & 1:
        data[FILE_SIZE_AT : FILE_SIZE_AT + 8] = struct.pack("<Q", len(data))
    head = _core.crc32c(bytes(data[:248]))
    if flags & 2:
        data[248:252] = struct.pack("<I", head)
    if flags & 4:
        data[252:256] = struct.pack("<I", _core.crc32c(bytes(data[rf.HEADER_SIZE :]), head))
    return bytes(data)


def strictly_sorted(fps: np.ndarray) -> bool:
    h1, h2 = fps[:, 0], fps[:, 1]
    return bool(np.all((h1[1:] > h1[:-1]) | ((h1[1:] == h1[:-1]) & (h2[1:] > h2[:-1]))))


def check_mapped(m: rf.MappedFile, data: bytes, image: bytes) -> None:
    h = m.header
    common.check(h.file_size == len(image), "file_size accepted but wrong", data)
    a = m.arrays
    if h.kind == "snapshot":
        common.check(a["bloom"].nbytes == h.sections[0][1], "bloom size", data)
        common.check(len(a["index"]) == (1 << h.bucket_bits) + 1, "index size", data)
        common.check(a["fps"].shape == (h.entries, 2), "fingerprint count", data)
        index = a["index"]
        common.check(int(index[0]) == 0 and int(index[-1]) == h.entries, "index ends", data)
        common.check(bool(np.all(index[1:] >= index[:-1])), "index decreases", data)
        table = _core.RevocationTable(
            h.seed, a["bloom"], a["fps"], a["index"], h.bucket_bits,
            _EMPTY_BLOOM, _EMPTY_FPS, _EMPTY_INDEX, 0, _EMPTY_FPS, _EMPTY_INDEX, 0,
        )  # fmt: skip
        table.contains(_core.KIND_CARD, _PROBES[0])
        table.contains(_core.KIND_CREDENTIAL, _PROBES[1])
    else:
        common.check(a["add"].shape == (h.entries, 2), "added count", data)
        common.check(a["remove"].shape == (h.removed, 2), "removed count", data)
        for name in ("add", "remove"):
            common.check(strictly_sorted(a[name]), f"{name} set accepted unsorted", data)


def test_one(data: bytes) -> None:
    if not data:
        return
    image = repair(data[0], data[1:])
    with contextlib.suppress(rf.RevocationFileError):
        rf.parse_header(PATH, image[: rf.HEADER_SIZE], len(image))
    with open(PATH, "wb") as f:
        f.write(image)
    try:
        m = rf.map_file(PATH)
    except rf.RevocationFileError:
        return
    check_mapped(m, data, image)


if __name__ == "__main__":
    common.fuzz(test_one)
