"""One load run end to end: check the server can be tested, start the signers, drive, report.

The pre-flight check refuses a run whose verdicts could not be right: a corpus with
revoked cardholders against a server that does not hold the corpus's revocation data
would report every one of them as a mismatch, which says nothing about the server.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

from engine import protocol as proto
from engine.client import Client, ServerError
from loadgen import report
from loadgen.corpus import REVOKED_OUTCOMES, Corpus
from loadgen.driver import Driver, RunResult, Settings
from loadgen.sources import Source

SAMPLE = 128  # revoked ids asked about in the pre-flight check


class PreflightError(Exception):
    """The server cannot be load-tested with this corpus as asked; the message says why."""


async def _preflight(host: str, port: int, corpus: Corpus, weights: dict, timeout: float) -> dict:
    try:
        client = await Client.connect(host, port, timeout=timeout)
    except (OSError, asyncio.TimeoutError) as e:
        raise PreflightError(
            f"cannot connect to {host}:{port} ({e or 'timed out'}): is the server running?"
        ) from None
    async with client:
        await asyncio.wait_for(client.ping(), timeout)
        status = await asyncio.wait_for(client.status(), timeout)
        revoked = [n for n in REVOKED_OUTCOMES if weights.get(n, 0) > 0]
        if not revoked:
            return status
        cards, serials = corpus.revoked()
        cards = cards[:SAMPLE] if "card-revoked" in revoked else []
        serials = serials[:SAMPLE] if "credential-revoked" in revoked else []
        fix = (
            f"load the corpus's revocation input into the server "
            f"(python -m engine revocation build --out FILE {corpus.revocation_path}, then "
            f"serve with --revocation FILE), or leave those outcomes out of the run with "
            f"--exclude {','.join(revoked)}"
        )
        try:
            answer = await asyncio.wait_for(client.revocation_check(cards, serials), timeout)
        except ServerError as e:
            if e.code == proto.NO_REVOCATION_DATA:
                raise PreflightError(
                    f"the server has no revocation data, so the corpus's {' and '.join(revoked)} "
                    f"presentations would be answered OK: {fix}"
                ) from None
            raise
        missing = answer["cards"].count(False) + answer["credentials"].count(False)
        if missing:
            raise PreflightError(
                f"the server's revocation data (sequence {answer['revocation_sequence']}) does "
                f"not revoke {missing} of the {len(cards) + len(serials)} corpus ids checked: {fix}"
            )
        return status


def preflight(host: str, port: int, corpus: Corpus, weights: dict, timeout: float = 10.0) -> dict:
    """Pings the server, checks its revocation data when the mix needs it; its status."""
    return asyncio.run(_preflight(host, port, corpus, weights, timeout))


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
) -> RunResult:
    """Runs the driver on a fresh uvloop event loop; progress lines go to ``progress``."""

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

    async def main():
        return await Driver(
            settings, source, on_interval=on_interval, on_mismatch=on_mismatch
        ).run()

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; the default loop works
        return asyncio.run(main())
    return uvloop.run(main())


def stderr_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
