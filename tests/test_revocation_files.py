"""Revocation files and their tools: every kind of damage is caught and named, bad
input lines are reported by line, wallet files are read, and the CLI works."""

from __future__ import annotations

import json
import os
import pathlib
import re
import struct

import numpy as np
import pytest
from revocation_helpers import as_bytes, delta, random_cards, random_serials, snapshot

from engine import _core
from engine.cli import main as cli
from engine.revocation import input as revocation_input
from engine.revocation.build import build_snapshot
from engine.revocation.format import HEADER_SIZE, map_file, read_header
from engine.revocation.input import RevocationInputError
from engine.revocation.store import RevocationFileError, RevocationStore
from engine.tools.inspection import describe_revocation as describe


@pytest.fixture
def snap(tmp_path):
    rng = np.random.default_rng(1)
    return snapshot(
        tmp_path,
        "s.snap",
        as_bytes(np.unique(random_cards(rng, 3000)), 9),
        as_bytes(random_serials(rng, 3000), 16),
        sequence=7,
    )


def reseal(data: bytearray) -> bytearray:
    """Makes an edited header self-consistent again (both checksums recomputed)."""
    crc = _core.crc32c(bytes(data[:248]))
    full = _core.crc32c(bytes(data[HEADER_SIZE:]), crc)
    data[248:256] = struct.pack("<II", crc, full)
    return data


def damaged(path: pathlib.Path, edit) -> pathlib.Path:
    data = bytearray(path.read_bytes())
    edited = edit(data)  # edits in place (None) or returns a new image
    if edited is not None:
        data = edited
    out = path.with_name("damaged-" + path.name)
    out.write_bytes(bytes(data))
    return out


def assert_refused(path: pathlib.Path, pattern: str) -> None:
    with pytest.raises(RevocationFileError) as info:
        map_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert re.search(pattern, message), message
    with pytest.raises(RevocationFileError):
        RevocationStore(path)


def set_u32(offset: int, value: int):
    def edit(d: bytearray) -> None:
        d[offset : offset + 4] = struct.pack("<I", value)

    return edit


def set_u64(offset: int, value: int):
    def edit(d: bytearray) -> None:
        d[offset : offset + 8] = struct.pack("<Q", value)

    return edit


def test_bad_magic(snap):
    assert_refused(damaged(snap, lambda d: d.__setitem__(slice(0, 8), b"NOTAFILE")), "magic")


def test_wrong_version(snap):
    assert_refused(damaged(snap, set_u32(8, 3)), r"unsupported format version 3")


@pytest.mark.parametrize("keep", [0, 7, 15, 100, 255])
def test_truncated_inside_the_header(snap, keep):
    assert_refused(damaged(snap, lambda d: d[:keep]), "truncated")


@pytest.mark.parametrize("cut", [1, 4096, 100_000])
def test_truncated_payload(snap, cut):
    assert_refused(damaged(snap, lambda d: d[:-cut]), r"header says \d+ bytes, the file has")


def test_extended_file(snap):
    assert_refused(damaged(snap, lambda d: d + b"\0"), r"header says \d+ bytes, the file has")


def test_flipped_header_byte(snap):
    def flip(d: bytearray) -> None:
        d[33] ^= 0x01  # the sequence number

    assert_refused(damaged(snap, flip), "header checksum mismatch")


@pytest.mark.parametrize("section", [0, 1, 2])
@pytest.mark.parametrize("where", [0.0, 0.5, 0.999])
def test_flipped_payload_byte(snap, section, where):
    h = read_header(snap)
    offset, length = h.sections[section]

    def flip(d: bytearray) -> None:
        d[offset + int(where * (length - 1))] ^= 0x10

    assert_refused(damaged(snap, flip), "checksum mismatch")


def test_flipped_padding_byte(snap):
    def flip(d: bytearray) -> None:
        d[HEADER_SIZE + 5] ^= 0xFF  # between the header and the first section

    assert_refused(damaged(snap, flip), "checksum mismatch")


def test_unknown_hash_id(snap):
    assert_refused(damaged(snap, lambda d: reseal(set_u32(16, 99)(d) or d)), "unknown hash id 99")


def test_sections_that_do_not_fit(snap):
    h = read_header(snap)
    past_end = set_u64(112 + 16 * 2, h.file_size + 4096)
    assert_refused(damaged(snap, lambda d: reseal(past_end(d) or d)), "misplaced or past the end")
    more_cards = set_u64(64, h.cards + 1)
    assert_refused(damaged(snap, lambda d: reseal(more_cards(d) or d)), "the counts say")
    odd_bloom = set_u64(112 + 8, h.sections[0][1] - 4)
    assert_refused(damaged(snap, lambda d: reseal(odd_bloom(d) or d)), "whole blocks")


