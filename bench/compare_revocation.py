"""Revocation look-ups side by side, in one run on one core.

The store's whole check (Bloom filter, then the exact tier on a hit) against:
rbloom and pybloomfiltermmap3 holding the same ids (called per key, their fastest
use from Python), numpy ``searchsorted`` over the snapshot's own sorted fingerprints,
and a bare probe of the store's Bloom filter (same hashing, no confirmation).

Full run: a 50-million-entry snapshot (a fifth cards, the rest credentials), built
through ``python -m engine revocation build`` from a generated text list and cached
under var/bench/revocation/ (several GiB of scratch space while building; the build's
time and peak memory are reported).  Quick run: a million entries.  Queries are
credential serials, 1% of them revoked, looked up in batches of 4096.
"""

from __future__ import annotations

import json
import os
import pathlib
import resource
import subprocess
import sys
import time

import numpy as np

from bench.harness import Row, rate

ROOT = pathlib.Path(__file__).resolve().parent.parent
CACHE = ROOT / "var" / "bench" / "revocation"
FULL_ENTRIES = 50_000_000
QUICK_ENTRIES = 1_000_000
CARD_SHARE = 0.2
REVOKED_SHARE = 0.01
BATCH = 4096
CHUNK = 1_000_000
SEED = 20_240_601
HASH_SEED = 0x5EED_0F_2E_70_CA_7E_D0


