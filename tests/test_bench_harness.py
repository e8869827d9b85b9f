"""The comparison harness: how rows read.

No timing is asserted anywhere: only that the harness measures, checks and cleans up.
"""

from __future__ import annotations

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
