"""Shared helpers for the revocation tests: random ids and small files."""

from __future__ import annotations

import pathlib

import numpy as np

from engine.revocation.build import build_delta, build_snapshot


def random_cards(rng: np.random.Generator, n: int) -> np.ndarray:
    """n random card numbers ([A-Z][0-9]{8}) as an (n,) S9 array (may repeat)."""
    chars = np.empty((n, 9), dtype=np.uint8)
    chars[:, 0] = rng.integers(ord("A"), ord("Z") + 1, n)
    chars[:, 1:] = rng.integers(ord("0"), ord("9") + 1, (n, 8))
    return chars.view("S9").reshape(n)


def random_serials(rng: np.random.Generator, n: int) -> np.ndarray:
    return (
        np.frombuffer(rng.bytes(16 * n), dtype=np.uint8)
        .reshape(n, 16)
        .copy()
        .view("S16")
        .reshape(n)
    )


def as_bytes(ids: np.ndarray, width: int) -> list[bytes]:
    """Ids as bytes objects (numpy's S dtype would drop trailing zero bytes)."""
    raw = ids.view(np.uint8).reshape(-1, width)
    return [row.tobytes() for row in raw]


def write_list(path: pathlib.Path, cards=(), serials=()) -> pathlib.Path:
    lines = ["# revoked ids"]
    lines += [f"card {c.decode()}" for c in cards]
    lines += [f"credential {s.hex()}" for s in serials]
    path.write_text("\n".join(lines) + "\n")
    return path


def snapshot(tmp: pathlib.Path, name: str, cards=(), serials=(), **kw) -> pathlib.Path:
    src = write_list(tmp / f"{name}.txt", cards, serials)
    out = tmp / name
    build_snapshot(out, [src], **kw)
    return out


def delta(
    tmp: pathlib.Path,
    name: str,
    base: pathlib.Path,
    add=((), ()),
    remove=((), ()),
    **kw,
) -> pathlib.Path:
    add_src = write_list(tmp / f"{name}.add.txt", *add)
    rm_src = write_list(tmp / f"{name}.rm.txt", *remove)
    out = tmp / name
    build_delta(out, base, add=[add_src], remove=[rm_src], **kw)
    return out


def reseal(path: pathlib.Path, edit) -> None:
    """``edit(bytearray)`` the file, then recompute both CRC32C fields: an attacker's
    file, which passes every accident check and must still be refused."""
    import struct

    from engine import _core
    from engine.revocation.format import CRC_OFFSET, HEADER_SIZE

    data = bytearray(path.read_bytes())
    edit(data)
    head = bytes(data[:CRC_OFFSET])
    crc = _core.crc32c(bytes(data[HEADER_SIZE:]), _core.crc32c(head))
    data[CRC_OFFSET : CRC_OFFSET + 8] = struct.pack("<II", _core.crc32c(head), crc)
    path.write_bytes(bytes(data))
