"""engine.revocation.store.RevocationStore: exact answers, the Bloom filter's rate, deltas,
hot reload under concurrent look-ups, files replaced while mapped."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import subprocess
import sys
import tempfile
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from revocation_helpers import as_bytes, delta, random_cards, random_serials, snapshot

from engine import _core
from engine.revocation.format import (
    HEADER_SIZE,
    map_file,
    read_header,
    sbbf_fpr,
    seal_header,
)
from engine.revocation.input import RevocationInputError
from engine.revocation.source import SetRevocation
from engine.revocation.store import RevocationFileError, RevocationStore
from engine.tools.inspection import filter_fpr

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A snapshot of 60,000 cards and 60,000 credentials."""
    tmp = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(20)
    cards = np.unique(random_cards(rng, 60_000))
    serials = random_serials(rng, 60_000)
    path = snapshot(tmp, "big.snap", as_bytes(cards, 9), as_bytes(serials, 16), sequence=3)
    return path, cards, serials


def test_every_revoked_id_is_found(big):
    path, cards, serials = big
    store = RevocationStore(path)
    assert store.contains("card", cards).all()
    assert store.contains("credential", serials).all()
    assert store.contains("card", as_bytes(cards, 9)).all()
    assert store.contains("credential", as_bytes(serials, 16)).all()
    raw = serials.view(np.uint8).reshape(-1, 16)  # 2-D uint8 rows work too
    assert store.contains("credential", raw).all()


def test_id_columns_follow_the_core_s_one_rule_for_byte_strings(big):
    """As every batch call (_core._Column): bytes or bytearray items, a private copy of
    the sequence, and a bytearray held so that it cannot be resized under the look-up."""
    path, cards, _ = big
    store = RevocationStore(path)
    ids = [bytearray(c) for c in as_bytes(cards[:3000], 9)] + [b"X00000000"]
    found = store.contains("card", ids)
    assert found[:3000].all() and not found[3000]
    with pytest.raises(TypeError, match=r"ids\[1\]: expected bytes"):
        store.contains("card", [b"X00000000", "X00000001"])
    with pytest.raises(TypeError, match="not one string"):
        store.contains("card", b"X00000000")


def test_no_random_id_is_reported_revoked(big):
    path, cards, _ = big
    store = RevocationStore(path)
    rng = np.random.default_rng(21)
    other_serials = random_serials(rng, 1_000_000)
    other_cards = random_cards(rng, 500_000)
    other_cards = other_cards[~np.isin(other_cards, cards)]
    # The Bloom filter lets about 1% through; the exact tier stops every one.
    assert store.bloom_contains("credential", other_serials).sum() > 5_000
    assert store.contains("credential", other_serials).sum() == 0
    assert store.bloom_contains("card", other_cards).sum() > 2_500
    assert store.contains("card", other_cards).sum() == 0


@pytest.mark.parametrize("fpr", [0.01, 0.001])
def test_bloom_false_positive_rate_is_the_target(tmp_path, fpr):
    rng = np.random.default_rng(int(1 / fpr))
    members = random_serials(rng, 200_000)
    path = snapshot(tmp_path, "fpr.snap", (), as_bytes(members, 16), fpr=fpr)
    store = RevocationStore(path)
    queries = random_serials(rng, 2_000_000)  # not members: 2^-128 odds of a clash
    measured = store.bloom_contains("credential", queries).mean()
    # Sized from the split-block formula: at most the target, and within 10% of it
    # (2M queries: the sampling error is under 2.5% of the rate at 0.1%).
    blocks = map_file(path).arrays["bloom"].size // 8
    assert sbbf_fpr(200_000 / blocks) <= fpr
    assert abs(measured - fpr) / fpr < 0.10
    assert abs(measured - filter_fpr(map_file(path).arrays["bloom"])) / fpr < 0.10


