"""The comparison harness: how rows read, and the server topic end to end (quick mode).

No timing is asserted anywhere: only that the harness measures, checks and cleans up.
"""

from __future__ import annotations

import json

from bench import compare, compare_server
from bench.harness import Row, format_table


def test_ratio_always_favours_the_subject_above_one():
    faster = Row("t", "rate", "a", 300.0, "b", 100.0)
    lower = Row("t", "latency", "a", 2.0, "b", 8.0, unit="ms", higher_is_better=False)
    assert faster.ratio == 3.0
    assert lower.ratio == 4.0
    missed = Row("t", "bound", "a", 10.0, "bound", 5.0, higher_is_better=False, target=1.0)
    assert missed.meets_target is False


def test_table_keeps_the_decimals_of_small_values_and_flags_invalid_rows():
    rows = [
        Row("t", "latency", "a", 1.234, "b", 12.5, unit="ms", higher_is_better=False),
        Row("t", "share", "a", 0.5731, "all", 1.0, unit="of CPU", target=0.8, valid=False),
        Row("t", "rate", "a", 25_189.4, "b", 21_483.0, unit="sigs/s", target=2.5),
    ]
    table = format_table(rows)
    assert "1.23 ms" in table and "12.50 ms" in table and "10.13x" in table
    assert "0.573 of CPU" in table and "INVALID" in table
    assert "25,189 sigs/s" in table and ">= 2.5 MISSED" in table


def test_a_run_with_mismatches_is_invalid():
    def doc(mismatches):
        phase = {"mismatches": mismatches, "errors": {}, "busy": 0}
        return {"counts": phase, "warmup": dict(phase, mismatches=0), "schedule": {}}

    good = compare_server.Load(doc(0), "cmd", 1.0, 1.0, 0.0, 2.0)
    bad = compare_server.Load(doc(3), "cmd", 1.0, 1.0, 0.0, 2.0)
    assert compare_server._faults({"engine": [good], "baseline": [good]})[1] is True
    text, valid = compare_server._faults({"engine": [good], "baseline": [bad]})
    assert not valid and "baseline: counts: 3 MISMATCHES" in text


def test_server_topic_quick_end_to_end(tmp_path, monkeypatch, capsys):
    """Both servers and every load run as subprocesses; all answers as expected; both
    servers stopped afterwards, whatever happened."""
    monkeypatch.setattr(compare_server, "CACHE", tmp_path)
    started = []

    class Tracked(compare_server.ServerProcess):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(compare_server, "ServerProcess", Tracked)
    out = tmp_path / "compare.json"
    assert compare.main(["--quick", "--only", "server", "--json", str(out)]) == 0
    assert [s.name for s in started] == ["engine", "baseline"]
    assert all(s.proc.poll() is not None for s in started)

    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 6
    assert all(r["valid"] and r["target"] is None for r in rows)  # no targets in quick mode
    assert all(r["subject_rate"] > 0 and r["baseline_rate"] > 0 for r in rows)
    peak = rows[0]
    assert "0 mismatches, errors or BUSY" in peak["note"]
    assert "engine" in capsys.readouterr().out
