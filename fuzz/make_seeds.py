"""Writes the committed seed corpus, fuzz/corpus/<harness>/, from valid objects made by
the engine's own code (run once; rerun when a format changes):

    .venv/bin/python fuzz/make_seeds.py [--out fuzz/corpus]

Every seed is in its harness's input format (docs/TESTING.md, "Fuzzing"): most start
with one or two option bytes, followed by the real message, text or file.
"""

from __future__ import annotations

import argparse
import hashlib
import pathlib
import shutil
import struct
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "fuzz" / "py"))

import common  # noqa: E402

common.load_core()  # the regular build, or ESSC_FUZZ_CORE's

import msgpack  # noqa: E402
import nacl.signing  # noqa: E402
import numpy as np  # noqa: E402

from engine import _core  # noqa: E402
from engine.revocation.build import Signer, build_delta, build_snapshot  # noqa: E402
from engine.revocation.format import map_file  # noqa: E402
from engine.tools.pki import init as init_pki  # noqa: E402
from engine.tools.scenarios import Scenarios  # noqa: E402
from engine.verdicts import Verdict  # noqa: E402
from engine.wire import protocol as proto  # noqa: E402


def write_corpus(out: pathlib.Path, name: str, seeds: list[bytes]) -> None:
    d = out / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    for s in seeds:
        (d / hashlib.sha1(s).hexdigest()).write_bytes(s)
    print(f"{name}: {len(seeds)} seeds, {sum(map(len, seeds))} bytes")


def payload(frame: bytes) -> bytes:
    return frame[4:]


def presentations(tmp: pathlib.Path) -> list[bytes]:
    pki = init_pki(tmp / "pki")
    now_s = int(time.time())
    sc = Scenarios(pki, now_s, holders_per_outcome=1)
    outcomes = [Verdict.OK, Verdict.EXPIRED, Verdict.UNKNOWN_ISSUER, Verdict.BAD_HOLDER_SIGNATURE]
    return sc.presentations(outcomes, now_s * 1000)


def requests(pres: list[bytes]) -> list[bytes]:
    ctx = {"merchant_id": "m-0042", "terminal_id": "pos:7.a_B"}
    frames = [
        proto.request(1, "verify", presentation=pres[0]),
        proto.request(2**40, "verify", presentation=pres[1], context=ctx),
        proto.request(7, "verify_batch", presentations=pres[:3]),
        proto.request(8, "verify_batch", presentations=[b"x" * 300, b""], context={}),
        proto.request(9, "verify", presentation=pres[2], context=None, note={"a": [1, 2.5]}),
        proto.request(10, "ping"),
        proto.request(11, "status"),
        proto.request(12, "revocation_check", cards=["G12345678"], credentials=[bytes(16)]),
        # Limits: context values of 64 and 1 characters, 4 items (max_items 4 below).
        proto.request(
            13, "verify_batch", presentations=[pres[0]] * 4, context={"merchant_id": "M" * 64}
        ),
        proto.request(2**64 - 1, "verify", presentation=b"", context={"terminal_id": "-"}),
    ]
    # A non-canonical but valid encoding: the id as uint64, the type as str8.
    odd = b"\x83\xa2id\xcf" + struct.pack(">Q", 5) + b"\xa4type\xd9\x06verify"
    odd += b"\xacpresentation" + msgpack.packb(pres[3], use_bin_type=True)
    return [payload(f) for f in frames] + [odd]


def revocation_files(tmp: pathlib.Path) -> list[bytes]:
    listing = tmp / "ids.txt"
    listing.write_text(
        "# revoked ids\ncard G12345678\ncard A00000001\n"
        + "".join(f"credential {i:032x}\n" for i in range(1, 13))
    )
    adds = tmp / "add.txt"
    adds.write_text("card B22222222\ncredential " + "ab" * 16 + "\n")
    removes = tmp / "rm.txt"
    removes.write_text("card G12345678\n")
    empty = tmp / "empty.txt"
    empty.write_text("")
    snap, dl, de = tmp / "s.snap", tmp / "d.delta", tmp / "e.delta"
    build_snapshot(snap, [listing], sequence=3, seed=0x1234, created_at=1_700_000_000)
    build_delta(dl, snap, add=[adds], remove=[removes], created_at=1_700_000_100)
    build_delta(de, snap, add=[empty], remove=[empty], sequence=5, created_at=1_700_000_200)
    # Signed (format version 2): the same data with a manifest.
    signer = Signer("rev-pub-01", SIGNING_KEY)
    ss, sd = tmp / "signed.snap", tmp / "signed.delta"
    build_snapshot(ss, [listing], sequence=3, seed=0x1234, created_at=1_700_000_000, signer=signer)
    build_delta(sd, ss, add=[adds], remove=[removes], created_at=1_700_000_100, signer=signer)
    return [p.read_bytes() for p in (snap, dl, de, ss, sd)]