def test_ids_of_the_wrong_length_or_kind(big):
    path, cards, serials = big
    store = RevocationStore(path)
    card, serial = as_bytes(cards[:1], 9)[0], as_bytes(serials[:1], 16)[0]
    assert store.is_revoked("card", card)
    assert store.is_revoked("credential", serial)
    assert not store.is_revoked("credential", card)  # 9 bytes: never a serial
    assert not store.is_revoked("card", serial)
    assert list(store.contains("card", [card + b"0", card[:8], b"", card])) == [0, 0, 0, 1]
    assert store.contains("card", []).shape == (0,)
    with pytest.raises(ValueError, match="kind"):
        store.contains("channel", [card])
    with pytest.raises(TypeError):
        store.contains("card", card)
    # A bytearray is read as the batch calls read one: pinned (test below), not refused.
    assert list(store.contains("card", [bytearray(card)])) == [1]
    with pytest.raises(TypeError):
        store.contains("card", np.zeros((10, 9), dtype=np.uint8)[:, ::2])


def test_threads_give_the_same_answers(big):
    path, _, serials = big
    rng = np.random.default_rng(3)
    queries = np.concatenate([serials[:5000], random_serials(rng, 200_000)])
    one = RevocationStore(path).contains("credential", queries)
    two = RevocationStore(path, threads=2).contains("credential", queries)
    assert np.array_equal(one, two)
    assert one[:5000].all() and not one[5000:].any()


def test_deltas_add_and_remove(tmp_path):
    rng = np.random.default_rng(4)
    cards = as_bytes(np.unique(random_cards(rng, 300)), 9)
    serials = as_bytes(random_serials(rng, 300), 16)
    snap = snapshot(tmp_path, "s", cards[:200], serials[:200], sequence=10, created_at=1000)
    d1 = delta(
        tmp_path,
        "d1",
        snap,
        add=(cards[200:250], serials[200:250]),
        remove=(cards[:20], serials[:20]),
        created_at=2000,
    )
    store = RevocationStore(snap, [d1])
    assert (store.sequence, store.created_at, store.snapshot_sequence) == (11, 2000.0, 10)
    revoked_cards = store.contains("card", cards)
    assert not revoked_cards[:20].any()  # reinstated
    assert revoked_cards[20:250].all()  # snapshot and added
    assert not revoked_cards[250:].any()
    revoked_serials = store.contains("credential", serials)
    assert not revoked_serials[:20].any() and revoked_serials[20:250].all()
    assert not revoked_serials[250:].any()

    # A later delta wins: it revokes card 0 again and reinstates card 200.
    d2 = delta(
        tmp_path,
        "d2",
        snap,
        add=(cards[:1], ()),
        remove=(cards[200:201], ()),
        sequence=12,
        created_at=3000,
    )
    store = RevocationStore(snap, [d2, d1])  # applied in sequence order, not list order
    revoked = store.contains("card", cards)
    assert revoked[0] and not revoked[1:20].any() and not revoked[200]
    assert revoked[20:200].all() and revoked[201:250].all()
    assert store.sequence == 12

    # An empty delta is a heartbeat: newer data, same answers.
    beat = delta(tmp_path, "beat", snap, sequence=13, created_at=5000)
    store = RevocationStore(snap, [d1, d2, beat])
    assert (store.sequence, store.created_at) == (13, 5000.0)
    assert np.array_equal(store.contains("card", cards), revoked)


def test_delta_mismatches_are_refused(tmp_path):
    rng = np.random.default_rng(5)
    cards = as_bytes(np.unique(random_cards(rng, 20)), 9)
    snap = snapshot(tmp_path, "s", cards[:10], sequence=4)
    d = delta(tmp_path, "d", snap, add=(cards[10:12], ()))
    other = snapshot(tmp_path, "o", cards[:10], sequence=5)
    with pytest.raises(RevocationFileError, match="applies to snapshot 4"):
        RevocationStore(other, [d])
    reseeded = snapshot(tmp_path, "r", cards[:10], sequence=4)  # same sequence, new seed
    with pytest.raises(RevocationFileError, match="another seed"):
        RevocationStore(reseeded, [d])
    twin = delta(tmp_path, "twin", snap, add=(cards[12:13], ()))
    with pytest.raises(RevocationFileError, match="repeats"):
        RevocationStore(snap, [d, twin])
    with pytest.raises(RevocationFileError, match="expected a snapshot"):
        RevocationStore(d)
    with pytest.raises(RevocationInputError, match="both added and removed"):
        delta(tmp_path, "both", snap, add=(cards[:2], ()), remove=(cards[1:3], ()))
    with pytest.raises(ValueError, match="after its snapshot"):
        delta(tmp_path, "old", snap, add=(cards[:2], ()), sequence=4)


