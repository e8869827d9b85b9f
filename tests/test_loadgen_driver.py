"""The load generator's driver against a stand-in server (tests/fake_server.py).

The stand-in answers every presentation OK at once, so these runs measure the
generator itself: its schedule, its counts, its latency correction and its honesty
about its own limits.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from fake_server import FakeServer

from loadgen import corpus as corpus_mod
from loadgen import stats
from loadgen.cli import main


@pytest.fixture(scope="module")
def valid_corpus(pki, tmp_path_factory):
    """Valid and replayed cardholders: what a server answering only OK can be asked."""
    out = tmp_path_factory.mktemp("corpus-valid")
    return corpus_mod.build(pki.directory, 40, out, {"valid": 9, "replayed": 1})


@pytest.fixture
def fake():
    servers = []

    def start(**kwargs):
        srv = FakeServer(**kwargs)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


def run(tmp_path, port, corpus, *args, mix="valid=1"):
    """python -m loadgen run ... in process: (exit status, the JSON results)."""
    out = tmp_path / "run.json"
    argv = [
        "run",
        "--target",
        f"127.0.0.1:{port}",
        "--corpus",
        str(corpus.directory),
        "--workers",
        "1",
        "--warmup",
        "0",
        "--quiet",
        "--json",
        str(out),
        *(["--mix", mix] if mix else []),
        *args,
    ]
    rc = main(argv)
    return rc, json.loads(out.read_text())


def test_closed_loop_sends_exactly_the_requests_asked(tmp_path, fake, valid_corpus):
    srv = fake()
    rc, doc = run(tmp_path, srv.port, valid_corpus, "--concurrency", "16", "--requests", "500")
    assert rc == 0
    assert doc["counts"]["requests"] == 500 == srv.requests
    assert doc["counts"]["verdicts"] == {"OK": 500} == doc["counts"]["expected"]
    assert doc["settings"]["mode"] == "closed"
    assert doc["latency_ms"]["corrected"]["count"] == 500


def test_open_loop_duration_schedules_rate_times_duration(tmp_path, fake, valid_corpus):
    srv = fake()
    rc, doc = run(
        tmp_path,
        srv.port,
        valid_corpus,
        "--rate",
        "400",
        "--duration",
        "0.5",
        "--batch",
        "3",
        "--max-lag-ms",
        "1000",
    )
    assert rc == 0
    sched = doc["schedule"]
    # Intended times n/400 for n = 0..199 fall inside the 0.5 s.
    assert sched["scheduled"] == 200 == sched["sent"] and sched["not_sent"] == 0
    assert srv.requests == 200 and srv.presentations == 600
    assert doc["counts"]["presentations"] == 600
    assert not sched["behind"] and sched["message"] is None


def test_warmup_is_sent_and_checked_but_not_measured(tmp_path, fake, valid_corpus):
    srv = fake()
    out = tmp_path / "run.json"
    rc = main(
        [
            "run",
            "--target",
            f"127.0.0.1:{srv.port}",
            "--corpus",
            str(valid_corpus.directory),
            "--workers",
            "1",
            "--mix",
            "valid=1",
            "--rate",
            "500",
            "--warmup",
            "0.2",
            "--requests",
            "100",
            "--quiet",
            "--json",
            str(out),
        ]
    )
    doc = json.loads(out.read_text())
    assert rc == 0
    # Intended times n/500 below 0.2 s are warm-up: exactly 100 of them.
    assert doc["warmup"]["requests"] == 100 and doc["counts"]["requests"] == 100
    assert doc["latency_ms"]["corrected"]["count"] == 100
    assert srv.requests == 200


def test_coordinated_omission_is_corrected(tmp_path, fake, valid_corpus):
    """A server that stalls once for S = 300 ms, one request at a time (pipeline 1) at
    200 requests/s: the requests that fell due during the stall could not be sent until
    it ended.  Counted from their intended times they carry the stall (60 of the 200
    were due during it, 30 in its first half: far more than 1 %), counted from their
    actual send times they do not (only the one request in flight saw it)."""
    stall_ms = 300
    srv = fake(stall_at=50, stall_s=stall_ms / 1000)
    rc, doc = run(
        tmp_path,
        srv.port,
        valid_corpus,
        "--rate",
        "200",
        "--requests",
        "200",
        "--connections",
        "1",
        "--pipeline",
        "1",
        "--max-lag-ms",
        "10000",
    )
    assert rc == 0
    corrected = doc["latency_ms"]["corrected"]
    uncorrected = doc["latency_ms"]["uncorrected"]
    assert corrected["count"] == uncorrected["count"] == 200
    assert corrected["max"] >= stall_ms and uncorrected["max"] >= stall_ms
    assert corrected["p99"] >= stall_ms / 2
    assert corrected["p90"] >= stall_ms / 2
    assert uncorrected["p99"] < stall_ms / 2
    # The wait is attributed to the full pipeline, i.e. to the server.
    assert doc["schedule"]["window_wait_s"] > 0


def test_generator_overload_is_detected_and_reported(tmp_path, fake, valid_corpus, capsys):
    """One signing worker asked for 20,000 requests at a million per second: the
    schedule is due within 20 ms, the worker needs far longer to sign them.  The
    pipelines are never full, so the generator, not the server, is to blame."""
    srv = fake()
    rc, doc = run(
        tmp_path,
        srv.port,
        valid_corpus,
        "--rate",
        "1000000",
        "--requests",
        "20000",
        "--connections",
        "2",
        "--pipeline",
        "100000",
        "--fail-on-behind",
    )
    assert rc == 1  # --fail-on-behind; the verdicts themselves were all right
    assert doc["counts"]["requests"] == 20000 and doc["counts"]["mismatches"] == 0
    sched = doc["schedule"]
    assert sched["behind"] and sched["cause"] == "generator"
    assert sched["source_wait_s"] > 0 and sched["window_wait_s"] == 0
    assert "signing workers cannot keep up" in sched["message"]
    text = capsys.readouterr().out
    assert "RATE NOT HELD: requests went out up to" in text and "The generator, not" in text


def test_a_server_that_accepts_a_replay_is_caught(tmp_path, fake, valid_corpus, capsys):
    srv = fake()  # answers OK to everything, the second copy of a presentation too
    rc, doc = run(
        tmp_path, srv.port, valid_corpus, "--concurrency", "4", "--requests", "40", mix="replayed=1"
    )
    assert rc == 1
    assert doc["counts"]["mismatches"] == 20  # 20 pairs, each answered OK twice
    example = doc["mismatch_examples"][0]
    assert example["outcome"] == "replayed"
    assert example["expected"] == "OK and REPLAYED" and example["got"] == "OK, OK"
    assert "mismatch: request" in capsys.readouterr().out


def test_busy_is_counted_apart_and_fails_only_when_asked(tmp_path, fake, valid_corpus):
    srv = fake(busy_after=30)
    rc, doc = run(tmp_path, srv.port, valid_corpus, "--concurrency", "1", "--requests", "50")
    assert rc == 0
    assert doc["counts"]["busy"] == 20 and doc["counts"]["mismatches"] == 0
    assert doc["counts"]["verdicts"] == {"OK": 30, "BUSY": 20}
    srv = fake(busy_after=30)
    rc, doc = run(
        tmp_path,
        srv.port,
        valid_corpus,
        "--concurrency",
        "1",
        "--requests",
        "50",
        "--fail-on-busy",
    )
    assert rc == 1


def test_find_peak_stops_where_busy_appears(tmp_path, fake, valid_corpus, capsys):
    """Steps of 0.25 s at 100, 200, 400 requests/s send 25, 50 and 100 requests; the
    server answers BUSY after 100 presentations, i.e. from the third step on."""
    srv = fake(busy_after=100)
    out = tmp_path / "peak.json"
    rc = main(
        [
            "find-peak",
            "--target",
            f"127.0.0.1:{srv.port}",
            "--corpus",
            str(valid_corpus.directory),
            "--workers",
            "1",
            "--mix",
            "valid=1",
            "--start",
            "100",
            "--factor",
            "2",
            "--step-duration",
            "0.25",
            "--warmup",
            "0",
            "--refine",
            "0",
            "--p99-ms",
            "10000",
            "--max-lag-ms",
            "10000",
            "--quiet",
            "--json",
            str(out),
        ]
    )
    doc = json.loads(out.read_text())
    assert rc == 0
    assert [s["rate"] for s in doc["steps"]] == [100, 200, 400]
    assert [s["busy"] for s in doc["steps"]] == [0, 0, 75]
    assert doc["peak_requests_per_s"] == 200 and not doc["lower_bound_only"]
    assert "peak: 200 requests/s" in capsys.readouterr().out


def test_ctrl_c_stops_sending_drains_and_reports(fake, valid_corpus):
    import os
    import signal

    from loadgen import runner
    from loadgen.driver import Settings

    srv = fake()
    source = runner.start_source(valid_corpus, {"valid": 1}, 1, 1)
    interrupted = []

    def progress(line):
        if not interrupted:  # at the first progress line, as if ops pressed Ctrl-C
            interrupted.append(line)
            os.kill(os.getpid(), signal.SIGINT)

    settings = Settings("127.0.0.1", srv.port, rate=200, duration=60, interval=0.1)
    try:
        r = runner.drive(settings, source, progress=progress)
    finally:
        source.close()
    assert r.aborted.startswith("interrupted") and r.failed
    assert r.counts.requests == r.sent == srv.requests > 0
    assert r.counts.error_count == 0 and r.schedule.not_sent == 0


def test_a_signing_worker_that_cannot_start_is_reported(tmp_path, fake, valid_corpus, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(valid_corpus.directory, broken)
    (broken / "valid.essc").write_bytes(b"not a wallet file")
    srv = fake()
    argv = ["run", "--target", f"127.0.0.1:{srv.port}", "--corpus", str(broken)]
    assert main([*argv, "--workers", "1", "--rate", "10", "--requests", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "signing worker 0 did not start" in err and "valid.essc" in err
    assert srv.requests == 0


@pytest.mark.parametrize(
    ("start", "rates", "peak"),
    [
        (100, [100, 200, 400, 800, 600, 700], 700),  # up, then bisect
        (2000, [2000, 1000, 500, 750, 625], 625),  # the first rate too much: down, then bisect
    ],
)
def test_find_peak_search(monkeypatch, start, rates, peak):
    """The search itself, with steps judged by rate alone: sustainable up to 700/s."""
    from loadgen import peak as peak_mod
    from loadgen.driver import Settings

    def judge(rate_run, rate, bound):
        ok = rate <= 700
        return peak_mod.Step(rate, rate, 1.0, 2.0, 3.0, 0, 0, 0, "ok" if ok else "too slow", False)

    monkeypatch.setattr(peak_mod, "judge", judge)
    base = Settings("127.0.0.1", 1, rate=1, duration=1)
    result = peak_mod.find_peak(
        lambda s: s.rate, base, start=start, factor=2, max_rate=1e6, p99_bound_ms=5, refine=2
    )
    assert [s.rate for s in result.steps] == rates
    assert result.peak == peak and not result.lower_bound_only and not result.reached_max


def test_recorder_builds_the_same_histogram_as_recording_each_value():
    """The run's latencies are counted in numpy and turned into an HdrHistogram at the
    end: it must equal one filled value by value, long values included."""
    rng = np.random.default_rng(5)
    rec, direct = stats.Recorder(), stats.new_histogram()
    for _ in range(7):  # interval by interval
        v = rng.lognormal(7, 1.2, 3000).astype(np.int64)  # ~1 ms, a tail past 65.5 ms
        v[:3] = (0, stats.EXACT_US - 1, stats.EXACT_US)  # the edges; 0 counts as 1 us
        rec.add(v)
        stats.record(direct, v)
    rec.add(np.array([], dtype=np.int64))
    got = rec.histogram()
    assert got.get_max_value() > stats.EXACT_US and got.get_total_count() == 21_000
    assert got.get_total_count() == direct.get_total_count()
    assert got.get_min_value() == direct.get_min_value() == 1
    assert got.get_max_value() == direct.get_max_value()
    for p in (0.1, 1, 10, 50, 90, 99, 99.9, 99.99, 100):
        assert got.get_value_at_percentile(p) == direct.get_value_at_percentile(p)


def test_presign_signs_the_whole_schedule_before_the_clock_starts(fake, valid_corpus):
    """Every chunk is asked for before the run starts; during it the workers sign nothing."""
    from loadgen import runner
    from loadgen.driver import Settings

    srv = fake()
    settings = Settings(
        "127.0.0.1", srv.port, rate=600, duration=0.5, warmup=0.25, presign=-1, max_lag_ms=1000
    )
    assert settings.presign_requests == 450
    source = runner.start_source(valid_corpus, {"valid": 1}, 1, 1)
    try:
        r = runner.drive(settings, source)
        asked = source.asked
    finally:
        source.close()
    assert not r.failed, (r.mismatch_examples, r.error_examples, r.aborted)
    assert not r.ran_out
    assert r.presigned >= 450 and asked * source.requests_per_chunk == r.presigned
    assert r.schedule.scheduled == r.schedule.sent == 300 and r.schedule.not_sent == 0
    assert r.counts.requests + r.warmup.requests == 450 == srv.requests


def test_presign_closed_loop_ends_with_its_signed_requests(tmp_path, fake, valid_corpus):
    srv = fake()
    rc, doc = run(
        tmp_path, srv.port, valid_corpus, "--concurrency", "8", "--duration", "30",
        "--presign", "300",
    )  # fmt: skip
    assert rc == 0
    s = doc["settings"]
    assert s["ran_out"] and s["presigned"] >= 300
    assert doc["counts"]["requests"] == s["presigned"] == srv.requests
    assert doc["measured_s"] < 30


def test_presign_refuses_a_run_that_would_outlive_freshness(tmp_path, fake, pki, capsys):
    """A corpus for a server with a 10.5 s freshness window: signed-ahead presentations
    must go out within half a second (less the margin), so a 2 s run is refused."""
    short = corpus_mod.build(pki.directory, 20, tmp_path / "c", {"valid": 1}, freshness_ms=10_500)
    srv = fake()
    base = ["run", "--target", f"127.0.0.1:{srv.port}", "--corpus", str(short.directory)]
    base += ["--workers", "1", "--warmup", "0", "--quiet"]
    assert main([*base, "--rate", "50", "--duration", "2", "--presign"]) == 2
    err = capsys.readouterr().err
    assert "freshness window (10.5 s" in err and "shorten the run" in err
    assert srv.requests == 0
    # A closed loop has no schedule to sign: it takes a count.
    assert main([*base, "--concurrency", "4", "--duration", "1", "--presign"]) == 2
    assert "give presign a request count" in capsys.readouterr().err
