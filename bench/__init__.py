"""Benchmark suites (pytest-benchmark) and the side-by-side comparison harness."""
