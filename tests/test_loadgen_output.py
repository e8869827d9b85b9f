"""What the load generator writes for tools to read: the HdrHistogram percentile
distributions (.hgrm) beside its JSON, and the server's own figures from its metrics
(--metrics), against the real server on 127.0.0.1 with its metrics port open."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from prometheus_client import generate_latest
from realservers import free_port

from engine.server.metrics import ServerMetrics, merge_expositions
from engine.verdicts import Verdict
from loadgen import corpus as corpus_mod
from loadgen import server_metrics
from loadgen.cli import main


@pytest.fixture(scope="module")
def corpus(pki, tmp_path_factory):
    """Valid and replayed cardholders: no revocation data needed."""
    out = tmp_path_factory.mktemp("corpus-output")
    return corpus_mod.build(pki.directory, 40, out, {"valid": 9, "replayed": 1})


def run(tmp_path, port, corpus, *args):
    """python -m loadgen run ... in process: (exit status, the JSON results)."""
    out = tmp_path / "load.json"
    argv = ["run", "--target", f"127.0.0.1:{port}", "--corpus", str(corpus.directory)]
    argv += ["--workers", "1", "--quiet", "--json", str(out), *args]
    rc = main(argv)
    return rc, json.loads(out.read_text())


def parse_hgrm(path) -> tuple[list[tuple[float, float, int]], dict[str, float]]:
    """(value ms, percentile, total count) rows, and the footer's #[Name = value] fields."""
    rows, footer = [], {}
    lines = path.read_text().splitlines()
    assert lines[0].split() == ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
    for line in lines[1:]:
        if line.startswith("#["):
            for field in line.strip("#[]").split(","):
                name, value = field.split("=")
                footer[name.strip()] = float(value)
        elif line.strip():
            value, percentile, count, *_ = line.split()
            rows.append((float(value), float(percentile), int(count)))
    return rows, footer


def check_hgrm(path, latency: dict) -> None:
    rows, footer = parse_hgrm(path)
    percentiles = [p for _, p, _ in rows]
    assert percentiles == sorted(percentiles) and percentiles[-1] == 1.0
    assert [v for v, _, _ in rows] == sorted(v for v, _, _ in rows)
    assert rows[-1][2] == footer["TotalCount"] == latency["count"]
    assert rows[-1][0] == footer["Max"] == latency["max"]
    assert footer["Mean"] == pytest.approx(latency["mean"], abs=0.001)
    # In milliseconds like the rest (the package writes it unscaled, in microseconds).
    assert footer["StdDeviation"] <= latency["max"]


def test_server_figures_beside_the_generators(tmp_path, start_server, corpus, capsys):
    """No warm-up: the first scrape precedes the first send and the last follows the
    last answer, which the server counts before writing it: the counts agree exactly."""
    srv = start_server(metrics__port=free_port())
    html = tmp_path / "load.html"
    metrics = f"127.0.0.1:{srv.server.metrics_port}"
    rc, doc = run(
        tmp_path,
        srv.port,
        corpus,
        "--rate",
        "2000",
        "--requests",
        "400",
        "--warmup",
        "0",
        "--metrics",
        metrics,
        "--report",
        str(html),
    )
    assert rc == 0, doc["mismatch_examples"] or doc["error_examples"]
    sv, counts = doc["server"], doc["counts"]
    assert sv["error"] is None and sv["metrics_url"] == f"http://{metrics}/metrics"
    assert sv["requests"] == counts["requests"] == 400 == sv["latency_ms"]["count"]
    assert sv["presentations"] == counts["presentations"]
    assert sv["verdicts"] == counts["verdicts"]
    assert sv["busy"] == {"total": 0, "by_reason": {}} and counts["busy"] == 0
    assert sv["protocol_errors"] == {} and sv["in_flight_at_start"] == 0
    lat = sv["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"]
    assert lat["mean"] > 0 and sv["interval_s"] > 0
    cpu = sv["cpu"]
    assert cpu["seconds"] > 0 and cpu["native_verify_seconds"] > 0
    assert 0 < cpu["native_share"] <= 1 and cpu["us_per_presentation"] > 0
    assert sv["workers"] == 1 and sv["workers_missing"] == []
    out = capsys.readouterr().out
    assert "\n  server   " in out and "400 requests, 400 presentations in" in out
    page = html.read_text()
    assert "Server (from its metrics)" in page and "server (its histogram)" in page
    # The distributions beside the JSON, named in it.
    assert doc["hgrm"] == {
        name: str(tmp_path / f"load.{name}.hgrm") for name in ("corrected", "uncorrected")
    }
    for name in ("corrected", "uncorrected"):
        check_hgrm(tmp_path / f"load.{name}.hgrm", doc["latency_ms"][name])
        assert doc["latency_ms"][name]["count"] == 400


