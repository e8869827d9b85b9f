"""atheris harness: the native revocation input parser (esc_parse_ids, engine/native/
id_parse.c, through _core.parse_ids) against a Python reading of the line format
(engine/revocation/input.py, docs/FORMATS.md section 8.1).

Input: byte 0 picks max_bad (0..15), the rest is input text.  Entries (kind codes,
16-byte rows), the line count, the bad-line count and the first max_bad bad lines with
their reasons must all be the reference's.
"""

from __future__ import annotations

import re

import common
import numpy as np

_core = common.load_core()

CARD_RE = re.compile(rb"[A-Z][0-9]{8}\Z")
SERIAL_RE = re.compile(rb"[0-9a-fA-F]{32}\Z")
UNKNOWN_KIND, NO_ID, BAD_CARD, BAD_SERIAL, EXTRA = 1, 2, 3, 4, 5


def reference(text: bytes):
    """One `card <A12345678>` or `credential <32 hex>` per line; words are separated by
    spaces, tabs, CR, VT or FF; a word starting with '#' starts a comment; blank lines
    are allowed; a last line needs no newline."""
    lines = text.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    kinds, rows, bad = [], [], []
    for number, line in enumerate(lines):
        words = line.split()  # bytes.split(): exactly those five (and \n)
        for i, w in enumerate(words):
            if w.startswith(b"#"):
                words = words[:i]
                break
        if not words:
            continue
        if words[0] == b"card":
            kind = _core.KIND_CARD
        elif words[0] == b"credential":
            kind = _core.KIND_CREDENTIAL
        else:
            bad.append((number, UNKNOWN_KIND))
            continue
        if len(words) < 2:
            bad.append((number, NO_ID))
            continue
        ident = words[1]
        if kind == _core.KIND_CARD:
            if not CARD_RE.match(ident):
                bad.append((number, BAD_CARD))
                continue
            row = ident.ljust(16, b"\0")
        else:
            if not SERIAL_RE.match(ident):
                bad.append((number, BAD_SERIAL))
                continue
            row = bytes.fromhex(ident.decode())
        if len(words) > 2:
            bad.append((number, EXTRA))
            continue
        kinds.append(kind)
        rows.append(row)
    return kinds, rows, len(lines), bad


def test_one(data: bytes) -> None:
    if not data:
        return
    max_bad, text = data[0] & 15, data[1:]
    kinds, rows, nlines, nbad, first = _core.parse_ids(np.frombuffer(text, np.uint8), max_bad)
    want_kinds, want_rows, want_lines, want_bad = reference(text)
    common.check(kinds.tolist() == want_kinds, f"kinds {kinds.tolist()} != {want_kinds}", data)
    got_rows = [r.tobytes() for r in rows]
    common.check(got_rows == want_rows, f"rows {got_rows} != {want_rows}", data)
    common.check(nlines == want_lines, f"lines {nlines} != {want_lines}", data)
    common.check(nbad == len(want_bad), f"bad lines {nbad} != {len(want_bad)}", data)
    first = [(int(a), int(b)) for a, b in first]
    common.check(first == want_bad[:max_bad], f"first bad {first} != {want_bad[:max_bad]}", data)


if __name__ == "__main__":
    common.fuzz(test_one)