def test_checksummed_but_inconsistent_index(snap):
    # Only a broken writer makes this, but a look-up must never run off the end.
    h = read_header(snap)
    offset = h.sections[1][0]
    bad = set_u64(offset + 8 * 3, 10**12)
    assert_refused(damaged(snap, lambda d: reseal(bad(d) or d)), "bucket index")


def test_damaged_delta(snap, tmp_path):
    d = delta(tmp_path, "d.delta", snap, add=([b"Q00000001"], ()), remove=([], []))

    def flip(data: bytearray) -> None:
        data[-1] ^= 1

    assert_refused(damaged(d, flip), "checksum mismatch")
    with pytest.raises(RevocationFileError, match=r"damaged-d\.delta"):
        RevocationStore(snap, [damaged(d, flip)])


def test_missing_file(tmp_path):
    with pytest.raises(RevocationFileError, match="cannot open"):
        RevocationStore(tmp_path / "nothing")


def test_bad_input_lines_stop_the_build_with_line_numbers(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text(
        "card A00000001\ncard a00000002\n# fine\ncredential xyz\ncard B00000003\nchannel hrss-app\n"
    )
    with pytest.raises(RevocationInputError) as info:
        build_snapshot(tmp_path / "out", [src])
    message = str(info.value)
    assert "3 malformed line(s)" in message
    assert f"{src}:2: a card number is a capital letter and 8 digits: 'card a00000002'" in message
    assert f"{src}:4: a credential serial is 32 hex digits" in message
    assert f"{src}:6: expected 'card' or 'credential'" in message
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".*tmp")) and not list(tmp_path.glob(".revocation-build-*"))

    r = build_snapshot(tmp_path / "out", [src], skip_bad=True)
    assert r.bad.count == 3 and len(r.bad.first) == 3
    assert (r.header.cards, r.header.credentials) == (2, 0)
    store = RevocationStore(tmp_path / "out")
    assert list(store.contains("card", [b"A00000001", b"B00000003"])) == [True, True]


def test_line_numbers_across_read_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(revocation_input, "CHUNK_BYTES", 64)  # lines straddle chunks
    lines = [f"card A{i:08d}" for i in range(100)]
    lines[57] = "card A1234"
    lines[98] = "credential 00"
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines))  # and no final newline
    r = build_snapshot(tmp_path / "out", [src], skip_bad=True)
    assert r.bad.count == 2
    assert r.bad.first[0].startswith(f"{src}:58: ")
    assert r.bad.first[1].startswith(f"{src}:99: ")
    assert r.header.cards == 98
    cards = [f"A{i:08d}".encode() for i in range(100) if i not in (57, 98)]
    assert RevocationStore(tmp_path / "out").contains("card", cards).all()


def test_duplicates_are_dropped_and_inputs_combined(tmp_path):
    a = tmp_path / "a.txt"
    b = tmp_path / "b.txt"
    a.write_text("card A00000001\ncard A00000001\ncredential " + "ab" * 16 + "\n")
    b.write_text("credential " + "AB" * 16 + "\ncard C00000009\n")
    r = build_snapshot(tmp_path / "out", [a, b])
    assert (r.read, r.header.cards, r.header.credentials) == (5, 2, 1)


@pytest.fixture(scope="module")
def wallet_file(tmp_path_factory):
    from engine.tools import issuance, pki

    d = tmp_path_factory.mktemp("wallets")
    opened = pki.init(d / "pki")
    issuance.issue_to_file(opened, 50, d / "w.bin", rng_seed=3, progress=False)
    return d / "w.bin"


