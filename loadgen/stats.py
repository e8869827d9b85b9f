"""What a run measured: HdrHistograms of latency, per-interval snapshots, counts.

Latency is kept twice (wrk2's distinction):

- *corrected*: response time minus the request's **intended** send time on the
  open-loop schedule.  When the server (or the send window) holds the generator up,
  the requests that should have gone out meanwhile are charged for the wait, as real
  clients arriving at that rate would have been.
- *uncorrected*: response time minus the **actual** send time: what a naive
  generator reports, and hides stalls behind (coordinated omission).

The hot path only appends microsecond values to arrays; once per interval they are
counted into a Recorder with one numpy call, and the HdrHistograms are built from the
counts when the run ends, so the sending loop never stalls to record.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from hdrh.histogram import HdrHistogram

from engine.verdicts import Verdict

HIGHEST_US = 3_600_000_000  # one hour
SIGNIFICANT_FIGURES = 3
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(1, HIGHEST_US, SIGNIFICANT_FIGURES)


def record(hist: HdrHistogram, values_us) -> None:
    """Adds microsecond values (any int sequence) to ``hist``."""
    if len(values_us) == 0:
        return
    v = np.clip(np.asarray(values_us, dtype=np.int64), 1, HIGHEST_US)
    _record_counts(hist, *np.unique(v, return_counts=True))


def _record_counts(hist: HdrHistogram, values: np.ndarray, counts: np.ndarray) -> None:
    for value, count in zip(values.tolist(), counts.tolist()):
        hist.record_value(value, count)


EXACT_US = 1 << 16  # a Recorder counts every microsecond value below this (65.5 ms) exactly


class Recorder:
    """Microsecond latencies counted in numpy, for an HdrHistogram at the end.

    Calling HdrHistogram.record_value for each distinct value costs about 1 us a call:
    at 20,000 requests a second, about 13 ms a second for the three histograms of a
    run, all at once, and a sender that stalls that long charges its own lateness to
    the server.  Here an interval's values are one bincount; values of 65.5 ms and more
    (rare, and the more so the faster the server) are kept as they are.
    """

    def __init__(self):
        self.counts = np.zeros(EXACT_US, dtype=np.int64)
        self._long: list[np.ndarray] = []

    def add(self, values_us) -> None:
        v = np.clip(np.asarray(values_us, dtype=np.int64), 1, HIGHEST_US)
        small = v < EXACT_US
        self.counts += np.bincount(v[small], minlength=EXACT_US)
        if not small.all():
            self._long.append(v[~small])

    def histogram(self) -> HdrHistogram:
        """The values recorded so far, as an HdrHistogram."""
        hist = new_histogram()
        values = np.flatnonzero(self.counts)
        _record_counts(hist, values, self.counts[values])
        if self._long:
            record(hist, np.concatenate(self._long))
        return hist


def percentiles_ms(hist: HdrHistogram) -> dict:
    """{"count", "p50", "p90", "p99", "p99.9", "max", "mean"}: milliseconds."""
    n = hist.get_total_count()
    out: dict = {"count": n}
    for p in PERCENTILES:
        out[f"p{p:g}"] = hist.get_value_at_percentile(p) / 1000 if n else None
    out["max"] = hist.get_max_value() / 1000 if n else None
    out["mean"] = round(hist.get_mean_value() / 1000, 3) if n else None
    return out


def spectrum_ms(hist: HdrHistogram) -> list[tuple[float, float]]:
    """(percentile, latency ms) points of the percentile spectrum, out to the max."""
    if hist.get_total_count() == 0:
        return []
    points = []
    for item in hist.get_percentile_iterator(5):
        points.append((item.percentile_level_iterated_to, item.value_iterated_to / 1000))
    return points


def quick_percentiles_ms(values_us: np.ndarray, ps=(50, 99)) -> list[float | None]:
    """Percentiles of one interval's raw values (exact; intervals are small)."""
    if len(values_us) == 0:
        return [None] * (len(ps) + 1)
    q = np.percentile(values_us, ps, method="higher") / 1000
    return [*q.tolist(), float(values_us.max()) / 1000]


@dataclasses.dataclass
class Counts:
    """What came back, for one phase of a run (warm-up, or the measured part)."""

    requests: int = 0  # answered requests (a verify_batch is one request)
    presentations: int = 0  # answered presentations with a verdict
    verdicts: list[int] = dataclasses.field(default_factory=lambda: [0] * len(Verdict))
    expected: list[int] = dataclasses.field(default_factory=lambda: [0] * len(Verdict))
    mismatches: int = 0
    busy: int = 0  # presentations answered BUSY
    errors: dict[str, int] = dataclasses.field(default_factory=dict)  # error responses by code

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def to_json(self) -> dict:
        return {
            "requests": self.requests,
            "presentations": self.presentations,
            "verdicts": {Verdict(c).name: n for c, n in enumerate(self.verdicts) if n},
            "expected": {Verdict(c).name: n for c, n in enumerate(self.expected) if n},
            "mismatches": self.mismatches,
            "busy": self.busy,
            "errors": dict(self.errors),
        }


@dataclasses.dataclass
class Interval:
    """One progress interval, by response time (latencies) and send time (rate)."""

    t: float  # end of the interval, seconds since the run started
    seconds: float
    phase: str  # "warmup", "measure" or "drain"
    sent: int
    answered: int  # requests
    presentations: int
    mismatches: int
    errors: int
    busy: int
    in_flight: int
    corrected_ms: list  # p50, p99, max (None when nothing was answered)
    uncorrected_ms: list
    lag_max_ms: float  # how far the sends of this interval were behind their schedule
    source_wait_s: float  # time with requests due but no fresh presentation ready
    window_wait_s: float  # time with requests due but every connection's pipeline full

    @property
    def rate(self) -> float:
        return self.answered / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Schedule:
    """How well the generator kept to its schedule over the measured part of the run."""

    mode: str  # "open" or "closed"
    target_rate: float | None  # requests per second (open loop)
    scheduled: int  # requests whose intended time fell in the run
    sent: int
    not_sent: int  # scheduled but never sent before the run ended
    lag: dict  # percentiles of (send time - intended time), ms
    source_wait_s: float
    window_wait_s: float
    max_lag_ms: float  # the threshold
    behind: bool  # sends fell behind the schedule by more than the threshold
    cause: str | None  # "generator" or "server" when behind
    stale_chunks: int  # pooled presentations thrown away for age

    def message(self) -> str | None:
        """The plain statement ops read when the rate was not held, else None."""
        if not self.behind:
            return None
        if self.mode == "closed":
            return (
                f"the signing workers could not keep up: senders waited {self.source_wait_s:.1f} s "
                "for fresh presentations, so this throughput is the generator's, not the "
                "server's; add --workers"
            )
        lag = self.lag.get("max") or 0.0
        head = f"requests went out up to {lag:,.0f} ms behind their schedule"
        if self.not_sent:
            head += f" ({self.not_sent:,} scheduled requests never sent)"
        if self.cause == "server":
            return (
                f"{head}: every connection's pipeline was full for {self.window_wait_s:.1f} s "
                "- the server did not answer as fast as the target rate asks (--connections "
                "x --pipeline requests in flight); the latency is corrected for the wait"
            )
        if self.source_wait_s > 0:
            return (
                f"{head}: waited {self.source_wait_s:.1f} s for fresh presentations - the "
                "signing workers cannot keep up; add --workers or lower --rate. The "
                "generator, not the server, limited this run"
            )
        return (
            f"{head}: the sending process itself is saturated. The generator, not the "
            "server, limited this run; use --batch, or lower --rate"
        )
