"""The whole server against the baseline server, both driven by the load generator.

Both servers (``python -m engine serve`` and ``python -m bench.baseline_server``) and
every load run (``python -m loadgen run``) are subprocesses on 127.0.0.1 with free
ports, always stopped at the end.  One corpus (default mix: mostly valid, every
failure kind a payment network meets) is built once and cached under
var/bench/server/; the engine serves its revocation input as a snapshot made by
``python -m engine revocation build``, the baseline reads the same text file.

The runs, each at the same load-generator settings for both servers, in rounds that
alternate baseline and engine so that load from other processes falls on both alike
(the best round of each counts; the notes give every round):

1. peak: closed loop, ``CONCURRENCY`` requests in flight;
2. equal offered load: open loop at half the baseline's peak (a rate it sustains):
   corrected p99 and CPU per request side by side;
3. the engine alone, open loop at half its own peak: p99 against the brief's 5 ms.

Server CPU comes from /proc/PID/stat (utime + stime: every thread of the process)
around each load run, so warm-up and drain are in it, as are the requests they
answered; the engine's share in native verification comes from its ``status``
(``native_verify_cpu_s`` / ``cpu_s``, docs/PROTOCOL.md) around its peak rounds.
The load generator shares the machine's cores with the server under test; the
notes say how much CPU each took.  So that its signing does not take cores from the
server while the server is measured, every run signs its requests ahead
(``--presign``, docs/OPERATIONS.md): an open loop its whole schedule, a closed loop
a generous count (``PRESIGN_CEILING_RPS`` for a server's first round, then 1.3 times
its best rate so far; a round that uses them up ends early and is measured over the
time it ran).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import pathlib
import resource
import signal
import subprocess
import sys
import time

from bench.harness import Row

ROOT = pathlib.Path(__file__).resolve().parent.parent
CACHE = ROOT / "var" / "bench" / "server"
TOPIC = "server"
CARDS = 10_000
CORPUS_SEED = 7
CORPUS_MAX_AGE_S = 86_400  # rebuilt daily: its credentials and trust list age
CONNECTIONS, PIPELINE = 4, 64
CONCURRENCY = CONNECTIONS * PIPELINE  # closed loop: every pipeline slot in use
P99_BOUND_MS = 5.0
PRESIGN_CEILING_RPS = 100_000  # closed-loop signing ahead, before a server's rate is known
SIGNERS = os.cpu_count() or 2  # signing happens before the clock: every core may sign
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass(frozen=True)
class Plan:
    warmup_s: float
    peak_s: float  # measured seconds of each closed-loop run
    open_s: float  # measured seconds of each open-loop run
    peak_rounds: int  # alternating baseline / engine rounds; the best of each counts
    open_rounds: int


FULL = Plan(warmup_s=1.0, peak_s=5.0, open_s=8.0, peak_rounds=3, open_rounds=2)
QUICK = Plan(warmup_s=0.3, peak_s=1.0, open_s=1.0, peak_rounds=1, open_rounds=1)


# --- material ---------------------------------------------------------------------------------


def _shown(path: pathlib.Path) -> str:
    """Relative to the repository root where it can be: the commands in notes read so."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def _py(*args: str) -> list[str]:
    return [sys.executable, *args]