def test_wallet_file_input_by_serial_and_by_card(tmp_path, wallet_file):
    from engine.formats import wallets
    from engine.formats.credentials import Credential

    creds = [Credential.decode(w.credential) for w in wallets.read(wallet_file)]
    r = build_snapshot(tmp_path / "serials", [wallet_file])
    assert (r.header.cards, r.header.credentials) == (0, 50)
    store = RevocationStore(tmp_path / "serials")
    assert store.contains("credential", [c.serial for c in creds]).all()
    assert not store.contains("card", [c.card_number.encode() for c in creds]).any()

    r = build_snapshot(tmp_path / "cards", [wallet_file], by="card")
    assert (r.header.cards, r.header.credentials) == (50, 0)
    store = RevocationStore(tmp_path / "cards")
    assert store.contains("card", [c.card_number.encode() for c in creds]).all()


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_build_delta_check_inspect(tmp_path, capsys, wallet_file):
    src = tmp_path / "revoked.txt"
    src.write_text("card G12345678\ncredential " + "0f" * 16 + "\n")
    snap = tmp_path / "rev.snap"
    code, out, _ = run_cli(
        capsys, "revocation", "build", "--quiet", "--out", str(snap), "--sequence", "7", str(src)
    )
    assert code == 0 and "snapshot 7, 1 cards and 1 credentials" in out
    add = tmp_path / "add.txt"
    add.write_text("card H00000001\n")
    rm = tmp_path / "rm.txt"
    rm.write_text("card G12345678\n")
    d = tmp_path / "rev-8.delta"
    code, out, _ = run_cli(
        capsys,
        "revocation",
        "delta",
        "--quiet",
        "--base",
        str(snap),
        "--out",
        str(d),
        "--add",
        str(add),
        "--remove",
        str(rm),
    )
    assert code == 0 and "delta 8 on snapshot 7" in out
    code, out, _ = run_cli(
        capsys,
        "revocation",
        "check",
        str(snap),
        "--delta",
        str(d),
        "card:G12345678",
        "card:H00000001",
        "credential:" + "0F" * 16,
        "credential:" + "00" * 16,
    )
    assert code == 0
    assert out.splitlines() == [
        "card:G12345678: not revoked",
        "card:H00000001: revoked",
        "credential:" + "0F" * 16 + ": revoked",
        "credential:" + "00" * 16 + ": not revoked",
    ]
    code, _, err = run_cli(capsys, "revocation", "check", str(snap), "card:G1")
    assert code == 2 and "capital letter and 8 digits" in err

    code, out, _ = run_cli(capsys, "revocation", "inspect", "--json", str(snap), str(d))
    assert code == 0
    docs = [json.loads(x) for x in re.split(r"(?m)^(?=\{)", out) if x.strip()]
    assert docs[0]["type"] == "revocation_snapshot" and docs[0]["entries"] == 2
    assert docs[0]["hash"] == "xxh64-pair-v1 (id 1)" and docs[0]["sequence"] == 7
    assert docs[1]["type"] == "revocation_delta" and docs[1]["applies_to_snapshot"] == 7
    assert (docs[1]["added_cards"], docs[1]["removed_cards"]) == (1, 1)
    code, out, _ = run_cli(capsys, "revocation", "inspect", str(snap))
    assert code == 0 and "bloom bits per entry:" in out and "checksum: ok (crc32c)" in out

    # The general inspector recognises revocation files by their magic.
    code, out, _ = run_cli(capsys, "inspect", str(snap))
    assert code == 0 and json.loads(out)["type"] == "revocation_snapshot"
    broken = damaged(snap, lambda b: b[:-1])
    code, _, err = run_cli(capsys, "inspect", str(broken))
    assert code == 2 and str(broken) in err and "header says" in err
    code, _, err = run_cli(capsys, "revocation", "inspect", str(broken))
    assert code == 2 and str(broken) in err

    # Wallet input with --by card, and bad input lines through the CLI.
    code, out, _ = run_cli(
        capsys,
        "revocation",
        "build",
        "--quiet",
        "--by",
        "card",
        "--out",
        str(snap),
        str(wallet_file),
    )
    assert code == 0 and "50 cards and 0 credentials" in out
    src.write_text("card G12345678\ncard nope\n")
    code, _, err = run_cli(capsys, "revocation", "build", "--quiet", "--out", str(snap), str(src))
    assert code == 2 and f"{src}:2:" in err and "--skip-bad" in err
    code, out, err = run_cli(
        capsys, "revocation", "build", "--quiet", "--skip-bad", "--out", str(snap), str(src)
    )
    assert code == 0 and "skipped 1 malformed line(s)" in err and f"{src}:2:" in err


def test_describe_reports_sizes_and_rates(snap):
    doc = describe(snap)
    assert doc["entries"] == doc["cards"] + doc["credentials"]
    assert 10 < doc["bloom_bits_per_entry"] < 11.5
    assert abs(doc["bloom_fpr"] - 0.01) < 0.003
    assert doc["file_bytes"] == os.path.getsize(snap)