def chunk_ids(entries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Chunk k of the population: (card numbers (n, 9) uint8, serials (n, 16) uint8).

    Deterministic, so the benchmark can regenerate revoked ids without storing them.
    """
    n = min(CHUNK, entries - k * CHUNK)
    rng = np.random.default_rng([SEED, k])
    n_cards = int(n * CARD_SHARE)
    cards = np.empty((n_cards, 9), dtype=np.uint8)
    cards[:, 0] = rng.integers(ord("A"), ord("Z") + 1, n_cards)
    cards[:, 1:] = rng.integers(ord("0"), ord("9") + 1, (n_cards, 8))
    serials = np.frombuffer(rng.bytes(16 * (n - n_cards)), np.uint8).reshape(-1, 16)
    return cards, serials


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def input_text(cards: np.ndarray, serials: np.ndarray) -> bytes:
    """The build input for one chunk: `card X` and `credential HEX` lines."""
    c = np.empty((len(cards), 15), dtype=np.uint8)
    c[:, :5] = np.frombuffer(b"card ", np.uint8)
    c[:, 5:14] = cards
    c[:, 14] = ord("\n")
    s = np.empty((len(serials), 44), dtype=np.uint8)
    s[:, :11] = np.frombuffer(b"credential ", np.uint8)
    s[:, 11:43:2] = _HEX[serials >> 4]
    s[:, 12:43:2] = _HEX[serials & 15]
    s[:, 43] = ord("\n")
    return c.tobytes() + s.tobytes()


def snapshot(entries: int, *, quiet: bool = False) -> tuple[pathlib.Path, dict]:
    """The benchmark snapshot (built once, then cached) and how its build went."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"snapshot-{entries}.snap"
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("entries") == entries and meta.get("seed") == SEED:
            return path, meta
    text = CACHE / f"input-{entries}.txt"
    with open(text, "wb") as f:
        for k in range(-(-entries // CHUNK)):
            f.write(input_text(*chunk_ids(entries, k)))
    args = [
        "-m",
        "engine",
        "revocation",
        "build",
        "--out",
        os.path.relpath(path, ROOT),
        "--sequence",
        "1",
        "--seed",
        hex(HASH_SEED),
        *(["--quiet"] if quiet else []),
        os.path.relpath(text, ROOT),
    ]
    cmd = [sys.executable, *args]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    elapsed = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    meta = {
        "entries": entries,
        "seed": SEED,
        "input_bytes": text.stat().st_size,
        "build_seconds": round(elapsed, 1),
        "build_peak_rss_mib": round(peak_kib / 1024),
        "command": " ".join(["python", *args]),
    }
    text.unlink()
    meta_path.write_text(json.dumps(meta, indent=2))
    return path, meta


def queries(entries: int, n: int) -> tuple[np.ndarray, int]:
    """n credential serials, shuffled, REVOKED_SHARE of them in the snapshot."""
    rng = np.random.default_rng([SEED, 999_999])
    revoked = int(n * REVOKED_SHARE)
    pool = np.concatenate([chunk_ids(entries, k)[1] for k in range(min(2, -(-entries // CHUNK)))])
    picked = pool[rng.choice(len(pool), revoked, replace=False)]
    fresh = np.frombuffer(rng.bytes(16 * (n - revoked)), np.uint8).reshape(-1, 16)
    q = np.concatenate([picked, fresh])
    rng.shuffle(q)
    return np.ascontiguousarray(q), revoked


def _population_bytes(entries: int):
    """Every id of the snapshot as bytes objects, a chunk at a time."""
    for k in range(-(-entries // CHUNK)):
        cards, serials = chunk_ids(entries, k)
        for arr, width in ((cards, 9), (serials, 16)):
            raw = arr.tobytes()
            yield [raw[i : i + width] for i in range(0, len(raw), width)]


def run(quick: bool) -> list[Row]:
    import pybloomfilter
    import rbloom

    from engine import _core
    from engine.revocation.store import RevocationStore

    entries = QUICK_ENTRIES if quick else FULL_ENTRIES
    n_queries = 200_000 if quick else 1_000_000
    min_time = 0.2 if quick else 0.5
    path, meta = snapshot(entries, quiet=quick)
    store = RevocationStore(path)
    header = store.snapshot_file.header
    q_rows, revoked = queries(entries, n_queries)
    q_ids = q_rows.view("S16").reshape(-1)
    q_list = [r.tobytes() for r in q_rows]
    batches = [q_ids[i : i + BATCH] for i in range(0, n_queries, BATCH)]
    list_batches = [q_list[i : i + BATCH] for i in range(0, n_queries, BATCH)]

    def whole():
        return sum(int(store.contains("credential", b).sum()) for b in batches)

    def whole_list():
        return sum(int(store.contains("credential", b).sum()) for b in list_batches)

    def bare():
        return sum(int(store.bloom_contains("credential", b).sum()) for b in batches)

    assert whole() == revoked and whole_list() == revoked  # exact: all and only these

    # numpy over the snapshot's own sorted fingerprints (the exact tier without Bloom).
    fps = store.snapshot_file.arrays["fps"]
    h1 = np.ascontiguousarray(fps[:, 0])
    kinds = np.full(BATCH, _core.KIND_CREDENTIAL, dtype=np.uint8)
    row_batches = [q_rows[i : i + BATCH] for i in range(0, n_queries, BATCH)]

    def searchsorted():
        found = 0
        for rows in row_batches:
            fp = _core.fingerprint_rows(header.seed, kinds[: len(rows)], rows)
            pos = np.minimum(np.searchsorted(h1, fp[:, 0]), len(h1) - 1)
            found += int(((h1[pos] == fp[:, 0]) & (fps[pos, 1] == fp[:, 1])).sum())
        return found

    assert searchsorted() == revoked

    t = time.perf_counter()
    rb = rbloom.Bloom(entries, header.target_fpr)
    pb = pybloomfilter.BloomFilter(entries, header.target_fpr)
    for ids in _population_bytes(entries):
        rb.update(ids)
        pb.update(ids)
    fill_s = time.perf_counter() - t

    def per_key(filt):
        contains = filt.__contains__

        def fn():
            return sum(sum(map(contains, b)) for b in list_batches)

        return fn

    rb_pos, pb_pos = per_key(rb)(), per_key(pb)()
    bloom_pos = bare()

    r_whole = rate(whole, n_queries, min_time=min_time)
    r_list = rate(whole_list, n_queries, min_time=min_time)
    r_bare = rate(bare, n_queries, min_time=min_time)
    r_sorted = rate(searchsorted, n_queries, min_time=min_time)
    r_rb = rate(per_key(rb), n_queries, min_time=min_time)
    r_pb = rate(per_key(pb), n_queries, min_time=min_time)

    # The 10x target is set for a filter far larger than the caches (the full run);
    # at the quick size every filter is cached and Python's per-call cost dominates.
    per_key_target = None if quick else 10.0
    size = f"{entries / 1e6:g}M entries"
    subject = f"store.contains, S16 ids in batches of {BATCH}"
    what = f"look-ups, {size}, 1% revoked"
    unit = "ids/s"
    notes = {
        "rbloom": f"positives {rb_pos} of {n_queries} (revoked {revoked}); bytes hashes are "
        "cached in the key objects after the first round, which favours rbloom",
        "pybloom": f"positives {pb_pos}; both libraries filled with the same {entries:,} ids "
        f"in {fill_s:.0f} s"
        + ("; quick run: no 10x target, every filter fits in cache" if quick else ""),
        "bare": f"Bloom positives {bloom_pos}; the store's answers: exactly the {revoked} "
        "revoked ids",
        "build": f"snapshot {path.stat().st_size / 2**20:,.0f} MiB, built in "
        f"{meta['build_seconds']} s with peak RSS {meta['build_peak_rss_mib']} MiB from "
        f"{meta['input_bytes'] / 2**30:.2f} GiB of text: {meta['command']}",
    }
    return [
        Row(
            "revocation",
            what,
            subject,
            r_whole,
            "rbloom, per key",
            r_rb,
            unit,
            per_key_target,
            notes["rbloom"],
        ),
        Row(
            "revocation",
            what,
            subject,
            r_whole,
            "pybloomfiltermmap3, per key",
            r_pb,
            unit,
            per_key_target,
            notes["pybloom"],
        ),
        Row(
            "revocation",
            what,
            subject,
            r_whole,
            "numpy searchsorted, same fingerprints",
            r_sorted,
            unit,
            None,
            notes["build"],
        ),
        Row(
            "revocation",
            what,
            subject,
            r_whole,
            "bare Bloom probe, same filter",
            r_bare,
            unit,
            0.5,
            notes["bare"],
        ),
        Row(
            "revocation",
            what,
            "store.contains, list of bytes",
            r_list,
            "rbloom, per key",
            r_rb,
            unit,
            None,
            "the verifier's input today: one Python object per id",
        ),
        *reload_rows(store, path, size),
        *signed_reload_rows(store, path, size),
    ]


def _best(fn, rounds: int = 3) -> float:
    """The fastest of ``rounds`` calls, in seconds."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def signed_reload_rows(store, path: pathlib.Path, size: str) -> list[Row]:
    """A reload of the same snapshot signed (the manifest checked, every section's
    SHA-256 computed, the signature verified) against it unsigned, both with the
    private copy reused, best of three each, side by side."""
    import nacl.signing

    from engine.formats.trustlist import PublisherKey
    from engine.revocation.build import Signer, sign_file
    from engine.revocation.store import RevocationStore, SignaturePolicy

    key = nacl.signing.SigningKey(bytes(32))  # a fixed key: the bench's file is cached
    signer = Signer("bench-publisher", key)
    signed = path.with_name(path.stem + "-signed.snap")
    if not signed.exists() or signed.stat().st_mtime < path.stat().st_mtime:
        sign_file(path, signed, signer)
    publishers = {signer.key_id: PublisherKey(signer.key_id, bytes(key.verify_key), 0, 2**40)}
    signed_store = RevocationStore(signed, signatures=SignaturePolicy(publishers))

    unsigned_s, signed_s = _best(store.reload), _best(signed_store.reload)
    del signed_store
    mib = signed.stat().st_size / 2**20
    return [
        Row(
            "revocation",
            f"reload, {size} ({mib:,.0f} MiB)",
            "signed: manifest, SHA-256 of every section, signature",
            signed_s,
            "unsigned (CRC32C only)",
            unsigned_s,
            "s",
            None,
            "private copies reused in both; SHA-256 of the sections in parallel threads",
            higher_is_better=False,
        )
    ]


def reload_rows(store, path: pathlib.Path, size: str) -> list[Row]:
    """What serving a private copy costs a reload (engine.revocation.private), against
    mapping the configured file itself and checksumming it, as the engine used to."""
    from engine.revocation import private as private
    from engine.revocation.format import map_file

    def fresh_copy():
        private.prune(store.private_dir, set(), older_than_s=-1.0)  # nothing to reuse
        store.reload()

    direct = _best(lambda: map_file(path, kind="snapshot"))
    copied = _best(fresh_copy)
    reused = _best(store.reload)
    mib = path.stat().st_size / 2**20
    what = f"reload, {size} ({mib:,.0f} MiB)"
    note = (
        f"private copies in {store.private_dir}; the baseline maps the configured file and "
        "checksums it in place (what the engine did before: unsafe under in-place writes)"
    )
    return [
        Row(
            "revocation",
            what,
            "private copy made",
            copied,
            "direct map",
            direct,
            "s",
            None,
            note,
            higher_is_better=False,
        ),
        Row(
            "revocation",
            what,
            "private copy reused (another process made it)",
            reused,
            "direct map",
            direct,
            "s",
            None,
            "the source is read and checksummed, not written",
            higher_is_better=False,
        ),
    ]
