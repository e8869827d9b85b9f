"""``find-peak``: the highest open-loop rate the server sustains within a latency bound.

Steps the rate up geometrically (down, if even the first rate does not hold), one
short open-loop run per step (each with its own warm-up), until a step is not
sustainable: corrected p99 above the bound, any BUSY,
mismatch or protocol error, or the server falling behind the schedule.  Then it
bisects between the last good and the first bad rate a few times.  A step the
*generator* could not hold ends the search too, but then the answer is only a lower
bound and the report says so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from loadgen import stats
from loadgen.driver import RunResult, Settings

MAX_STEPS_DOWN = 8


@dataclasses.dataclass
class Step:
    rate: float
    achieved: float  # answered requests per second
    p50_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    busy: int
    errors: int
    mismatches: int
    verdict: str  # "ok", or why the step is not sustainable
    generator_limited: bool

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"


def judge(r: RunResult, rate: float, p99_bound_ms: float) -> Step:
    c = r.counts
    p = stats.percentiles_ms(r.corrected)
    sched = r.schedule
    reasons = []
    if c.mismatches or r.warmup.mismatches:
        reasons.append(f"{c.mismatches + r.warmup.mismatches} mismatches")
    if c.error_count or r.aborted:
        reasons.append(f"{c.error_count} errors" + (f" ({r.aborted})" if r.aborted else ""))
    if c.busy:
        reasons.append(f"{c.busy} BUSY")
    if p["p99"] is not None and p["p99"] > p99_bound_ms:
        reasons.append(f"p99 {p['p99']:.2f} ms > {p99_bound_ms:g} ms")
    if p["count"] == 0:
        reasons.append("no answers")
    generator = sched.behind and sched.cause == "generator"
    if sched.behind:
        reasons.append("generator could not hold the rate" if generator else "server fell behind")
    return Step(
        rate=rate,
        achieved=round(c.requests / r.measured_s, 1),
        p50_ms=p["p50"],
        p99_ms=p["p99"],
        p999_ms=p["p99.9"],
        busy=c.busy,
        errors=c.error_count,
        mismatches=c.mismatches + r.warmup.mismatches,
        verdict="; ".join(reasons) or "ok",
        generator_limited=generator,
    )


@dataclasses.dataclass
class PeakResult:
    steps: list[Step]
    peak: float | None  # highest sustainable rate found (requests/s)
    lower_bound_only: bool  # the generator stopped the search, not the server
    reached_max: bool  # every step up to --max-rate was sustainable
    p99_bound_ms: float

    def summary(self) -> str:
        lines = [
            f"{'rate/s':>10} {'achieved/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9}  step"
        ]
        for s in self.steps:
            lines.append(
                f"{s.rate:>10,.0f} {s.achieved:>11,.0f} {_f(s.p50_ms):>8} {_f(s.p99_ms):>8} "
                f"{_f(s.p999_ms):>9}  {s.verdict}"
            )
        if self.peak is None:
            lines.append(
                "peak: none - no step was sustainable, down to the lowest rate tried"
                + (" (the generator could not hold it)" if self.lower_bound_only else "")
            )
        elif self.lower_bound_only:
            lines.append(
                f"peak: at least {self.peak:,.0f} requests/s - the generator, not the server, "
                "could not go higher; add --workers or --batch, or run more generators"
            )
        elif self.reached_max:
            lines.append(
                f"peak: at least {self.peak:,.0f} requests/s - every step up to --max-rate held "
                f"p99 <= {self.p99_bound_ms:g} ms"
            )
        else:
            lines.append(
                f"peak: {self.peak:,.0f} requests/s sustained with corrected p99 <= "
                f"{self.p99_bound_ms:g} ms and no BUSY, errors or mismatches"
            )
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "peak_requests_per_s": self.peak,
            "lower_bound_only": self.lower_bound_only,
            "reached_max": self.reached_max,
            "p99_bound_ms": self.p99_bound_ms,
            "steps": [dataclasses.asdict(s) for s in self.steps],
        }


def _f(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def find_peak(
    run_step: Callable[[Settings], RunResult],
    base: Settings,
    *,
    start: float,
    factor: float,
    max_rate: float,
    p99_bound_ms: float,
    refine: int,
    on_step: Callable[[Step], None] | None = None,
) -> PeakResult:
    """``run_step(settings)`` runs one step; ``base`` carries everything but the rate."""
    steps: list[Step] = []

    def attempt(rate: float) -> Step:
        step = judge(run_step(dataclasses.replace(base, rate=rate)), rate, p99_bound_ms)
        steps.append(step)
        if on_step is not None:
            on_step(step)
        return step

    good: float | None = None
    bad: float | None = None
    rate = start
    downs = 0
    while True:
        step = attempt(rate)
        if step.generator_limited:
            return PeakResult(steps, good, True, False, p99_bound_ms)
        if step.ok:
            good = rate
            if bad is not None:  # came down from a rate that did not hold
                break
            if rate >= max_rate:
                return PeakResult(steps, good, False, True, p99_bound_ms)
            rate = min(rate * factor, max_rate)
        else:
            bad = rate
            if good is not None:
                break
            downs += 1  # even the first rate was too much: step down instead
            if downs > MAX_STEPS_DOWN or rate / factor < 1:
                return PeakResult(steps, None, False, False, p99_bound_ms)
            rate = rate / factor
    for _ in range(refine if good is not None else 0):
        mid = round((good + bad) / 2)
        if mid in (good, bad):
            break
        step = attempt(mid)
        if step.generator_limited:
            return PeakResult(steps, good, True, False, p99_bound_ms)
        if step.ok:
            good = mid
        else:
            bad = mid
    return PeakResult(steps, good, False, False, p99_bound_ms)
