"""One load run end to end: check the server can be tested, start the signers, drive, report.

The pre-flight check refuses a run whose verdicts could not be right: a corpus with
revoked cardholders against a server that does not hold the corpus's revocation data
would report every one of them as a mismatch, which says nothing about the server.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

from engine.errors import EsscError
from engine.wire import protocol as proto
from engine.wire.client import Client, ServerError
from loadgen import report, server_metrics
from loadgen.corpus import REVOKED_OUTCOMES, Corpus
from loadgen.driver import Driver, RunResult, Settings
from loadgen.sources import Source

SAMPLE = 128  # revoked ids asked about in the pre-flight check


class PreflightError(EsscError):
    """The server cannot be load-tested with this corpus as asked; the message says why."""


async def _revocation_problem(client: Client, corpus: Corpus, revoked: list, timeout: float):
    """(why the server cannot draw the revoked outcomes' verdicts, or None if it can;
    whether a reload could change that)."""
    cards, serials = corpus.revoked()
    cards = cards[:SAMPLE] if "card-revoked" in revoked else []
    serials = serials[:SAMPLE] if "credential-revoked" in revoked else []
    try:
        answer = await asyncio.wait_for(client.revocation_check(cards, serials), timeout)
    except ServerError as e:
        if e.code == proto.NO_REVOCATION_DATA:
            why = (
                f"the server has no revocation data, so the corpus's {' and '.join(revoked)} "
                "presentations would be answered OK"
            )
            return why, False  # no store configured: no reload brings one
        raise
    missing = answer["cards"].count(False) + answer["credentials"].count(False)
    if missing:
        why = (
            f"the server's revocation data (sequence {answer['revocation_sequence']}) does "
            f"not revoke {missing} of the {len(cards) + len(serials)} corpus ids checked"
        )
        return why, True
    return None, False


async def _preflight(
    host: str,
    port: int,
    corpus: Corpus,
    weights: dict,
    *,
    timeout: float,
    wait: float,
    on_missing: str,
) -> tuple[list[str], str | None]:
    try:
        client = await Client.connect(host, port, timeout=timeout)
    except (OSError, asyncio.TimeoutError) as e:
        raise PreflightError(
            f"cannot connect to {host}:{port} ({e or 'timed out'}): is the server running?"
        ) from None
    async with client:
        await asyncio.wait_for(client.ping(), timeout)
        revoked = [n for n in REVOKED_OUTCOMES if weights.get(n, 0) > 0]
        if not revoked:
            return [], None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            problem, may_change = await _revocation_problem(client, corpus, revoked, timeout)
            if problem is None:
                return [], None
            if not may_change or loop.time() >= deadline:
                break
            await asyncio.sleep(0.5)  # a server watching its files reloads on its own
        if on_missing == "exclude":
            return revoked, f"{problem}: {', '.join(revoked)} left out of this run"
        raise PreflightError(
            f"{problem}: load the corpus's revocation input into the server (python -m engine "
            f"revocation build --signing-key PKI/revocation-publisher.key --out FILE "
            f"{corpus.revocation_path}, then serve with "
            f"--revocation FILE), or leave those outcomes out of the run with "
            f"--exclude {','.join(revoked)}"
        )


def preflight(
    host: str,
    port: int,
    corpus: Corpus,
    weights: dict,
    *,
    timeout: float = 10.0,
    wait: float = 0.0,
    on_missing: str = "fail",
) -> tuple[list[str], str | None]:
    """Pings the server and, when the mix has revoked outcomes, checks (for up to
    ``wait`` seconds) that its revocation data revokes the corpus's ids.  Returns the
    outcomes to leave out (``on_missing="exclude"``) and why; PreflightError otherwise."""
    return asyncio.run(
        _preflight(host, port, corpus, weights, timeout=timeout, wait=wait, on_missing=on_missing)
    )


def start_source(corpus: Corpus, weights: dict, batch: int, workers: int) -> Source:
    source = Source(corpus, weights, batch, workers=workers)
    try:
        source.wait_ready()
    except BaseException:
        source.close()
        raise
    return source


def drive(
    settings: Settings,
    source: Source,
    *,
    progress: Callable[[str], None] | None = None,
    metrics: str | None = None,
) -> RunResult:
    """Runs the driver on a fresh uvloop event loop; progress lines go to ``progress``.
    With ``metrics`` (the server's metrics URL) the result carries the server's own
    figures over the measured phase (``RunResult.server``)."""

    def on_interval(iv, driver):
        if progress is not None and (iv.answered or iv.phase != "drain"):
            progress(report.progress_line(iv, settings.rate, settings.max_lag_ms))

    def on_mismatch(example):
        if progress is not None:
            reason = f" ({example['reason']})" if example.get("reason") else ""
            progress(
                f"MISMATCH request {example['request_id']}: {example['outcome']} presentation, "
                f"expected {example['expected']}, got {example['got']}{reason}"
            )

    if progress is not None and settings.presign:
        progress(f"signing {settings.presign_requests:,} requests ahead of the run")

    start: list = []  # (scrape, requests in flight then), once the measured phase starts

    def on_measure_start(in_flight: int) -> None:
        start.append((server_metrics.scrape(metrics), in_flight))

    async def main():
        return await Driver(
            settings,
            source,
            on_interval=on_interval,
            on_mismatch=on_mismatch,
            on_measure_start=on_measure_start if metrics else None,
        ).run()

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; the default loop works
        result = asyncio.run(main())
    else:
        result = uvloop.run(main())
    if metrics:
        # Every answer is in (or given up on), and the server counts an answer before
        # writing it: this scrape holds every request the run saw answered.
        end = server_metrics.scrape(metrics)
        first, in_flight = start[0] if start else (None, 0)
        result.server = server_metrics.server_side(metrics, first, end, in_flight)
    return result


def stderr_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