def test_the_first_scrape_at_the_end_of_the_warm_up(tmp_path, start_server, corpus):
    """With a warm-up the first scrape is taken while requests go out: what the server
    counted lies between the measured answers and all the run's answers."""
    srv = start_server(metrics__port=free_port())
    rc, doc = run(
        tmp_path,
        srv.port,
        corpus,
        "--rate",
        "1000",
        "--requests",
        "300",
        "--warmup",
        "0.3",
        "--metrics",
        f"http://127.0.0.1:{srv.server.metrics_port}/metrics",
    )
    assert rc == 0
    sv, counts, warm = doc["server"], doc["counts"], doc["warmup"]
    assert sv["error"] is None and warm["requests"] > 0
    assert 0 < sv["requests"] <= counts["requests"] + warm["requests"]
    assert sv["scrapes"]["start"]["at"] < sv["scrapes"]["end"]["at"]
    assert sv["cpu"]["seconds"] > 0 and sv["busy"]["total"] == 0


def test_a_failed_scrape_is_reported_and_the_run_goes_on(tmp_path, start_server, corpus, capsys):
    srv = start_server()  # no metrics port: nothing listens on the one given
    rc, doc = run(
        tmp_path,
        srv.port,
        corpus,
        "--rate",
        "500",
        "--requests",
        "50",
        "--warmup",
        "0",
        "--metrics",
        f"127.0.0.1:{free_port()}",
    )
    assert rc == 0 and doc["counts"]["requests"] == 50
    error = doc["server"]["error"]
    assert error.startswith("start: ") and "; end: " in error
    assert "latency_ms" not in doc["server"]
    assert "server       metrics not read (start: " in capsys.readouterr().out
    rc, doc = run(tmp_path, srv.port, corpus, "--rate", "500", "--requests", "10", "--warmup", "0")
    assert rc == 0 and doc["server"] is None  # no --metrics: no section
    argv = ["run", "--target", f"127.0.0.1:{srv.port}", "--corpus", str(corpus.directory)]
    assert main([*argv, "--rate", "1", "--metrics", "localhost"]) == 2  # no port
    assert "--metrics 'localhost': expected HOST:PORT or a URL" in capsys.readouterr().err


def test_workers_are_summed_and_a_restarted_one_counts_from_zero():
    """A supervisor's exposition (worker labels, engine.server.metrics): worker 1 is
    replaced between the scrapes, so its counters start again from zero; worker 2 did
    not answer the first scrape, so its counts (all its history) are left out."""
    w0, w1, w1_new, w2 = ServerMetrics(), ServerMetrics(), ServerMetrics(), ServerMetrics()
    w2.latency.observe(np.full(1000, 0.0004))
    w0.latency.observe(np.full(10, 0.0004))
    w1.latency.observe(np.full(50, 0.0004))

    def exposition(*workers):
        texts = {k: generate_latest(m.registry).decode() for k, m in enumerate(workers)}
        return merge_expositions(texts, []).decode()

    start = server_metrics.Scrape(1.0, exposition(w0, w1))
    w0.latency.observe(np.full(60, 0.0015))  # 60 in (1 ms, 2 ms]
    w1_new.latency.observe(np.full(20, 0.004))  # 20 in (3 ms, 5 ms]
    w1_new.busy.labels("in_flight").inc(7)
    w1_new.count_verdicts([20] + [0] * (len(Verdict) - 1))  # 20 OK
    end = server_metrics.Scrape(3.0, exposition(w0, w1_new, w2))
    sv = server_metrics.server_side("http://x/metrics", start, end, 0)
    assert sv["workers_missing"] == ["2"] and sv["interval_s"] == 2.0
    assert sv["requests"] == 80 == sv["latency_ms"]["count"]
    assert sv["busy"] == {"total": 7, "by_reason": {"in_flight": 7}}
    assert sv["verdicts"] == {"OK": 20} and sv["presentations"] == 20
    # histogram_quantile: rank 40 of 80 is 40/60 into (1 ms, 2 ms]; rank 72 is 12/20
    # into (3 ms, 5 ms].
    assert sv["latency_ms"]["p50"] == pytest.approx(1 + 40 / 60, abs=0.001)
    assert sv["latency_ms"]["p90"] == pytest.approx(3 + 2 * 12 / 20, abs=0.001)


def test_histogram_quantile_as_prometheus():
    inf = math.inf
    assert server_metrics.histogram_quantile(0.5, [(0.001, 0), (inf, 0)]) is None
    assert server_metrics.histogram_quantile(0.5, [(0.001, 10), (inf, 10)]) == 0.0005
    # The rank in the +Inf bucket: the highest finite bound.
    buckets = [(0.001, 10), (0.002, 90), (inf, 100)]
    assert server_metrics.histogram_quantile(0.99, buckets) == 0.002