def test_age_follows_the_clock(tmp_path):
    snap = snapshot(tmp_path, "s", [b"A00000001"], created_at=1_000_000)
    now = [1_000_100.0]
    store = RevocationStore(snap, clock=lambda: now[0])
    assert store.age == 100.0
    now[0] += 50
    assert store.age == 150.0


def test_reload_swaps_and_a_failed_reload_keeps_the_old_data(tmp_path):
    path = tmp_path / "live.snap"
    a = snapshot(tmp_path, "a", [b"A00000001"], sequence=1)
    b = snapshot(tmp_path, "b", [b"B00000002"], sequence=2)
    os.replace(a, path)
    store = RevocationStore(path)
    os.replace(b, path)  # the publisher renames a new snapshot over the old
    assert store.is_revoked("card", b"A00000001")  # still the mapped old one
    store.reload()
    assert store.is_revoked("card", b"B00000002") and not store.is_revoked("card", b"A00000001")
    assert store.sequence == 2

    broken = tmp_path / "broken"
    broken.write_bytes(b"ESSCREVS" + bytes(300))
    os.replace(broken, path)
    with pytest.raises(RevocationFileError, match=r"live\.snap"):
        store.reload()
    assert store.is_revoked("card", b"B00000002") and store.sequence == 2

    older = snapshot(tmp_path, "older", [b"C00000003"], sequence=1)
    with pytest.raises(RevocationFileError, match="older than the data in service"):
        store.reload(older)
    assert store.is_revoked("card", b"B00000002")
    store.reload(older, allow_older=True)  # a deliberate roll-back
    assert store.is_revoked("card", b"C00000003") and store.sequence == 1
    assert store.paths == (os.fspath(older), ())


