"""atheris harness: the native presentation parser (esc_parse_presentation, engine/native/
presentation.c) against the reference decoder, engine/formats/credentials.py.

Input: one presentation.  The parse verdicts must agree (_core.parses, and the C
function itself called through ctypes from the loaded core), and for an accepted
presentation every field the native parser locates must hold what the reference
decoded: both bodies and signatures, key id, card number, region, channel, serial,
nonce, holder key, purpose, timestamp and validity window.
"""

from __future__ import annotations

import ctypes

import atheris
import common

_core = common.load_core()

with atheris.instrument_imports(include=["engine"]):
    from engine.formats.credentials import Presentation
    from engine.formats.encoding import FormatError

u8, u32, u64, i32 = ctypes.c_uint8, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int32


class Parsed(ctypes.Structure):  # esc_parsed, engine/native/presentation.h
    _fields_ = [
        *((name, u32) for name in ("pres_body", "pres_body_len", "pres_sig")),
        *((name, u32) for name in ("cred_body", "cred_body_len", "cred_sig")),
        *(
            (name, u32)
            for name in ("key_id", "card", "region", "channel", "serial", "nonce", "holder_key")
        ),
        ("key_id_len", u8),
        ("channel_len", u8),
        ("purpose", u8),
        ("timestamp_ms", u64),
        ("not_before", u64),
        ("not_after", u64),
        ("issuer", i32),
        ("channel_index", i32),
        ("verdict", u8),
        ("detail", u8),
    ]


_lib = ctypes.CDLL(_core.__file__)
_parse = _lib.esc_parse_presentation
_parse.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(Parsed)]
_parse.restype = ctypes.c_int


def reference(data: bytes):
    try:
        return Presentation.decode_parts(data)
    except FormatError:
        return None


def test_one(data: bytes) -> None:
    ref = reference(data)
    accepted = _core.parses(data)
    common.check(
        accepted == (ref is not None), f"native {accepted}, reference {ref is not None}", data
    )
    out = Parsed()
    rc = _parse(data, len(data), ctypes.byref(out))
    common.check(rc == accepted, "esc_parse_presentation and _core.parses differ", data)
    if not accepted:
        return
    pres, body, cred_body = ref
    cred = pres.credential

    def at(off: int, n: int) -> bytes:
        return data[off : off + n]

    fields = {
        "presentation body": (at(out.pres_body, out.pres_body_len), body),
        "presentation signature": (at(out.pres_sig, 64), pres.signature),
        "credential body": (at(out.cred_body, out.cred_body_len), cred_body),
        "credential signature": (at(out.cred_sig, 64), cred.signature),
        "issuer key id": (at(out.key_id, out.key_id_len), cred.issuer_key_id.encode()),
        "card number": (at(out.card, 9), cred.card_number.encode()),
        "region": (at(out.region, 6), cred.region.encode()),
        "channel": (at(out.channel, out.channel_len), cred.channel.encode()),
        "serial": (at(out.serial, 16), cred.serial),
        "nonce": (at(out.nonce, 16), pres.nonce),
        "holder key": (at(out.holder_key, 32), cred.holder_key),
        "purpose": (out.purpose, int(pres.purpose)),
        "timestamp_ms": (out.timestamp_ms, pres.timestamp_ms),
        "not_before": (out.not_before, cred.not_before),
        "not_after": (out.not_after, cred.not_after),
    }
    for name, (got, want) in fields.items():
        common.check(got == want, f"{name}: native {got!r}, reference {want!r}", data)


if __name__ == "__main__":
    common.fuzz(test_one)
