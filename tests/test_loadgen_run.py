"""The load generator against the real server on 127.0.0.1, loaded with the corpus's
revocation input: every verdict class, exact counts on both sides, mismatches caught."""

from __future__ import annotations

import json
import shutil

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from engine.revocation.source import SetRevocation
from loadgen import corpus as corpus_mod
from loadgen.cli import main


@pytest.fixture(scope="module")
def corpus(pki, tmp_path_factory):
    """The default mix: valid, both signatures broken, revoked, expired, stale, replayed..."""
    return corpus_mod.build(pki.directory, 300, tmp_path_factory.mktemp("corpus"))


def revocation_of(c) -> SetRevocation:
    cards, serials = c.revoked()
    return SetRevocation([x.encode() for x in cards], serials)


def server_verdicts(srv) -> dict[str, int]:
    """The server's own count of verdicts (read after it stopped: nothing in flight)."""
    srv.stop()
    text = generate_latest(srv.server.metrics.registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        if family.name == "essc_verifications":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.value:
                    out[sample.labels["verdict"]] = int(sample.value)
    return out


def run(tmp_path, port, corpus_dir, *args):
    out = tmp_path / "run.json"
    rc = main(
        [
            "run",
            "--target",
            f"127.0.0.1:{port}",
            "--corpus",
            str(corpus_dir),
            "--workers",
            "1",
            "--warmup",
            "0",
            "--quiet",
            "--json",
            str(out),
            *args,
        ]
    )
    return rc, json.loads(out.read_text())


def test_open_loop_counts_match_the_server_exactly(tmp_path, start_server, corpus):
    srv = start_server(revocation=revocation_of(corpus))
    report = tmp_path / "report.html"
    rc, doc = run(
        tmp_path,
        srv.port,
        corpus.directory,
        "--rate",
        "1500",
        "--arrivals",
        "poisson",
        "--requests",
        "600",
        "--mix",
        ",".join(f"{name}=1" for name in corpus_mod.DEFAULT_MIX),
        "--report",
        str(report),
    )
    assert rc == 0, doc["mismatch_examples"] or doc["error_examples"]
    counts = doc["counts"]
    assert counts["requests"] == counts["presentations"] == 600
    assert counts["mismatches"] == 0 and counts["errors"] == {} and counts["busy"] == 0
    assert sum(counts["verdicts"].values()) == 600
    assert counts["verdicts"] == counts["expected"]
    # Ten outcomes, equally likely: 600 draws hold every verdict class (but by 1e-25).
    names = ("OK", "MALFORMED", "UNKNOWN_ISSUER", "BAD_ISSUER_SIGNATURE", "BAD_HOLDER_SIGNATURE")
    names += ("EXPIRED", "STALE", "CARD_REVOKED", "CREDENTIAL_REVOKED", "REPLAYED")
    assert set(counts["verdicts"]) == set(names)
    assert server_verdicts(srv) == counts["verdicts"]
    assert doc["latency_ms"]["corrected"]["count"] == 600
    page = report.read_text()
    assert page.count("<svg") == 3 and "Percentile spectrum" in page and "PASS" in page


def test_batches_in_closed_loop(tmp_path, start_server, corpus):
    """verify_batch of 8: a replayed presentation's copies may share a request, where
    the server checks them in order (OK, then REPLAYED)."""
    srv = start_server(revocation=revocation_of(corpus))
    rc, doc = run(
        tmp_path,
        srv.port,
        corpus.directory,
        "--concurrency",
        "6",
        "--requests",
        "60",
        "--batch",
        "8",
        "--connections",
        "2",
    )
    assert rc == 0, doc["mismatch_examples"] or doc["error_examples"]
    counts = doc["counts"]
    assert counts["requests"] == 60 and counts["presentations"] == 480
    assert counts["verdicts"] == counts["expected"]
    assert server_verdicts(srv) == counts["verdicts"]


def test_a_wrong_expectation_is_a_mismatch(tmp_path, start_server, corpus, capsys):
    """The corpus claims expired credentials are fine: the server says EXPIRED, the run
    reports the mismatches with examples and exits non-zero."""
    wrong = tmp_path / "wrong"
    shutil.copytree(corpus.directory, wrong)
    manifest = json.loads((wrong / "corpus.json").read_text())
    for o in manifest["outcomes"]:
        if o["outcome"] == "expired":
            o["expect"] = "OK"
    (wrong / "corpus.json").write_text(json.dumps(manifest))
    srv = start_server(revocation=revocation_of(corpus))
    rc, doc = run(
        tmp_path,
        srv.port,
        wrong,
        "--rate",
        "1000",
        "--requests",
        "100",
        "--mix",
        "valid=1,expired=1",
    )
    assert rc == 1
    counts = doc["counts"]
    expired = counts["verdicts"]["EXPIRED"]
    assert expired > 0 and counts["mismatches"] == expired
    assert counts["verdicts"]["OK"] + expired == 100
    example = doc["mismatch_examples"][0]
    assert example["outcome"] == "expired"
    assert (example["expected"], example["got"]) == ("OK", "EXPIRED")
    out = capsys.readouterr().out
    assert "mismatch: request" in out and f"FAIL: {expired} verdict mismatches" in out


def test_revoked_outcomes_need_the_revocation_data(tmp_path, start_server, corpus, capsys):
    srv = start_server()  # no revocation data
    argv = ["run", "--target", f"127.0.0.1:{srv.port}", "--corpus", str(corpus.directory)]
    assert main([*argv, "--rate", "100", "--requests", "10", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no revocation data" in err and str(corpus.revocation_path) in err
    assert "--exclude card-revoked,credential-revoked" in err
    for leave_out in (
        ["--exclude", "card-revoked,credential-revoked"],
        ["--on-missing-revocation", "exclude", "--revocation-wait", "60"],
    ):
        rc, doc = run(
            tmp_path, srv.port, corpus.directory, "--rate", "500", "--requests", "50", *leave_out
        )
        assert rc == 0 and doc["counts"]["requests"] == 50
        assert "card-revoked" not in doc["settings"]["outcomes"]
        assert "valid" in doc["settings"]["outcomes"]
    # No revocation store: no reload can bring one, so the 60 s are not waited.
    (note,) = doc["notes"]
    assert "no revocation data" in note and "left out of this run" in note


def test_an_unreachable_server_is_reported(tmp_path, corpus, capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        argv = ["run", "--target", f"127.0.0.1:{port}", "--corpus", str(corpus.directory)]
        rc = main([*argv, "--rate", "10", "--requests", "1"])
    assert rc == 2
    assert "cannot connect" in capsys.readouterr().err
