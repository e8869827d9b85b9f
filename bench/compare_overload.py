"""The engine under twice the load it can take: goodput and the latency of what it
answers, with the queueing-time admission bound (``server.max_queue_ms``) and without.

One engine server per setting (``python -m engine serve``, one verification worker),
pinned to core 0 while the load generator runs on core 1 (``taskset``, where the
machine has two cores or more), so that the generator's work never lands on the
server's core.  For each setting, in the same run:

1. peak: closed loop, ``CONCURRENCY`` requests in flight (what the server can do);
2. overload: open loop at twice that peak, with pipelines deep enough that the
   generator never holds requests back (the server sees the whole offered load).

Goodput is the rate of answers other than BUSY during the overload run; its ratio to
the same server's peak is the figure (docs/PROTOCOL.md section 6: BUSY instead of
queueing).  The latency is the corrected p99 of the non-BUSY answers (the load
generator leaves BUSY out of its latency figures).  Corpus and trust material are
compare_server's (cached under var/bench/server/).
"""

from __future__ import annotations

import os
import shutil

from bench import compare_server as cs
from bench.harness import Row

TOPIC = "overload"
CONCURRENCY = 256
CONNECTIONS, PIPELINE = 8, 1024  # overload: 8,192 may wait in the generator's pipelines
P99_BOUND_MS = 50.0  # the non-BUSY answers' p99 the hardening issue asks for under 2x
GOODPUT_TARGET = 0.9


def _pins() -> tuple[tuple[str, ...], tuple[str, ...]]:
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ("taskset", "-c", "0"), ("taskset", "-c", "1")
    return (), ()


def run(quick: bool) -> list[Row]:
    plan = cs.QUICK if quick else cs.FULL
    corpus_dir = cs.corpus()
    cfg = cs.engine_config(corpus_dir)
    server_pin, load_pin = _pins()
    settings = {
        "max_queue_ms=20 (default)": [],
        "max_queue_ms=0 (count bounds only)": ["--set", "server.max_queue_ms=0"],
    }
    results = {}
    for label, extra in settings.items():
        name = "overload-" + label.split()[0].replace("=", "")
        argv = [
            *server_pin,
            *cs._py("-m", "engine", "serve", "--config", str(cfg), "--workers", "1", *extra),
        ]
        server = cs.ServerProcess(name, argv)
        try:
            n = int(cs.PRESIGN_CEILING_RPS * (plan.warmup_s + plan.peak_s)) // 4 + CONCURRENCY
            peak = cs.load(
                server,
                corpus_dir,
                ["--concurrency", str(CONCURRENCY), "--presign", str(n)],
                plan.peak_s,
                plan,
                f"{name}-peak",
                prefix=load_pin,
            )
            rate = 2 * peak.throughput
            over = cs.load(
                server,
                corpus_dir,
                ["--rate", f"{rate:.0f}", "--presign"],
                plan.open_s,
                plan,
                f"{name}-2x",
                prefix=load_pin,
                connections=CONNECTIONS,
                pipeline=PIPELINE,
            )
        finally:
            server.stop()
        results[label] = (peak, over)
    rows = []
    for label, (peak, over) in results.items():
        c = over.doc["counts"]
        goodput = (c["requests"] - c["busy"]) / over.doc["measured_s"]
        wrong = c["mismatches"] or sum(c["errors"].values())
        note = (
            f"peak {peak.throughput:,.0f} req/s, offered {2 * peak.throughput:,.0f} req/s; "
            f"{c['busy']:,} of {c['requests']:,} answers BUSY; {over.cpu_note()}; "
            f"server pinned: {' '.join(server_pin) or 'no'}; command: {over.command}"
        )
        rows.append(
            Row(
                TOPIC,
                f"goodput at 2x peak, {label}",
                "non-BUSY answers",
                goodput,
                "peak, closed loop",
                peak.throughput,
                "req/s",
                None if quick else GOODPUT_TARGET,
                note,
                valid=not wrong,
            )
        )
        rows.append(
            Row(
                TOPIC,
                f"p99 of non-BUSY answers at 2x peak, {label}",
                "corrected p99",
                over.p99_ms,
                "bound",
                P99_BOUND_MS,
                "ms",
                None if quick else 1.0,
                "from the intended send times (coordinated omission corrected)",
                higher_is_better=False,
                valid=not wrong,
            )
        )
    return rows