def _check(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if proc.returncode:
        raise RuntimeError(f"{what} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")


def corpus() -> pathlib.Path:
    """PKI and corpus, made once (again when a day old or incomplete)."""
    pki, out = CACHE / "pki", CACHE / "corpus"
    manifest = out / "corpus.json"
    if manifest.exists() and time.time() - manifest.stat().st_mtime < CORPUS_MAX_AGE_S:
        return out
    import shutil

    shutil.rmtree(pki, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    _check(_py("-m", "engine", "pki", "init", str(pki)), "engine pki init")
    _check(
        _py(
            "-m",
            "loadgen",
            "corpus",
            "--pki",
            str(pki),
            "--cards",
            str(CARDS),
            "--out",
            str(out),
            "--seed",
            str(CORPUS_SEED),
        ),
        "loadgen corpus",
    )
    return out


def engine_config(corpus_dir: pathlib.Path) -> pathlib.Path:
    """A fresh revocation snapshot (its age is checked by the server) and a config."""
    from engine.tools.pki import Pki, ensure_publisher

    # A cached PKI from before revocation data was signed gets its publisher key.
    pki = ensure_publisher(Pki.open(CACHE / "pki"))
    snap = CACHE / "revocation.snap"
    _check(
        _py(
            "-m",
            "engine",
            "revocation",
            "build",
            "--quiet",
            "--signing-key",
            str(pki.publisher_key_path),
            "--out",
            str(snap),
            str(corpus_dir / "revoked.txt"),
        ),
        "engine revocation build",
    )
    cfg = CACHE / "engine.toml"
    # Everything else stays at its default: the server is measured as ops would run it.
    cfg.write_text(
        '[server]\nhost = "127.0.0.1"\nport = 0\n\n[metrics]\nport = 0\n\n'
        f'[trust]\nroot_public_key = "{pki.root_public_key.hex()}"\n'
        f'trust_list = "{pki.trust_list_path.resolve()}"\n\n'
        f'[revocation]\nsnapshot = "{snap.resolve()}"\n'
    )
    return cfg


# --- processes --------------------------------------------------------------------------------


def _stop_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM to the process group we started (the server drains), SIGKILL if it hangs."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


class ServerProcess:
    """A server subprocess; its log (stdout and stderr) goes to a file, never a pipe
    that could fill up and stall it."""

    def __init__(self, name: str, argv: list[str], *, timeout: float = 60.0):
        self.name = name
        self.log_path = CACHE / f"{name}.log"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            self.port = self._wait_listening(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_listening(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_path.read_text().splitlines():
                with contextlib.suppress(ValueError, AttributeError):
                    doc = json.loads(line)
                    if doc.get("event") == "listening":
                        return int(doc["address"].rsplit(":", 1)[1])
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        tail = self.log_path.read_text()[-2000:]
        raise RuntimeError(f"{self.name} server did not start listening: {tail}")

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cpu_s(self) -> float:
        """User + system CPU seconds of the process, all its threads."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime

    def stop(self) -> None:
        _stop_group(self.proc, grace=15)


def engine_status(port: int) -> dict:
    from engine.wire.client import Client

    async def go():
        async with await Client.connect("127.0.0.1", port, timeout=10) as client:
            return await asyncio.wait_for(client.status(), 10)

    return asyncio.run(go())


def _machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / CLK_TCK  # all but idle and iowait


@dataclasses.dataclass
class Load:
    """One load run against one server, with the CPU that went where over it."""

    doc: dict  # the load generator's --json output
    command: str
    server_cpu_s: float
    loadgen_cpu_s: float  # the generator and its signing workers
    other_cpu_s: float  # everything else on the machine meanwhile
    wall_s: float
    status: tuple[dict, dict] | None = None  # engine status before and after

    @property
    def throughput(self) -> float:
        return self.doc["throughput"]["requests_per_s"]

    @property
    def p99_ms(self) -> float:
        return self.doc["latency_ms"]["corrected"]["p99"]

    @property
    def answered(self) -> int:
        # Warm-up and drain are inside the CPU interval, so their answers count too.
        return self.doc["counts"]["requests"] + self.doc["warmup"]["requests"]

    @property
    def faults(self) -> list[str]:
        """What makes this run's verdicts or figures wrong: mismatches, errors, BUSY."""
        out = []
        for phase in ("counts", "warmup"):
            c = self.doc[phase]
            if c["mismatches"] or c["errors"] or c["busy"]:
                out.append(
                    f"{phase}: {c['mismatches']} MISMATCHES, {sum(c['errors'].values())} "
                    f"errors, {c['busy']} BUSY"
                )
        if self.doc.get("aborted"):
            out.append(f"ABORTED: {self.doc['aborted']}")
        return out

    @property
    def ran_out(self) -> bool:
        return bool(self.doc["settings"].get("ran_out"))

    @property
    def limited(self) -> str | None:
        """The load generator's own statement when it, not the server, set the pace."""
        return self.doc["schedule"].get("message")

    def cpu_note(self) -> str:
        return (
            f"CPU over {self.wall_s:.1f} s: server {self.server_cpu_s:.1f} s, load generator "
            f"{self.loadgen_cpu_s:.1f} s, other processes {self.other_cpu_s:.1f} s"
        )


def load(
    server: ServerProcess,
    corpus_dir: pathlib.Path,
    mode: list[str],
    seconds: float,
    plan: Plan,
    label: str,
    *,
    status: bool = False,
    prefix: tuple[str, ...] = (),
    connections: int = CONNECTIONS,
    pipeline: int = PIPELINE,
) -> Load:
    """Runs ``python -m loadgen run`` against ``server`` and returns what it measured
    (``prefix``: a command the generator runs under, e.g. taskset)."""
    out = CACHE / f"load-{label}.json"  # kept, for a closer look
    out.unlink(missing_ok=True)
    argv = _py(
        "-m",
        "loadgen",
        "run",
        "--target",
        server.target,
        "--corpus",
        _shown(corpus_dir),
        *mode,
        "--connections",
        str(connections),
        "--pipeline",
        str(pipeline),
        "--duration",
        f"{seconds:g}",
        "--warmup",
        f"{plan.warmup_s:g}",
        "--workers",
        str(SIGNERS),
        "--quiet",
        "--json",
        _shown(out),
    )
    argv = [*prefix, *argv]
    before = engine_status(server.port) if status else None
    own0 = resource.getrusage(resource.RUSAGE_SELF)
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0, busy0, start = server.cpu_s(), _machine_busy_s(), time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, err = proc.communicate(timeout=seconds + plan.warmup_s + 120)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"load run {label} did not finish: {' '.join(argv)}") from None
    finally:
        _stop_group(proc, grace=5)
    cpu, busy, wall = server.cpu_s() - cpu0, _machine_busy_s() - busy0, time.monotonic() - start
    own1 = resource.getrusage(resource.RUSAGE_SELF)
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    after = engine_status(server.port) if status else None
    # Exit 1 (mismatches, errors) still writes the JSON, and those runs are reported.
    if proc.returncode not in (0, 1) or not out.exists():
        raise RuntimeError(
            f"load run {label} failed ({proc.returncode}): {err.strip()[-2000:]}\n"
            f"command: {' '.join(argv)}"
        )
    loadgen = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
    own = (own1.ru_utime + own1.ru_stime) - (own0.ru_utime + own0.ru_stime)
    return Load(
        doc=json.loads(out.read_text()),
        command=" ".join("python" if a == sys.executable else a for a in argv),
        server_cpu_s=cpu,
        loadgen_cpu_s=loadgen,
        other_cpu_s=max(0.0, busy - cpu - loadgen - own),
        wall_s=wall,
        status=(before, after) if status else None,
    )


# --- the comparison ---------------------------------------------------------------------------


def _alternating(rounds: int, runs: dict, out: dict | None = None) -> dict[str, list[Load]]:
    """Each round runs every callable once, in order, so a burst of load from other
    processes falls on both servers alike; returns each one's runs (in ``out``, filled
    as they finish, when given)."""
    if out is None:
        out = {name: [] for name in runs}
    for r in range(rounds):
        for name, fn in runs.items():
            out[name].append(fn(r))
    return out


def _per_1k(runs: list[Load]) -> float:
    return 1000 * sum(x.server_cpu_s for x in runs) / max(sum(x.answered for x in runs), 1)


def _spread(runs: list[Load], fmt) -> str:
    return " / ".join(fmt(x) for x in runs)


def _verdicts(runs: list[Load]) -> str:
    total: dict[str, int] = {}
    for x in runs:
        for k, v in x.doc["counts"]["verdicts"].items():
            total[k] = total.get(k, 0) + v
    return ", ".join(f"{k} {v:,}" for k, v in total.items())


def _faults(named: dict[str, list[Load]]) -> tuple[str, bool]:
    """(what went wrong, in words; whether the runs are valid)."""
    found = [f"{name}: {f}" for name, runs in named.items() for x in runs for f in x.faults]
    if found:
        return "FAULTS: " + " | ".join(found), False
    return "0 mismatches, errors or BUSY", True


def _limits(named: dict[str, list[Load]]) -> str:
    found = {f"{name}: {x.limited}" for name, runs in named.items() for x in runs if x.limited}
    return " | ".join(sorted(found))


def _ran_out(named: dict[str, list[Load]]) -> str:
    found = [
        f"{name} round {k + 1} ({x.doc['measured_s']:.1f} s)"
        for name, runs in named.items()
        for k, x in enumerate(runs)
        if x.ran_out
    ]
    if not found:
        return ""
    return "used up its signed-ahead requests and ended early: " + ", ".join(found)


def _note(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def run(quick: bool) -> list[Row]:
    plan = QUICK if quick else FULL
    corpus_dir = corpus()
    cfg = engine_config(corpus_dir)
    rows: list[Row] = []
    engine = baseline = None
    try:
        engine = ServerProcess("engine", _py("-m", "engine", "serve", "--config", str(cfg)))
        baseline = ServerProcess(
            "baseline",
            _py(
                "-m",
                "bench.baseline_server",
                "--pki",
                str(CACHE / "pki"),
                "--port",
                "0",
                "--revoked",
                str(corpus_dir / "revoked.txt"),
            ),
        )

        def runner(server, mode, seconds, label, status=False):
            return lambda r: load(
                server, corpus_dir, mode(r), seconds, plan, f"{label}-{r + 1}", status=status
            )

        def opened(rate):
            return lambda r: ["--rate", f"{rate:g}", "--presign"]

        # 1. Peak throughput: closed loop, the same settings for both.
        peak: dict[str, list[Load]] = {"baseline": [], "engine": []}

        def closed(name):
            def mode(r):
                done = peak[name]
                rate = max(x.throughput for x in done) * 1.3 if done else PRESIGN_CEILING_RPS
                n = int(rate * (plan.warmup_s + plan.peak_s)) + CONCURRENCY
                return ["--concurrency", str(CONCURRENCY), "--presign", str(n)]

            return mode

        _alternating(
            plan.peak_rounds,
            {
                "baseline": runner(baseline, closed("baseline"), plan.peak_s, "baseline-peak"),
                "engine": runner(engine, closed("engine"), plan.peak_s, "engine-peak", status=True),
            },
            peak,
        )
        b_best = max(peak["baseline"], key=lambda x: x.throughput)
        e_best = max(peak["engine"], key=lambda x: x.throughput)
        what = f"peak, closed loop, {CONCURRENCY} in flight"
        text, valid = _faults(peak)
        rows.append(
            Row(
                TOPIC,
                what,
                "engine",
                e_best.throughput,
                "baseline server",
                b_best.throughput,
                unit="req/s",
                target=None if quick else 2.0,
                valid=valid,
                note=_note(
                    f"best of {plan.peak_rounds} alternating rounds of {plan.peak_s:g} s; "
                    f"engine {_spread(peak['engine'], lambda x: f'{x.throughput:,.0f}')}, "
                    f"baseline {_spread(peak['baseline'], lambda x: f'{x.throughput:,.0f}')} "
                    "req/s",
                    text,
                    f"verdicts (engine) {_verdicts(peak['engine'])}",
                    _limits(peak),
                    _ran_out(peak),
                    f"engine best round {e_best.cpu_note()}",
                    f"baseline best round {b_best.cpu_note()}",
                    f"command: {e_best.command}",
                ),
            )
        )
        rows.append(
            Row(
                TOPIC,
                "CPU s per 1,000 requests at peak",
                "engine",
                _per_1k(peak["engine"]),
                "baseline server",
                _per_1k(peak["baseline"]),
                unit="CPU s",
                higher_is_better=False,
                valid=valid,
                note="/proc/PID/stat (utime + stime) over all the rounds, divided by the "
                "requests answered (warm-up included)",
            )
        )
        cpu = native = 0.0
        for x in peak["engine"]:
            s0, s1 = x.status
            cpu += s1["cpu_s"] - s0["cpu_s"]
            native += s1["native_verify_cpu_s"] - s0["native_verify_cpu_s"]
        rows.append(
            Row(
                TOPIC,
                "CPU share in native verification at peak",
                "native verification",
                native / cpu if cpu > 0 else 0.0,
                "all server CPU",
                1.0,
                unit="of CPU",
                target=None if quick else 0.8,
                valid=valid,
                note=f"status over the engine's peak rounds: native_verify_cpu_s +{native:.2f} s "
                f"of cpu_s +{cpu:.2f} s (/proc/PID/stat: "
                f"{sum(x.server_cpu_s for x in peak['engine']):.2f} s)",
            )
        )

        # 2. Equal offered load: a rate the baseline sustains, the same for both.
        rate = max(1.0, round(b_best.throughput / 2))
        equal = _alternating(
            plan.open_rounds,
            {
                "baseline": runner(baseline, opened(rate), plan.open_s, "baseline-equal"),
                "engine": runner(engine, opened(rate), plan.open_s, "engine-equal"),
            },
        )
        b_eq = min(equal["baseline"], key=lambda x: x.p99_ms)
        e_eq = min(equal["engine"], key=lambda x: x.p99_ms)
        what = f"open loop at {rate:,.0f} req/s = baseline peak / 2"
        text, valid = _faults(equal)
        rows.append(
            Row(
                TOPIC,
                f"p99, {what}",
                "engine",
                e_eq.p99_ms,
                "baseline server",
                b_eq.p99_ms,
                unit="ms",
                higher_is_better=False,
                valid=valid,
                note=_note(
                    f"corrected p99 (from intended send times), best of {plan.open_rounds} "
                    f"alternating rounds of {plan.open_s:g} s; engine "
                    f"{_spread(equal['engine'], lambda x: f'{x.p99_ms:.2f}')}, baseline "
                    f"{_spread(equal['baseline'], lambda x: f'{x.p99_ms:.2f}')} ms",
                    text,
                    _limits(equal),
                    f"engine best round {e_eq.cpu_note()}",
                    f"baseline best round {b_eq.cpu_note()}",
                    f"command: {e_eq.command}",
                ),
            )
        )
        rows.append(
            Row(
                TOPIC,
                f"CPU s per 1,000 requests at {rate:,.0f} req/s",
                "engine",
                _per_1k(equal["engine"]),
                "baseline server",
                _per_1k(equal["baseline"]),
                unit="CPU s",
                higher_is_better=False,
                valid=valid,
            )
        )

        # 3. The engine alone at half its own peak: the brief's latency bound.
        half = max(1.0, round(e_best.throughput / 2))
        halves = _alternating(
            plan.open_rounds,
            {"engine": runner(engine, opened(half), plan.open_s, "engine-half")},
        )
        e_half = min(halves["engine"], key=lambda x: x.p99_ms)
        lat = e_half.doc["latency_ms"]["corrected"]
        text, valid = _faults(halves)
        rows.append(
            Row(
                TOPIC,
                f"p99, open loop at {half:,.0f} req/s = engine peak / 2",
                "engine p99",
                e_half.p99_ms,
                f"bound {P99_BOUND_MS:g} ms",
                P99_BOUND_MS,
                unit="ms",
                higher_is_better=False,
                target=None if quick else 1.0,
                valid=valid,
                note=_note(
                    f"ratio = bound / p99: 1 or more means p99 under {P99_BOUND_MS:g} ms; "
                    f"corrected p99, best of {plan.open_rounds} rounds of {plan.open_s:g} s "
                    f"({_spread(halves['engine'], lambda x: f'{x.p99_ms:.2f}')} ms); in the "
                    f"best: p50 {lat['p50']:.2f}, p99.9 {lat['p99.9']:.2f} ms",
                    text,
                    _limits(halves),
                    e_half.cpu_note(),
                    f"command: {e_half.command}",
                ),
            )
        )
    finally:
        for server in (baseline, engine):
            if server is not None:
                server.stop()
    return rows
