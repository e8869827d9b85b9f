"""``python -m loadgen``: make a corpus, run a load, find the peak (every command has --help).

Exit status: 0 when every verdict was as expected; 1 on any verdict mismatch, protocol
error or unanswered request (and on BUSY with --fail-on-busy, on a rate not held with
--fail-on-behind); 2 when the run could not start (bad arguments, corpus, server
unreachable, revocation data missing).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from engine import __version__
from engine.cli.exit import EXIT_FAILED as EXIT_FAIL
from engine.cli.exit import EXIT_OK, EXIT_UNUSABLE, run_command
from engine.errors import EsscError
from loadgen import corpus as corpus_mod
from loadgen.sources import default_workers


class UsageError(EsscError):
    """Arguments that cannot work together; printed as one line, exit status 2."""


def _target(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--target {text!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def _metrics_url(text: str) -> str:
    """--metrics HOST:PORT (its /metrics page) or a whole URL."""
    if "://" in text:
        return text
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--metrics {text!r}: expected HOST:PORT or a URL")
    return f"http://{text}/metrics"


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def _weights(args, corpus) -> dict[str, float]:
    weights = corpus.weights(corpus_mod.parse_mix(args.mix) if args.mix else None)
    for name in (args.exclude or "").split(","):
        name = name.strip()
        if not name:
            continue
        if name not in corpus_mod.OUTCOMES:
            raise UsageError(
                f"--exclude {name!r}: not an outcome ({', '.join(corpus_mod.OUTCOMES)})"
            )
        weights.pop(name, None)
    if not weights:
        raise UsageError("--mix/--exclude leave no outcome to send")
    return weights


# --- corpus -----------------------------------------------------------------------------------


def _corpus(args) -> int:
    mix = corpus_mod.parse_mix(args.mix) if args.mix else None
    started = time.perf_counter()
    c = corpus_mod.build(
        args.pki, args.cards, args.out, mix, freshness_ms=args.freshness_ms, seed=args.seed
    )
    total = sum(o.cards for o in c.outcomes)
    print(
        f"wrote a corpus of {total:,} cardholders to {args.out} in "
        f"{time.perf_counter() - started:.1f} s:"
    )
    weight = sum(o.weight for o in c.outcomes)
    for o in c.outcomes:
        expect = "OK, then REPLAYED" if o.name == "replayed" else o.expect.name
        print(
            f"  {o.name:<22} {o.cards:>9,} cardholders  {100 * o.weight / weight:5.1f}% "
            f"of presentations  expect {expect}"
        )
    cards, serials = c.revoked()
    print(
        f"revocation input: {c.revocation_path} ({len(cards):,} cards, "
        f"{len(serials):,} credentials)"
    )
    return EXIT_OK


# --- run --------------------------------------------------------------------------------------


def _settings(args, **overrides):
    from loadgen.driver import Settings

    host, port = _target(args.target)
    fields = dict(
        host=host,
        port=port,
        rate=getattr(args, "rate", None),
        concurrency=getattr(args, "concurrency", None),
        duration=getattr(args, "duration", None),
        requests=getattr(args, "requests", None),
        warmup=args.warmup,
        connections=args.connections,
        pipeline=args.pipeline,
        arrivals=args.arrivals,
        interval=args.interval,
        max_lag_ms=args.max_lag_ms,
        drain_timeout=args.drain_timeout,
        presign=args.presign,
    )
    fields.update(overrides)
    if fields["duration"] is None and fields["requests"] is None:
        fields["duration"] = 10.0
    try:
        return Settings(**fields)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _prepare(args):
    """(corpus, weights, note) after the pre-flight check."""
    from loadgen import runner

    c = corpus_mod.Corpus.open(args.corpus)
    weights = _weights(args, c)
    host, port = _target(args.target)
    dropped, note = runner.preflight(
        host,
        port,
        c,
        weights,
        wait=args.revocation_wait,
        on_missing=args.on_missing_revocation,
    )
    for name in dropped:
        weights.pop(name)
    if not weights:
        raise UsageError("no outcome left to send")
    if note:
        print(f"note: {note}", file=sys.stderr)
    return c, weights, note


def _run(args) -> int:
    from loadgen import report, runner

    settings = _settings(args)
    metrics = _metrics_url(args.metrics) if args.metrics else None
    c, weights, note = _prepare(args)
    progress = None if args.quiet else runner.stderr_progress
    source = runner.start_source(c, weights, args.batch, args.workers)
    try:
        result = runner.drive(settings, source, progress=progress, metrics=metrics)
    finally:
        source.close()
    doc = report.to_json(result)
    doc["notes"] = [note] if note else []
    print(report.summary_text(result))
    if note:
        print(f"note         {note}")
    if args.json:
        doc["hgrm"] = report.write_hgrm(args.json, result)
        report.write_json(args.json, doc)
        print(f"hgrm         {doc['hgrm']['corrected']}, {doc['hgrm']['uncorrected']}")
    if args.report:
        report.write_html(args.report, result, doc)
        print(f"report       {args.report}")
    failed = result.failed
    if args.fail_on_busy and (result.counts.busy or result.warmup.busy):
        failed = True
    if args.fail_on_behind and result.schedule.behind:
        failed = True
    return EXIT_FAIL if failed else EXIT_OK


# --- find-peak --------------------------------------------------------------------------------


def _find_peak(args) -> int:
    from loadgen import peak, runner

    base = _settings(args, rate=args.start, duration=args.step_duration, warmup=args.warmup)
    c, weights, note = _prepare(args)
    progress = None if args.quiet else runner.stderr_progress
    source = runner.start_source(c, weights, args.batch, args.workers)

    def run_step(settings):
        if progress is not None:
            progress(f"--- step: {settings.rate:,.0f} requests/s for {settings.duration:g} s")
        return runner.drive(settings, source, progress=progress)

    def on_step(step):
        if progress is not None:
            progress(f"--- {step.rate:,.0f}/s: {step.verdict}")

    try:
        result = peak.find_peak(
            run_step,
            base,
            start=args.start,
            factor=args.factor,
            max_rate=args.max_rate,
            p99_bound_ms=args.p99_ms,
            refine=args.refine,
            on_step=on_step,
        )
    finally:
        source.close()
    print(result.summary())
    if note:
        print(f"note: {note}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**result.to_json(), "notes": [note] if note else []}, f, indent=1)
    failed = any(s.mismatches or s.errors for s in result.steps)
    return EXIT_FAIL if failed else EXIT_OK


# --- the parser -------------------------------------------------------------------------------


def _common(p) -> None:
    p.add_argument("--target", default="127.0.0.1:7700", help="server HOST:PORT (127.0.0.1:7700)")
    p.add_argument(
        "--corpus", required=True, metavar="DIR", help="corpus directory (loadgen corpus)"
    )
    p.add_argument("--connections", type=_positive(int), default=4, help="TCP connections (4)")
    p.add_argument(
        "--pipeline",
        type=_positive(int),
        default=64,
        help="most requests in flight per connection (64); the server allows 1024",
    )
    p.add_argument(
        "--batch",
        type=_positive(int),
        default=1,
        help="presentations per request: 1 sends verify, more send verify_batch (1)",
    )
    p.add_argument(
        "--arrivals",
        choices=("constant", "poisson"),
        default="constant",
        help="open-loop spacing of intended send times (constant)",
    )
    p.add_argument(
        "--workers",
        type=_positive(int),
        default=default_workers(),
        help=f"signing worker processes ({default_workers()} here: half the cores)",
    )
    p.add_argument(
        "--mix",
        metavar="SPEC",
        help="outcome weights for this run, e.g. valid=95,expired=5 (default: the corpus's mix)",
    )
    p.add_argument("--exclude", metavar="OUTCOMES", help="outcomes to leave out, comma separated")
    p.add_argument(
        "--interval", type=_positive(float), default=1.0, help="progress interval, s (1)"
    )
    p.add_argument(
        "--max-lag-ms",
        type=_positive(float),
        default=20.0,
        help="call the generator behind schedule when p99 of its send lag exceeds this (20)",
    )
    p.add_argument(
        "--drain-timeout",
        type=_positive(float),
        default=10.0,
        help="seconds to wait for the last answers, and the longest silence tolerated (10)",
    )
    p.add_argument(
        "--on-missing-revocation",
        choices=("fail", "exclude"),
        default="fail",
        help="when the server does not revoke the corpus's revoked ids: refuse to run "
        "(fail, the default) or leave the revoked outcomes out (exclude)",
    )
    p.add_argument(
        "--revocation-wait",
        type=float,
        default=0.0,
        metavar="S",
        help="keep checking that long for the server to load the corpus's revocation "
        "data (a server watching its files reloads by itself) (0)",
    )
    p.add_argument(
        "--presign",
        nargs="?",
        type=_positive(int),
        const=-1,
        default=0,
        metavar="N",
        help="sign the run's requests before the clock starts, so that signing does not "
        "share the cores with the server while it is measured: an open loop's whole "
        "schedule, or N requests (a closed loop then ends when they are sent). The run must "
        "end within the corpus's freshness window (default: sign during the run)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadgen",
        description="Load generator for the e-SSC verification engine: open-loop rates with "
        "coordinated-omission-corrected latency, every verdict checked. docs/OPERATIONS.md, "
        "section 'Load generation'.",
    )
    parser.add_argument("--version", action="version", version=f"essc-loadgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "corpus",
        help="issue cardholders for a mix of expected outcomes, and their revocation input",
        description="Issue credentials for N synthetic cardholders, split by a mix of expected "
        "outcomes (each shaped to draw its verdict), into DIR: a wallet file per outcome, "
        "corpus.json, and revoked.txt naming the revoked ones (load it into the server "
        "under test). Presentations are signed fresh during the run.",
    )
    p.add_argument("--pki", required=True, help="PKI directory (holds the issuer keys)")
    p.add_argument("--cards", type=_positive(int), required=True, help="number of cardholders")
    p.add_argument("--out", required=True, metavar="DIR", help="corpus directory to write")
    p.add_argument(
        "--mix",
        metavar="SPEC",
        help="OUTCOME=WEIGHT,... of: "
        + ", ".join(corpus_mod.OUTCOMES)
        + ". Default: "
        + ",".join(f"{k}={v:g}" for k, v in corpus_mod.DEFAULT_MIX.items()),
    )
    p.add_argument(
        "--freshness-ms",
        type=_positive(int),
        default=60_000,
        help="the server's freshness window; STALE presentations lie outside it (60000)",
    )
    p.add_argument("--seed", type=int, help="make the population reproducible")
    p.set_defaults(func=_corpus)

    p = sub.add_parser(
        "run",
        help="drive a load at a rate (open loop) or a concurrency (closed loop)",
        description="Send fresh presentations at --rate requests/s on a fixed schedule (open "
        "loop; latency counted from each request's intended send time, so server stalls are "
        "not hidden) or with --concurrency requests always in flight (closed loop, for peak "
        "throughput). Every answer is checked against its expected verdict. Exit status 1 "
        "on any mismatch or protocol error.",
    )
    _common(p)
    load = p.add_mutually_exclusive_group(required=True)
    load.add_argument("--rate", type=_positive(float), help="open loop: requests per second")
    load.add_argument("--concurrency", type=_positive(int), help="closed loop: requests in flight")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--duration", type=_positive(float), help="measured seconds (10)")
    length.add_argument("--requests", type=_positive(int), help="measured requests instead")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds sent but not measured (2)")
    p.add_argument(
        "--json",
        metavar="FILE",
        help="write the results as JSON, and beside it the corrected and uncorrected "
        "latency distributions as HdrHistogram .hgrm files (FILE.corrected.hgrm ...)",
    )
    p.add_argument("--report", metavar="FILE", help="write an HTML report with latency plots")
    p.add_argument(
        "--metrics",
        metavar="HOST:PORT|URL",
        help="the server's metrics address: scrape /metrics when the measured phase starts "
        "and after the last answer, and report the server's own latency, BUSY, counts and "
        "CPU beside the generator's (default: off)",
    )
    p.add_argument("--fail-on-busy", action="store_true", help="exit 1 if any answer is BUSY")
    p.add_argument("--fail-on-behind", action="store_true", help="exit 1 if the rate was not held")
    p.set_defaults(func=_run)

    p = sub.add_parser(
        "find-peak",
        help="step the rate up until p99 crosses a bound or errors appear",
        description="Run short open-loop steps at rising rates (x --factor from --start) until "
        "a step is not sustainable (corrected p99 above --p99-ms, BUSY, errors, mismatches, or "
        "the server falling behind), bisect --refine times, and report the highest "
        "sustainable rate.",
    )
    _common(p)
    p.add_argument(
        "--start", type=_positive(float), default=1000.0, help="first rate, req/s (1000)"
    )
    p.add_argument("--factor", type=float, default=1.5, help="rate multiplier per step (1.5)")
    p.add_argument("--max-rate", type=_positive(float), default=1e6, help="stop here (1000000)")
    p.add_argument(
        "--step-duration", type=_positive(float), default=5.0, help="measured seconds per step (5)"
    )
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per step (1)")
    p.add_argument(
        "--p99-ms",
        type=_positive(float),
        default=5.0,
        help="latency bound on the corrected p99, ms (5)",
    )
    p.add_argument("--refine", type=int, default=2, help="bisection steps after the bound (2)")
    p.add_argument("--json", metavar="FILE", help="write the steps and the peak as JSON")
    p.set_defaults(func=_find_peak)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "factor", 2.0) <= 1:
        print("error: --factor must be greater than 1", file=sys.stderr)
        return EXIT_UNUSABLE
    return run_command(args.func, args)
