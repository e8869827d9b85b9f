"""Prometheus metrics of the server (prometheus-client).

Counters and gauges are updated once per batch, not per request, and latencies go
into a histogram that takes a whole numpy array of observations at once, so metrics
cost the hot path almost nothing.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from engine import _core
from engine.verdicts import Verdict

# The *_created series double the exposition for no use here.
disable_created_metrics()  # type: ignore[no-untyped-call]

LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.02,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# Event-loop lag: a healthy loop answers in tens of microseconds; the upper buckets are
# a loop held by something (a blocking call, a long callback, the GIL).
LOOP_LAG_BUCKETS_S = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)


class ArrayHistogram:
    """A Prometheus histogram fed with numpy arrays (one call per batch)."""

    def __init__(
        self, name: str, documentation: str, buckets: tuple[float, ...], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.edges = np.asarray(buckets, dtype=np.float64)
        self.edges_list = list(buckets)
        self._counts = np.zeros(len(buckets) + 1, dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_one(self, value: float) -> None:
        i = bisect.bisect_left(self.edges_list, value)
        with self._lock:
            self._counts[i] += 1
            self._sum += value

    def observe(self, values: np.ndarray) -> None:
        idx = np.searchsorted(self.edges, values, side="left")
        add = np.bincount(idx, minlength=len(self._counts))
        with self._lock:
            self._counts += add
            self._sum += float(values.sum())

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            counts = np.cumsum(self._counts)
            total = self._sum
        family = HistogramMetricFamily(self.name, self.documentation)
        buckets = [(repr(float(e)), int(c)) for e, c in zip(self.edges, counts[:-1])]
        buckets.append(("+Inf", int(counts[-1])))
        family.add_metric([], buckets, total)
        yield family


class ServerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        r = self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "essc_verifications", "Presentations answered, by verdict", ["verdict"], registry=r
        )
        self._by_code = [self.requests.labels(v.name) for v in Verdict]
        self.latency = ArrayHistogram(
            "essc_verify_latency_seconds",
            "Time from a verify request's arrival to its response being written",
            LATENCY_BUCKETS_S,
            r,
        )
        self.batch_size = ArrayHistogram(
            "essc_batch_size", "Presentations per native batch", BATCH_BUCKETS, r
        )
        # Sampled every 100 ms by the loop's watchdog task (engine.server.notify).
        self.loop_lag = ArrayHistogram(
            "essc_event_loop_lag_seconds",
            "How late the event loop ran a callback that was due (sampled every 100 ms)",
            LOOP_LAG_BUCKETS_S,
            r,
        )
        self.busy = Counter("essc_busy", "Presentations answered BUSY", ["reason"], registry=r)
        self.protocol_errors = Counter(
            "essc_protocol_errors", "Error responses, by error code", ["code"], registry=r
        )
        self.queue_depth = Gauge("essc_in_flight", "Presentations queued or verifying", registry=r)
        self.admission_limit = Gauge(
            "essc_in_flight_limit",
            "Presentations admitted at most now (max_in_flight, or less by queueing time)",
            registry=r,
        )
        self.connections = Gauge("essc_connections", "Open client connections", registry=r)
        self.aborted = Counter(
            "essc_connections_aborted",
            "Connections reset after closing because the client did not read what was left",
            registry=r,
        )
        self.tls_failures = Counter(
            "essc_tls_handshake_failures",
            "TLS handshakes that failed or timed out, by reason",
            ["reason"],
            registry=r,
        )
        self.connection_limit = Gauge(
            "essc_connection_limit",
            "Connections accepted at most (server.max_connections, bounded by descriptors)",
            registry=r,
        )
        self.trust_sequence = Gauge("essc_trust_list_sequence", "Trust list in service", registry=r)
        self.trust_age = Gauge(
            "essc_trust_list_age_seconds", "Age of the trust list in service", registry=r
        )
        self.revocation_sequence = Gauge(
            "essc_revocation_sequence", "Revocation data in service (-1: none)", registry=r
        )
        self.revocation_age = Gauge(
            "essc_revocation_age_seconds", "Age of the revocation data in service", registry=r
        )
        self.revocation_expires = Gauge(
            "essc_revocation_expires_at_timestamp_seconds",
            "When the signed revocation data in service expires (unix time; 0: unsigned)",
            registry=r,
        )
        # The fetcher (revocation.source_url): one per node, in worker 0 under a supervisor.
        self.sync_last_success = Gauge(
            "essc_revocation_sync_last_success_timestamp_seconds",
            "Last poll of the publication point that ended well, changed or not (unix time)",
            registry=r,
        )
        self.sync_bytes = Counter(
            "essc_revocation_sync_fetched_bytes",
            "Bytes of revocation files downloaded (the index excluded)",
            registry=r,
        )
        self.sync_polls = Counter(
            "essc_revocation_sync_polls",
            "Polls of the publication point that ended well, by whether data changed",
            ["outcome"],
            registry=r,
        )
        self.sync_failures = Counter(
            "essc_revocation_sync_failures",
            "Polls that failed, by kind (the data in service stays as it was)",
            ["kind"],
            registry=r,
        )
        ProcessCollector(registry=r)  # process_cpu_seconds_total and friends
        self.native_cpu = Gauge(
            "essc_native_verify_cpu_seconds",
            "CPU seconds (all threads) spent in native signature verification",
            registry=r,
        )
        self.native_cpu.set_function(_core.native_cpu_seconds)
        self.reloads = Counter(
            "essc_reloads", "Reload attempts, by data and outcome", ["what", "outcome"], registry=r
        )

    def count_verdicts(self, counts: list[int]) -> None:
        """``counts[code]``: how many presentations got verdict ``code``."""
        for code, child in enumerate(self._by_code):
            if counts[code]:
                child.inc(counts[code])


# --- a supervisor's one endpoint for all its workers (engine.server.supervisor) --------
#
# Not prometheus-client's multiprocess mode: it has no place for the custom collectors
# above (ArrayHistogram, the native CPU gauge's function, ProcessCollector), and it keeps
# files per process.  Each worker serves its own registry on a loopback port instead,
# and the supervisor merges what they say, one ``worker`` label apart.


def merge_expositions(workers: dict[int, str | None], own: list[Metric]) -> bytes:
    """One text exposition: every worker's samples (``workers[k]``: its exposition,
    None when it did not answer) labelled ``worker="k"``, then ``own``."""
    merged: dict[str, Metric] = {}
    for index, text in sorted(workers.items()):
        if text is None:
            continue
        try:
            families = list(text_string_to_metric_families(text))
        except ValueError:  # not an exposition: the worker counts as down (see up)
            continue
        for family in families:
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(family.name, family.documentation, family.type)
            if into.type != family.type:
                continue
            label = {"worker": str(index)}
            into.samples += [s._replace(labels={**s.labels, **label}) for s in family.samples]
    families = [*merged.values(), *own]

    class _Collected:
        def collect(self) -> list[Metric]:
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collected())
    return generate_latest(registry)


def supervisor_families(
    processes: int, alive: int, restarts: int, scraped: dict[int, str | None]
) -> list[Metric]:
    """The supervisor's own metrics, beside its workers'."""
    configured = GaugeMetricFamily(
        "essc_supervisor_processes", "Worker processes configured (server.processes)"
    )
    configured.add_metric([], processes)
    running = GaugeMetricFamily("essc_supervisor_workers", "Worker processes running now")
    running.add_metric([], alive)
    restarted = CounterMetricFamily(
        "essc_supervisor_restarts", "Workers started again after exiting while not stopping"
    )
    restarted.add_metric([], restarts)
    up = GaugeMetricFamily(
        "essc_supervisor_worker_up",
        "1 when the worker's metrics were part of this scrape, 0 when it did not answer",
        labels=["worker"],
    )
    for index, text in sorted(scraped.items()):
        up.add_metric([str(index)], 0 if text is None else 1)
    return [configured, running, restarted, up]
