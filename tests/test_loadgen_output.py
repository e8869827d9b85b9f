"""What the load generator writes for tools to read: the HdrHistogram percentile
distributions (.hgrm) beside its JSON."""

from __future__ import annotations

import json

import pytest

from loadgen import corpus as corpus_mod
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


def test_hgrm_beside_the_json(tmp_path, start_server, corpus):
    srv = start_server()
    rc, doc = run(
        tmp_path, srv.port, corpus, "--rate", "2000", "--requests", "400", "--warmup", "0"
    )
    assert rc == 0
    assert doc["hgrm"] == {
        name: str(tmp_path / f"load.{name}.hgrm") for name in ("corrected", "uncorrected")
    }
    for name in ("corrected", "uncorrected"):
        check_hgrm(tmp_path / f"load.{name}.hgrm", doc["latency_ms"][name])
        assert doc["latency_ms"][name]["count"] == 400
