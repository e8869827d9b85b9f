"""Side-by-side measurement: every figure is a ratio against a baseline timed in the same run.

A comparison module (``bench/compare_<topic>.py``) exposes ``run(quick: bool) -> list[Row]``;
``python -m bench.compare`` runs them all and prints one table with the machine it ran on.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from collections.abc import Callable


@dataclasses.dataclass
class Row:
    """One comparison: subject against baseline.

    Both are rates (higher is better) unless ``higher_is_better`` is False (latencies,
    CPU per request); the ratio is always oriented so that above 1 favours the subject.
    """

    topic: str
    what: str
    subject: str
    subject_rate: float
    baseline: str
    baseline_rate: float
    unit: str = "items/s"
    target: float | None = None  # the ratio the brief asks for, where it sets one
    note: str = ""
    higher_is_better: bool = True
    valid: bool = True  # False: the measurement went wrong (wrong answers); compare exits 1

    @property
    def ratio(self) -> float:
        num, den = self.subject_rate, self.baseline_rate
        if not self.higher_is_better:
            num, den = den, num
        return num / den if den else float("inf")

    @property
    def meets_target(self) -> bool | None:
        return None if self.target is None else self.ratio >= self.target


def rate(fn: Callable[[], object], items: int, *, min_time: float = 0.3, repeat: int = 5) -> float:
    """Best observed items per second of ``fn`` (which processes ``items`` items per call).

    Calls are repeated until ``min_time`` has passed, ``repeat`` times, and the best
    round is kept: the least disturbed by whatever else the machine was doing.
    """
    fn()  # warm caches, page in mappings
    best = 0.0
    for _ in range(repeat):
        calls = 0
        start = time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        best = max(best, calls * items / elapsed)
    return best


def machine() -> dict[str, str]:
    """CPU model, core count and versions, printed with every table."""
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        from engine import _core

        info["libsodium"] = _core.sodium_version()
    except ImportError:
        pass
    return info


def _value(v: float) -> str:
    # Rates print whole; latencies in ms and CPU shares need their decimals.
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.2f}" if abs(v) >= 1 else f"{v:.3f}"


def format_table(rows: list[Row]) -> str:
    headers = ["topic", "what", "subject", "rate", "baseline", "rate", "ratio", "target"]
    lines = []
    for r in rows:
        target = ""
        if r.target is not None:
            target = f">= {r.target:g} {'ok' if r.meets_target else 'MISSED'}"
        if not r.valid:
            target = "INVALID (see note)"
        lines.append(
            [
                r.topic,
                r.what,
                r.subject,
                f"{_value(r.subject_rate)} {r.unit}",
                r.baseline,
                f"{_value(r.baseline_rate)} {r.unit}",
                f"{r.ratio:.2f}x",
                target,
            ]
        )
    widths = [max([len(h)] + [len(line[i]) for line in lines]) for i, h in enumerate(headers)]
    out = [
        "  ".join(h.ljust(w) for h, w in zip(headers, widths)),
        "  ".join("-" * w for w in widths),
    ]
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines]
    notes = [f"- {r.topic} / {r.what}: {r.note}" for r in rows if r.note]
    return "\n".join(out + (["", *notes] if notes else []))
