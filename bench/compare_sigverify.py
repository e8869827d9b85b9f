"""Batch Ed25519 verification against libsodium's one-at-a-time verification.

Per-signature cost on one core at batch sizes 1 to 1024, for two workloads:

- ``distinct``: every signature under its own key;
- ``real mix``: the engine's traffic, an issuer and a holder signature per
  presentation: half the items under 31 issuer keys, half under distinct keys.

Subject: ``verify_batch(method="batch")``, one call per batch.  Baselines, measured in
the same run on the same items: the core's ``method="single"`` C loop (libsodium per
item) called the same way, and a plain PyNaCl loop (``VerifyKey(pk).verify``).
Then: the same without the AVX-512 IFMA code (what other CPUs get); batches with
invalid signatures in them; the MSM algorithms against each other by batch size
(where the batch path switches from Straus to Pippenger); and all cores: throughput
with every thread against cores x the one-thread rate.
"""

from __future__ import annotations

import os
import random
import resource

import nacl.signing
import numpy as np

from bench.harness import Row, rate
from engine import _core
from engine.sigverify import keypairs_from_seeds, sign_batch, verify_batch

TOPIC = "sigverify"
SIZES = [1, 4, 16, 64, 256, 1024]
ISSUERS = 31


def paired(fns, items: int, min_time: float, repeat: int) -> list[float]:
    """Best rates of several functions measured in alternating rounds, so that a burst
    of load from other processes falls on all of them alike."""
    best = [0.0] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            best[i] = max(best[i], rate(fn, items, min_time=min_time, repeat=1))
    return best


class OtherLoad:
    """CPU time other processes used while the block ran, as a share of the machine
    (from /proc/stat, minus this process's own CPU time)."""

    def _busy(self) -> tuple[float, float]:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + v[4]
        return (sum(v) - idle) / os.sysconf("SC_CLK_TCK"), sum(v) / os.sysconf("SC_CLK_TCK")

    def _own(self) -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def __enter__(self):
        self.busy0, self.total0 = self._busy()
        self.own0 = self._own()
        return self

    def __exit__(self, *exc):
        busy, total = self._busy()
        others = (busy - self.busy0) - (self._own() - self.own0)
        self.share = max(0.0, others) / max(total - self.total0, 1e-9)


