"""The server's own account of a run, from its Prometheus metrics (``--metrics``).

The generator scrapes ``/metrics`` when the measured phase starts and again once the
last answer is in, and reports what the server counted in between: its latency
percentiles (``essc_verify_latency_seconds``, interpolated within buckets as
Prometheus' ``histogram_quantile`` does), BUSY by reason, requests, presentations and
errors, and its CPU.  Under a supervisor every sample carries a ``worker`` label; the
workers are summed.  A scrape that fails is reported, never fatal: the run's own
figures stand without it.
"""

from __future__ import annotations

import dataclasses
import math
import time

import urllib3
from prometheus_client.parser import text_string_to_metric_families

from loadgen.stats import PERCENTILES

LATENCY = "essc_verify_latency_seconds"
TIMEOUT_S = 5.0


@dataclasses.dataclass
class Scrape:
    at: float  # unix time the answer came back (or the scrape failed)
    text: str | None = None
    error: str | None = None

    def to_json(self) -> dict:
        return {"at": round(self.at, 3), "error": self.error}


def scrape(url: str, timeout: float = TIMEOUT_S) -> Scrape:
    """One GET of the metrics page; failures come back in ``error``, never raised."""
    try:
        r = urllib3.request(
            "GET", url, timeout=urllib3.Timeout(total=timeout), retries=False, redirect=False
        )
        if r.status != 200:
            return Scrape(time.time(), error=f"HTTP {r.status} from {url}")
        return Scrape(time.time(), text=r.data.decode())
    except (urllib3.exceptions.HTTPError, UnicodeDecodeError) as e:
        return Scrape(time.time(), error=f"{url}: {e}")


# --- what changed between two scrapes ---------------------------------------------------------

Key = tuple[str, tuple[tuple[str, str], ...]]  # (sample name, sorted labels)


def _samples(text: str) -> dict[Key, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _worker(labels: tuple[tuple[str, str], ...]) -> str | None:
    return dict(labels).get("worker")


def _increases(start: dict[Key, float], end: dict[Key, float]) -> dict[Key, float]:
    """Per series, as Prometheus' increase() has it: a counter that went down was reset
    (a restarted worker) and counts from zero.  A series new at the end counts from zero
    too (a labelled counter appears when first used: BUSY for a reason, say), unless
    its whole worker was missing from the first scrape (it did not answer in time):
    then it would count all its history, and is left out."""
    present = {_worker(labels) for _, labels in start}
    out = {}
    for k, v in end.items():
        if _worker(k[1]) in present:
            before = start.get(k, 0.0)
            out[k] = v - before if v >= before else v
    return out


def _sum(inc: dict[Key, float], name: str, by: str | None = None) -> dict[str | None, float]:
    """Increases of ``name`` summed over every label but ``by`` (over workers, mostly)."""
    out: dict[str | None, float] = {}
    for (n, labels), v in inc.items():
        if n == name:
            k = dict(labels).get(by) if by else None
            out[k] = out.get(k, 0.0) + v
    return out


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile over (upper bound, cumulative count) pairs sorted
    by bound, +Inf last: linear within the bucket the rank falls in; from zero in the
    first bucket; the highest finite bound when the rank is in the +Inf bucket."""
    total = buckets[-1][1] if buckets else 0
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


def _workers(samples: dict[Key, float]) -> set[str]:
    return {w for _, labels in samples if (w := _worker(labels)) is not None}


def server_side(url: str, start: Scrape | None, end: Scrape, in_flight_at_start: int) -> dict:
    """The JSON ``server`` section: what the server counted between the two scrapes."""
    doc: dict = {
        "metrics_url": url,
        "scrapes": {"start": start and start.to_json(), "end": end.to_json()},
        "in_flight_at_start": in_flight_at_start,
        "error": None,
    }
    if start is None:
        doc["error"] = "no scrape at the start: the run ended before its measured phase"
    else:
        failed = [f"{which}: {s.error}" for which, s in (("start", start), ("end", end)) if s.error]
        doc["error"] = "; ".join(failed) or None
    if doc["error"]:
        return doc
    try:
        a, b = _samples(start.text), _samples(end.text)
    except ValueError as e:  # not a Prometheus exposition
        doc["error"] = f"unreadable metrics: {e}"
        return doc
    if not any(name == f"{LATENCY}_count" for name, _ in b):
        doc["error"] = f"no {LATENCY} in the metrics: is this the engine's metrics address?"
        return doc
    inc = _increases(a, b)
    interval = end.at - start.at
    # Buckets summed over workers, bounds sorted numerically (+Inf last).
    by_le = _sum(inc, f"{LATENCY}_bucket", "le")
    buckets = sorted((float(le), n) for le, n in by_le.items())
    requests = int(sum(_sum(inc, f"{LATENCY}_count").values()))
    seconds = sum(_sum(inc, f"{LATENCY}_sum").values())
    latency: dict = {"count": requests}
    for p in PERCENTILES:
        v = histogram_quantile(p / 100, buckets)
        latency[f"p{p:g}"] = None if v is None else round(v * 1000, 3)
    latency["mean"] = round(seconds / requests * 1000, 3) if requests else None
    verdicts = _sum(inc, "essc_verifications_total", "verdict")
    busy = _sum(inc, "essc_busy_total", "reason")
    presentations = int(sum(verdicts.values()))
    cpu = sum(_sum(inc, "process_cpu_seconds_total").values())
    native = sum(_sum(inc, "essc_native_verify_cpu_seconds").values())
    missing = _workers(a) ^ _workers(b)
    doc.update(
        interval_s=round(interval, 3),
        workers=len(_workers(b)) or 1,
        workers_missing=sorted(missing),  # in one scrape only: left out of the figures
        # verify and verify_batch requests answered in batches (BUSY ones are not timed)
        requests=requests,
        presentations=presentations,  # every verdict, BUSY included
        verdicts={k: int(v) for k, v in sorted(verdicts.items()) if v},
        busy={
            "total": int(sum(busy.values())),
            "by_reason": {k: int(v) for k, v in sorted(busy.items()) if v},
        },
        protocol_errors={
            k: int(v) for k, v in _sum(inc, "essc_protocol_errors_total", "code").items() if v
        },
        latency_ms=latency,
        cpu={
            "seconds": round(cpu, 3),
            "cores": round(cpu / interval, 3) if interval > 0 else None,
            "native_verify_seconds": round(native, 3),
            "native_share": round(native / cpu, 3) if cpu > 0 else None,
            "us_per_presentation": round(cpu / presentations * 1e6, 1) if presentations else None,
        },
    )
    return doc
