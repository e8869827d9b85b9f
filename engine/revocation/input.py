"""Reading the ids to revoke: text lists and wallet files, streamed in chunks.

Text input has one entry per line::

    # comments and blank lines are allowed
    card G12345678
    credential 00112233445566778899aabbccddeeff   # the serial as 32 hex digits

A wallet file written by ``python -m engine issue`` is recognised by its header:
every credential in it is revoked by serial, or by card number with ``by="card"``.
Malformed lines are never dropped silently: they stop the read with an error that
lists the first of them, or, with ``skip_bad``, are skipped and reported.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Iterator

import numpy as np

from engine import _core
from engine.errors import EsscError
from engine.formats import wallets
from engine.formats.credentials import Credential
from engine.formats.encoding import FormatError
from engine.formats.files import StrPath
from engine.revocation.source import CARD, CREDENTIAL

CHUNK_BYTES = 16 << 20
WALLET_CHUNK = 50_000
SHOWN_BAD_LINES = 10

REASONS = {
    1: "expected 'card' or 'credential'",
    2: "no id after the kind",
    3: "a card number is a capital letter and 8 digits",
    4: "a credential serial is 32 hex digits",
    5: "unexpected text after the id",
}
BY_CHOICES = (CREDENTIAL, CARD)


class RevocationInputError(EsscError, ValueError):
    """Input that cannot be used; the message names the file and the lines."""


@dataclasses.dataclass
class BadLines:
    """Malformed lines seen so far: the total, and the first few with their text."""

    count: int = 0
    first: list[str] = dataclasses.field(default_factory=list)

    def describe(self) -> str:
        more = self.count - len(self.first)
        lines = "\n".join(f"  {x}" for x in self.first)
        return lines + (f"\n  ... and {more} more" if more > 0 else "")


Chunk = tuple[np.ndarray, np.ndarray]  # kind codes (n,) uint8, ids as 16-byte rows (n, 16)


def is_wallet_file(path: str | os.PathLike[str]) -> bool:
    if os.fspath(path) == "-":
        return False
    with open(path, "rb") as f:
        first = f.read(1)
    # A wallet file starts with a msgpack map; text input with printable text.
    return bool(first) and (0x80 <= first[0] <= 0x8F or first[0] in (0xDE, 0xDF))


def input_size(path: str | os.PathLike[str]) -> int:
    return 0 if os.fspath(path) == "-" else os.path.getsize(path)


def read_ids(
    path: str | os.PathLike[str],
    *,
    by: str = "credential",
    skip_bad: bool = False,
    bad: BadLines | None = None,
    progress: Callable[[int], object] | None = None,
) -> Iterator[Chunk]:
    """Chunks of (kind codes, 16-byte id rows) from a text list or a wallet file.

    ``progress(n)`` is called with the number of input bytes consumed (text) or
    wallets read.  Malformed lines go to ``bad``; without ``skip_bad`` the read stops
    with RevocationInputError at the end of the chunk that held the first of them.
    """
    if by not in BY_CHOICES:
        raise RevocationInputError(f"by must be one of {BY_CHOICES}")
    bad = BadLines() if bad is None else bad
    try:
        if is_wallet_file(path):
            yield from _read_wallets(path, by, progress)
        else:
            yield from _read_text(path, skip_bad, bad, progress)
    except OSError as e:
        raise RevocationInputError(f"{os.fspath(path)}: cannot read: {e.strerror}") from None


def _read_text(
    path: StrPath, skip_bad: bool, bad: BadLines, progress: Callable[[int], object] | None
) -> Iterator[Chunk]:
    name = os.fspath(path)
    f = sys.stdin.buffer if name == "-" else open(path, "rb")  # noqa: SIM115
    line_base = 0
    carry = b""
    try:
        while True:
            block = f.read(CHUNK_BYTES)
            data = carry + block
            if block:
                cut = data.rfind(b"\n") + 1  # whole lines only; the rest waits
                data, carry = data[:cut], data[cut:]
            else:
                carry = b""
            if data:
                kinds, rows, nlines, nbad, first = _core.parse_ids(data, SHOWN_BAD_LINES)
                if nbad:
                    _note_bad(bad, name, data, line_base, first, nbad)
                    if not skip_bad:
                        raise RevocationInputError(
                            f"{name}: {bad.count} malformed line(s) (give --skip-bad to "
                            f"skip them):\n{bad.describe()}"
                        )
                line_base += nlines
                if len(kinds):
                    yield kinds, rows
            if progress is not None and block:
                progress(len(block))
            if not block:
                return
    finally:
        if f is not sys.stdin.buffer:
            f.close()


def _note_bad(
    bad: BadLines, name: str, data: bytes, line_base: int, first: list[tuple[int, int]], nbad: int
) -> None:
    room = SHOWN_BAD_LINES - len(bad.first)
    if room > 0:
        starts = np.concatenate(([0], np.flatnonzero(np.frombuffer(data, np.uint8) == 10) + 1))
        for line, reason in first[:room]:
            start = int(starts[line])
            end = data.find(b"\n", start)
            text = data[start : end if end >= 0 else len(data)]
            shown = text.rstrip(b"\r").decode("utf-8", "replace")
            if len(shown) > 60:
                shown = shown[:57] + "..."
            bad.first.append(f"{name}:{line_base + line + 1}: {REASONS[reason]}: {shown!r}")
    bad.count += nbad


def _read_wallets(
    path: StrPath, by: str, progress: Callable[[int], object] | None
) -> Iterator[Chunk]:
    code = _core.KIND_CARD if by == CARD else _core.KIND_CREDENTIAL
    rows: list[bytes] = []
    try:
        for i, w in enumerate(wallets.read(path)):
            try:
                cred = Credential.decode(w.credential)
            except FormatError as e:
                raise RevocationInputError(f"{os.fspath(path)}: wallet {i}: {e}") from None
            ident = cred.card_number.encode() if by == CARD else cred.serial
            rows.append(ident.ljust(16, b"\0"))
            if len(rows) == WALLET_CHUNK:
                yield _rows_chunk(code, rows)
                if progress is not None:
                    progress(len(rows))
                rows = []
    except wallets.WalletFileError as e:
        raise RevocationInputError(str(e)) from None
    if rows:
        yield _rows_chunk(code, rows)
        if progress is not None:
            progress(len(rows))


def _rows_chunk(code: int, rows: list[bytes]) -> Chunk:
    arr = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(-1, 16)
    return np.full(len(rows), code, dtype=np.uint8), arr


def parse_id(text: str) -> tuple[str, bytes]:
    """``card:G12345678`` or ``credential:<32 hex>`` -> (kind, id bytes)."""
    kind, sep, value = text.partition(":")
    line = f"{kind} {value}".encode()
    if not sep:
        raise RevocationInputError(f"{text!r}: expected card:NUMBER or credential:HEX")
    kinds, rows, _, nbad, first = _core.parse_ids(line, 1)
    if nbad or len(kinds) != 1:
        reason = REASONS[first[0][1]] if first else "expected card:NUMBER or credential:HEX"
        raise RevocationInputError(f"{text!r}: {reason}")
    return kind, rows[0, : 9 if kind == CARD else 16].tobytes()