def test_reload_while_other_threads_look_up(tmp_path):
    rng = np.random.default_rng(6)
    cards = np.unique(random_cards(rng, 40_000))
    half = len(cards) // 2
    a = snapshot(tmp_path, "a", as_bytes(cards[:half], 9), sequence=1)
    b = snapshot(tmp_path, "b", as_bytes(cards[half // 2 :], 9), sequence=2)
    queries = np.concatenate([cards, random_cards(rng, 20_000)])
    store = RevocationStore(a)
    expected = {a: store.contains("card", queries)}
    expected[b] = RevocationStore(b).contains("card", queries)
    assert not np.array_equal(expected[a], expected[b])

    # Readers record (generation at the start of the call, answer); the reloader
    # moves on only when every reader has finished a call started after its reload,
    # so every generation is observed without any sleep.
    cond = threading.Condition()
    generation = [0]
    latest = [-1, -1]
    stop = threading.Event()
    seen: list[tuple[int, int]] = []  # (generation, which data)
    errors: list[BaseException] = []
    current = [a]
    by_generation = {0: a}

    def reader(slot: int) -> None:
        try:
            while not stop.is_set():
                with cond:
                    gen = generation[0]
                answer = store.contains("card", queries)
                which = [p for p, e in expected.items() if np.array_equal(answer, e)]
                assert which, "an answer that is neither the old data nor the new"
                with cond:
                    seen.append((gen, which[0]))
                    latest[slot] = gen
                    cond.notify_all()
        except BaseException as e:  # reported by the main thread
            errors.append(e)
            with cond:
                latest[slot] = 10**9
                cond.notify_all()

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(30):
            with cond:
                cond.wait_for(lambda: min(latest) >= generation[0], timeout=60)
            nxt = b if current[0] == a else a
            store.reload(nxt, allow_older=True)
            current[0] = nxt
            with cond:
                generation[0] += 1
                by_generation[generation[0]] = nxt
        with cond:
            cond.wait_for(lambda: min(latest) >= generation[0], timeout=60)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    first = {}
    for gen, which in seen:
        first.setdefault(gen, which)
    # The first answer of each generation was given from exactly that generation's data.
    assert all(first[g] == by_generation[g] for g in range(1, 31))


def _run_child(code: str, tmp: pathlib.Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    return subprocess.run(
        [sys.executable, "-c", code, str(tmp)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


REPLACE_WHILE_MAPPED = """
import os, pathlib, sys
import numpy as np
from revocation_helpers import as_bytes, random_cards, snapshot
from engine.revocation.store import RevocationStore
tmp = pathlib.Path(sys.argv[1])
rng = np.random.default_rng(7)
cards = np.unique(random_cards(rng, 100_000))
old, new = cards[:50_000], cards[50_000:]
path = snapshot(tmp, "live.snap", as_bytes(old, 9), sequence=1)
store = RevocationStore(path)
for round in range(3):
    # Rename-over: the mapped inode lives on until the store lets go of it.
    snapshot(tmp, "live.snap", as_bytes(new, 9), sequence=2 + round)
    assert store.contains("card", old).all()       # every page of the old file
    assert not store.contains("card", new).any()
    store.contains("card", random_cards(rng, 500_000))
store.reload()
assert store.contains("card", new).all() and not store.contains("card", old).any()
print("ok")
"""


def test_a_file_replaced_on_disk_while_mapped_keeps_serving(tmp_path):
    # In a child process: a SIGBUS would kill it, not the test run.
    result = _run_child(REPLACE_WHILE_MAPPED, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


IN_PLACE = """
import os, pathlib, shutil, sys
from revocation_helpers import snapshot
from engine import _core
from engine.revocation.store import RevocationStore
tmp = pathlib.Path(sys.argv[1])
cards = [b"A%08d" % i for i in range(200_000)]
path = snapshot(tmp, "live.snap", cards, sequence=1, seed=1)
other = snapshot(tmp, "other.snap", cards, sequence=2, seed=2)  # same ids, other seed
store = RevocationStore(path, private_dir=tmp / "private")
shutil.copyfile(other, path)  # what cp, rsync --inplace and install do: same inode
assert store.contains("card", cards).all(), "revoked cards read as good"
assert store.sequence == 1  # the data as loaded, until a reload validates the new file
os.truncate(path, 0)
assert store.contains("card", cards).all(), "truncated in place"
try:
    store.reload()
except Exception as e:
    print("refused:", e)
assert store.contains("card", cards).all() and store.sequence == 1
shutil.copyfile(other, path)
store.reload()
assert store.contains("card", cards).all() and store.sequence == 2
print("ok")
"""


def test_files_written_or_truncated_in_place_change_nothing_in_service(tmp_path):
    # In a child process: were the configured file mapped, truncating it would end the
    # reader with SIGBUS, and overwriting it would make every revoked card read as good.
    result = _run_child(IN_PLACE, tmp_path)
    assert result.returncode == 0, (result.returncode, result.stderr)
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("refused:") and "truncated" in lines[0], lines
    assert lines[-1] == "ok"


PRIVATE_COPY_LOST = """
import os, pathlib, sys
from revocation_helpers import snapshot
from engine import _core
from engine.revocation.store import RevocationStore
tmp = pathlib.Path(sys.argv[1])
cards = [b"A%08d" % i for i in range(200_000)]
path = snapshot(tmp, "live.snap", cards)
store = RevocationStore(path, private_dir=tmp / "private")
(copy,) = (tmp / "private").iterdir()
os.chmod(copy, 0o600)
os.truncate(copy, 4096)  # the storage under the mapping fails: pages are gone
for attempt in range(2):
    try:
        store.contains("card", cards)
        print("answered")
    except _core.RevocationDataUnreadable as e:
        print("unreadable", store.faulted)
store.reload()  # the configured file is intact: a fresh copy is made and validated
print(store.contains("card", cards).all(), store.faulted, _core.fault_guard_caught())
"""


@pytest.mark.skipif(sys.platform != "linux", reason="Linux page-cache behaviour")
def test_unreadable_mapped_data_fails_closed_instead_of_crashing(tmp_path):
    result = _run_child(PRIVATE_COPY_LOST, tmp_path)
    assert result.returncode == 0, (result.returncode, result.stderr)
    assert result.stdout.split("\n")[:3] == ["unreadable True", "unreadable True", "True False 1"]


def test_private_copies_are_shared_and_pruned(tmp_path):
    cards = [b"B%08d" % i for i in range(1000)]
    first = snapshot(tmp_path, "a.snap", cards, sequence=1)
    private = tmp_path / "private"
    one = RevocationStore(first, private_dir=private)
    two = RevocationStore(first, private_dir=private)  # another process on the host
    (copy,) = private.iterdir()
    assert oct(copy.stat().st_mode & 0o777) == "0o400"
    assert one.is_revoked("card", cards[0]) and two.is_revoked("card", cards[-1])
    snapshot(tmp_path, "a.snap", cards[:10], sequence=2)
    os.utime(copy, (0, 0))  # loaded long ago: prunable once nothing here serves it
    one.reload()
    assert [p.name for p in private.iterdir()] == [
        f"snapshot-2-{p.name.split('-')[2]}" for p in private.iterdir()
    ]
    # The unlinked copy is still mapped by the other store: its answers stand.
    assert two.is_revoked("card", cards[-1]) and not one.is_revoked("card", cards[-1])


def test_the_private_directory_must_be_private(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    path = snapshot(tmp_path, "s.snap", [b"C00000001"])
    with pytest.raises(RevocationFileError, match="mode 0700"):
        RevocationStore(path, private_dir=shared)


def test_a_delta_not_after_its_snapshot_is_refused(tmp_path):
    # The builder refuses to write one; a hand-made file must be refused as well.
    base = snapshot(tmp_path, "base.snap", [b"D00000001"], sequence=5)
    good = delta(tmp_path, "good.delta", base, add=([b"D00000002"], ()), sequence=6)
    data = good.read_bytes()
    header = dataclasses.replace(read_header(good), sequence=5)
    packed = header.pack()
    payload = data[HEADER_SIZE:]
    same = tmp_path / "same.delta"
    same.write_bytes(seal_header(packed, _core.crc32c(payload, _core.crc32c(packed))) + payload)
    with pytest.raises(RevocationFileError, match="sequence 5 is not after its snapshot's 5"):
        RevocationStore(base, [same], private_dir=tmp_path / "private")


CARD_IDS = st.builds(
    lambda letter, number: f"{letter}{number:08d}".encode(),
    st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    st.integers(0, 99_999_999),
)
SERIALS = st.binary(min_size=16, max_size=16)


@settings(max_examples=40, deadline=None)
@given(
    snap_cards=st.sets(CARD_IDS, max_size=40),
    snap_serials=st.sets(SERIALS, max_size=40),
    deltas=st.lists(
        st.tuples(st.sets(CARD_IDS, max_size=10), st.sets(CARD_IDS, max_size=10)),
        max_size=3,
    ),
    others=st.sets(CARD_IDS, max_size=30),
    serial_queries=st.sets(SERIALS, max_size=20),
)
def test_matches_a_set_model(snap_cards, snap_serials, deltas, others, serial_queries):
    with tempfile.TemporaryDirectory() as d:
        tmp = pathlib.Path(d)
        snap = snapshot(tmp, "s", sorted(snap_cards), sorted(snap_serials), sequence=1)
        model = set(snap_cards)
        paths = []
        for i, (add, remove) in enumerate(deltas):
            remove = remove - add
            paths.append(
                delta(
                    tmp,
                    f"d{i}",
                    snap,
                    add=(sorted(add), ()),
                    remove=(sorted(remove), ()),
                    sequence=2 + i,
                )
            )
            model = (model - remove) | add
        store = RevocationStore(snap, paths)
        queries = sorted(snap_cards | others | {c for a, r in deltas for c in a | r})
        assert list(store.contains("card", queries)) == [q in model for q in queries]
        serials = sorted(snap_serials | serial_queries)
        assert list(store.contains("credential", serials)) == [s in snap_serials for s in serials]


def test_concurrent_batches_from_two_threads(big):
    path, _, serials = big
    store = RevocationStore(path)
    rng = np.random.default_rng(8)
    queries = np.concatenate([serials, random_serials(rng, 300_000)])
    results: list[np.ndarray] = [None, None]  # type: ignore[list-item]

    def work(i: int) -> None:
        results[i] = store.contains("credential", queries)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        assert r[: len(serials)].all() and not r[len(serials) :].any()


@pytest.fixture
def portable_loop():
    """Runs a test with the portable look-up loop, then restores the default."""
    from engine import _core

    default = _core.revocation_simd()
    _core.revocation_simd(False)
    yield
    _core.revocation_simd(default)


def test_the_avx2_and_portable_loops_agree(tmp_path, portable_loop):
    from engine import _core

    rng = np.random.default_rng(12)
    cards = np.unique(random_cards(rng, 30_000))
    serials = random_serials(rng, 30_000)
    snap = snapshot(tmp_path, "s", as_bytes(cards[:20_000], 9), as_bytes(serials, 16))
    d = delta(
        tmp_path,
        "d",
        snap,
        add=(as_bytes(cards[20_000:25_000], 9), ()),
        remove=(as_bytes(cards[:5_000], 9), as_bytes(serials[:5_000], 16)),
    )
    store = RevocationStore(snap, [d])
    others = random_cards(rng, 300_000)
    card_q = np.concatenate([cards, others[~np.isin(others, cards)]])
    serial_q = np.concatenate([serials, random_serials(rng, 300_000)])
    assert not _core.revocation_simd()
    portable = [
        store.contains("card", card_q),
        store.contains("credential", serial_q),
        store.bloom_contains("credential", serial_q),
    ]
    _core.revocation_simd(True)
    fast = [
        store.contains("card", card_q),
        store.contains("credential", serial_q),
        store.bloom_contains("credential", serial_q),
    ]
    for a, b in zip(portable, fast):
        assert np.array_equal(a, b)
    expected = np.zeros(len(card_q), dtype=bool)
    expected[5_000:25_000] = True
    assert np.array_equal(portable[0], expected)
    # The store's Bloom answers are the filter's, probed by hash outside the loop.
    rows = serial_q.view(np.uint8).reshape(-1, 16)
    kinds = np.full(len(rows), _core.KIND_CREDENTIAL, dtype=np.uint8)
    h1 = _core.fingerprint_rows(store.snapshot_file.header.seed, kinds, rows)[:, 0]
    assert np.array_equal(
        portable[2], _core.bloom_probe_hashes(store.snapshot_file.arrays["bloom"], h1)
    )


def test_set_revocation_agrees_with_the_store_on_serials_ending_in_zero_bytes(tmp_path):
    """numpy's S16 drops trailing NUL bytes from the elements it hands out; the
    in-memory source must still find such serials, as the mapped store does."""
    rng = np.random.default_rng(21)
    serials = random_serials(rng, 64)
    raw = serials.view(np.uint8).reshape(-1, 16)
    raw[:16, -1] = 0  # ends in one zero byte
    raw[16:24, -5:] = 0  # ends in five
    revoked, kept = serials[::2].copy(), serials[1::2].copy()
    cards = random_cards(rng, 8)
    path = snapshot(tmp_path, "z.snap", as_bytes(cards, 9), as_bytes(revoked, 16))
    store = RevocationStore(path)
    mem = SetRevocation(as_bytes(cards, 9), as_bytes(revoked, 16))
    for ids in (serials, as_bytes(serials, 16)):
        want = store.contains("credential", ids)
        assert want.tolist() == [True, False] * 32
        assert mem.contains("credential", ids).tolist() == want.tolist()
    assert mem.contains("card", cards).all() and store.contains("card", cards).all()
    assert not mem.contains("credential", kept).any()