SIGNING_KEY = nacl.signing.SigningKey(bytes(32))  # fuzz/py/signed_objects.py's key


def signed_objects(tmp: pathlib.Path, files: list[bytes]) -> list[bytes]:
    """An index, manifests and trust lists (v1 and v2), each after its selector byte."""
    import dataclasses

    from engine.revocation.format import read_manifest
    from engine.revocation.publication import INDEX_FILE, publish

    signer = Signer("rev-pub-01", SIGNING_KEY)
    pub = tmp / "pub"
    listing = tmp / "pub-ids.txt"
    listing.write_text("card G12345678\n")
    publish(pub, signer, snapshot=[listing], now=1_700_000_000)
    publish(pub, signer, add=[listing], now=1_700_000_100)
    out = [bytes([0]) + (pub / INDEX_FILE).read_bytes()]
    for name in ("signed.snap", "signed.delta"):
        out.append(bytes([1]) + read_manifest(tmp / name).encode())
    pki = init_pki(tmp / "pki-signed")
    trust = pki.trust_list
    v1 = dataclasses.replace(trust, version=1, publishers={}).signed(pki.root_signing_key())
    out += [bytes([2]) + trust.encode(), bytes([2]) + v1.encode()]
    return out


def fpset_seeds(snapshot: pathlib.Path) -> list[bytes]:
    m = map_file(snapshot)
    fps = np.ascontiguousarray(m.arrays["fps"])
    out = []
    for bits in (0, 1, 2, 3):
        index = _core.fpset_index(fps, bits)
        steps = np.diff(index, prepend=0).astype(np.int8).tobytes()
        head = bytes([bits, len(fps)])
        out.append(head + steps + fps.tobytes())  # one-byte steps
        out.append(bytes([bits | 8, len(fps)]) + index.tobytes() + fps.tobytes())  # raw u64
    return out


def proxy_headers() -> list[bytes]:
    """PROXY v2 headers (TCP over IPv4 and IPv6 with a TLV, LOCAL, UNSPEC) followed by
    a frame; byte 0 is the harness's cut seed."""
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    v4 = bytes([203, 0, 113, 7, 127, 0, 0, 1]) + struct.pack(">HH", 51234, 7700)
    v6 = bytes(15) + b"\x01" + bytes(15) + b"\x02" + struct.pack(">HH", 443, 7700)
    tlv = b"\x05" + struct.pack(">H", 4) + b"uid1"
    frame = proto.request(1, "ping")
    headers = [
        sig + b"\x21\x11" + struct.pack(">H", len(v4)) + v4,
        sig + b"\x21\x21" + struct.pack(">H", len(v6 + tlv)) + v6 + tlv,
        sig + b"\x20\x00\x00\x00",
        sig + b"\x21\x00\x00\x03" + b"\x04\x00\x00",
    ]
    return [bytes([k * 37]) + h + frame for k, h in enumerate(headers)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "fuzz" / "corpus")
    ap.add_argument("--only", default="", help="comma-separated corpora (default: all)")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))

    def write(out: pathlib.Path, name: str, seeds: list[bytes]) -> None:
        if not only or name in only:
            write_corpus(out, name, seeds)

    with tempfile.TemporaryDirectory() as t:
        tmp = pathlib.Path(t)
        pres = presentations(tmp)
        reqs = requests(pres)
        files = revocation_files(tmp)
        snap = tmp / "s.snap"
        snap.write_bytes(files[0])
        fpset = fpset_seeds(snap)
        signed = signed_objects(tmp, files)
    write(args.out, "presentation", pres)
    write(args.out, "wire", [bytes([m]) + r for r in reqs for m in (4, 255)])
    stream = b"".join(struct.pack(">I", len(r)) + r for r in reqs[:3])
    write(
        args.out,
        "framing",
        [bytes([255, 7]) + stream, bytes([9, 0]) + stream[:300], bytes([255, 40]) + b"\0" * 8],
    )
    text = (
        b"# revoked ids\ncard G12345678\n\ncredential 00112233445566778899aabbccddeeff  # c\n"
        b"\tcard A00000001\r\ncredential 00112233445566778899AABBCCDDEEFF\ncard Q9\nfoo bar\n"
    )
    write(args.out, "id_parse", [bytes([4]) + text, bytes([0]) + b"card Z99999999"])
    write(args.out, "fpset", fpset)
    write(args.out, "revocation", [bytes([7]) + f for f in files] + [bytes([0]) + files[1]])
    write(args.out, "proxy_protocol", proxy_headers())
    write(args.out, "signed_objects", signed)


if __name__ == "__main__":
    main()