def workload(kind: str, n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n (message, signature, key) rows as numpy arrays, all valid.

    Messages are 200 bytes, about a credential or a presentation."""
    rng = random.Random(seed)
    holders = n if kind == "distinct" else n // 2 + 1
    seeds = np.frombuffer(rng.randbytes(32 * (holders + ISSUERS)), dtype=np.uint8)
    pks, sks = keypairs_from_seeds(seeds.reshape(-1, 32))
    if kind == "distinct":
        which = list(range(n))
    else:  # issuer, holder, issuer, holder, ...: half the items under 31 keys
        which = [holders + rng.randrange(ISSUERS) if i % 2 == 0 else i // 2 for i in range(n)]
    msgs = np.frombuffer(rng.randbytes(200 * n), dtype=np.uint8).reshape(n, 200)
    sigs = sign_batch(msgs, np.ascontiguousarray(sks[which]))
    return msgs, sigs, np.ascontiguousarray(pks[which])


def per_batch(msgs, sigs, pks, size: int, method: str):
    """A function verifying all rows in calls of `size` items each, on one thread."""
    starts = range(0, len(msgs), size)

    def run():
        for s in starts:
            ok = verify_batch(
                msgs[s : s + size], sigs[s : s + size], pks[s : s + size], method=method, threads=1
            )
            if not ok.all():
                raise AssertionError("a valid signature was rejected")

    return run


def whole(msgs, sigs, pks, method: str, threads: int):
    """A function verifying all rows in one call on `threads` threads."""
    return lambda: verify_batch(msgs, sigs, pks, method=method, threads=threads)


def pynacl_loop(msgs, sigs, pks):
    rows = [(m.tobytes(), s.tobytes(), k.tobytes()) for m, s, k in zip(msgs, sigs, pks)]

    def run():
        for m, s, k in rows:
            nacl.signing.VerifyKey(k).verify(m, s)

    return run


def msm_rows(quick: bool, min_time: float, repeat: int) -> list[Row]:
    """Pippenger against Straus inside the batch path, by batch size, with the AVX-512
    IFMA code on (where the CPU has it) and off: ratio > 1 where Pippenger is faster."""
    msgs, sigs, pks = workload("distinct", 1024, seed=3)
    rows = []
    modes = [True, False] if _core.ed25519_simd() else [False]
    for simd in modes:
        was = _core.ed25519_simd(simd)
        try:
            sizes = [2, 4, 8, 16, 32] if simd else [32, 64, 96, 128, 256]
            for size in sizes if not quick else sizes[::2]:
                n = 256 if size < 64 else 1024

                def algo(name, size=size, n=n):
                    return lambda: _core._ed25519_test_verify_batch(
                        msgs[:n], sigs[:n], pks[:n], name, size
                    )

                straus, pipp = paired([algo("straus"), algo("pippenger")], n, min_time, repeat)
                label = "IFMA" if simd else "scalar"
                rows.append(
                    Row(
                        TOPIC,
                        f"MSM crossover, distinct, batch {size}",
                        f"Pippenger ({label})",
                        pipp,
                        "Straus",
                        straus,
                        unit="sigs/s",
                    )
                )
        finally:
            _core.ed25519_simd(was)
    return rows


def scalar_rows(quick: bool, min_time: float, repeat: int) -> list[Row]:
    """The batch path with the AVX-512 IFMA code switched off: what CPUs without it get."""
    if not _core.ed25519_simd():
        return []  # the main rows already are the scalar path
    rows = []
    total = 1024 if quick else 4096
    was = _core.ed25519_simd(False)
    try:
        for kind in ("distinct", "real mix"):
            msgs, sigs, pks = workload(kind, total, seed=4)
            for size in (64, 1024):
                batch, single = paired(
                    [
                        per_batch(msgs, sigs, pks, size, "batch"),
                        per_batch(msgs, sigs, pks, size, "single"),
                    ],
                    total,
                    min_time,
                    repeat,
                )
                rows.append(
                    Row(
                        TOPIC,
                        f"{kind}, batch {size}, 1 core, no IFMA",
                        "batch (scalar)",
                        batch,
                        "core single (libsodium)",
                        single,
                        unit="sigs/s",
                    )
                )
    finally:
        _core.ed25519_simd(was)
    return rows


def bad_rows(quick: bool, min_time: float, repeat: int) -> list[Row]:
    """Batches of 1024 with some invalid signatures (bisection finds them): the cost of
    one bad item, a few, and a batch that is all bad, against one-at-a-time."""
    rows = []
    msgs, sigs, pks = workload("distinct", 1024, seed=5)
    rng = random.Random(5)
    for bad in (1, 8, 64, 1024):
        s = sigs.copy()
        s[rng.sample(range(1024), bad), 40] ^= 1

        def check(method, s=s, bad=bad):
            def run():
                ok = verify_batch(msgs, s, pks, method=method, threads=1)
                if int((~ok).sum()) != bad:
                    raise AssertionError("wrong verdicts")

            return run

        batch, single = paired([check("batch"), check("single")], 1024, min_time, repeat)
        rows.append(
            Row(
                TOPIC,
                f"distinct, batch 1024 with {bad} bad, 1 core",
                "batch",
                batch,
                "core single (libsodium)",
                single,
                unit="sigs/s",
            )
        )
    return rows


def run(quick: bool) -> list[Row]:
    min_time, repeat = (0.05, 2) if quick else (0.4, 5)
    total = 1024 if quick else 4096
    rows: list[Row] = []
    for kind in ("distinct", "real mix"):
        msgs, sigs, pks = workload(kind, total)
        for size in SIZES:
            n = 256 if size < 64 else total  # small batches: fewer items, as many calls
            m, s, k = msgs[:n], sigs[:n], pks[:n]
            batch, single, pynacl = paired(
                [
                    per_batch(m, s, k, size, "batch"),
                    per_batch(m, s, k, size, "single"),
                    pynacl_loop(m, s, k),
                ],
                n,
                min_time,
                repeat,
            )
            target = (2.5 if kind == "distinct" else 3.0) if size >= 64 else None
            what = f"{kind}, batch {size}, 1 core"
            rows.append(
                Row(
                    TOPIC,
                    what,
                    "batch",
                    batch,
                    "core single (libsodium)",
                    single,
                    unit="sigs/s",
                    target=target,
                )
            )
            rows.append(Row(TOPIC, what, "batch", batch, "PyNaCl loop", pynacl, unit="sigs/s"))

    rows += scalar_rows(quick, min_time, repeat)
    rows += bad_rows(quick, min_time, repeat)
    rows += msm_rows(quick, min_time, repeat)

    cores = _core.cpu_count()
    kept = dropped = 0
    for kind in ("distinct", "real mix"):
        msgs, sigs, pks = workload(kind, 2048 * cores if quick else 8192 * cores, seed=2)
        n = len(msgs)
        for method in ("batch", "single"):
            fns = [whole(msgs, sigs, pks, method, 1), whole(msgs, sigs, pks, method, cores)]
            one = every = 0.0
            good = 0
            # Rounds during which other processes took CPU say nothing about scaling:
            # only rounds with the machine otherwise idle count (up to a limit).
            for _ in range(repeat * 8):
                with OtherLoad() as load:
                    r1, r2 = paired(fns, n, min_time, 1)
                if load.share > 0.05:
                    dropped += 1
                    continue
                one, every = max(one, r1), max(every, r2)
                good += 1
                if good == repeat:
                    break
            kept += good
            if good == 0:  # never idle: report what there is, flagged in the note
                one, every = r1, r2
            rows.append(
                Row(
                    TOPIC,
                    f"{kind}, {n} items, {cores} threads",
                    f"{method}, {cores} threads",
                    every,
                    f"{cores} x {method}, 1 thread",
                    cores * one,
                    unit="sigs/s",
                    target=0.9 if method == "batch" else None,
                )
            )
    rows[-1].note = (
        f"all-core rows: best of {kept} rounds with the machine otherwise idle; {dropped} "
        "rounds dropped because other processes used more than 5% of the CPU"
    )
    return rows
