"""What a run tells its reader: the live progress line, the text summary, JSON, HTML.

The HTML report is one self-contained file (inline SVG drawn here, no scripts, no
external assets), so it can be attached to a release ticket as is.
"""

from __future__ import annotations

import html
import io
import json
import math
import time

from engine.verdicts import Verdict
from loadgen import stats
from loadgen.driver import RunResult

# --- live progress ------------------------------------------------------------------------


def progress_line(iv: stats.Interval, target_rate: float | None, max_lag_ms: float) -> str:
    c = iv.corrected_ms
    u = iv.uncorrected_ms
    target = f" (target {target_rate:,.0f})" if target_rate else ""
    lat = "p50 -  p99 -"
    if c[0] is not None:
        lat = f"p50 {c[0]:.2f} ms  p99 {c[1]:.2f} ms (uncorrected {u[1]:.2f})"
    # The drain is what is left after the schedule: a count, not a rate.
    rate = f"{iv.answered:,} answered" if iv.phase == "drain" else f"{iv.rate:,.0f} req/s{target}"
    line = (
        f"[{iv.t:6.1f}s {iv.phase:<7}] {rate}  in flight {iv.in_flight}  "
        f"mismatches {iv.mismatches}  errors {iv.errors}  busy {iv.busy}  {lat}"
    )
    if target_rate and iv.lag_max_ms > max_lag_ms:
        why = ""
        if iv.source_wait_s > iv.window_wait_s:
            why = f": waited {iv.source_wait_s:.2f} s for presentations (generator)"
        elif iv.window_wait_s > 0:
            why = f": pipelines full {iv.window_wait_s:.2f} s (server)"
        line += f"  BEHIND SCHEDULE by {iv.lag_max_ms:,.0f} ms{why}"
    return line


# --- the summary ----------------------------------------------------------------------------


def _ms(v) -> str:
    return "-" if v is None else f"{v:,.3f}"


def describe_run(r: RunResult) -> str:
    s = r.settings
    if s.open_loop:
        load = f"open loop at {s.rate:,.0f} requests/s ({s.arrivals} arrivals)"
    else:
        load = f"closed loop, {s.concurrency} requests in flight"
    length = f"{s.duration:g} s" if s.duration is not None else f"{s.requests:,} requests"
    warm = f" after {s.warmup:g} s of warm-up" if s.warmup else ""
    signing = (
        f"{r.presigned:,} requests signed ahead by {r.workers} worker(s)"
        if r.presigned
        else f"{r.workers} signing worker(s)"
    )
    return (
        f"{load}, {length}{warm}; {s.host}:{s.port}, {s.connections} connections x "
        f"pipeline {s.pipeline}, {r.batch} presentation(s) per request, {signing}"
    )


def summary_text(r: RunResult) -> str:
    c = r.counts
    lines = [f"load run: {describe_run(r)}"]
    seconds = r.measured_s
    lines.append(
        f"throughput   {c.requests / seconds:,.1f} requests/s, "
        f"{c.presentations / seconds:,.1f} presentations/s "
        f"({c.requests:,} requests answered in {seconds:.2f} s)"
    )
    cor = stats.percentiles_ms(r.corrected)
    unc = stats.percentiles_ms(r.uncorrected)
    lines.append(f"latency ms  {'p50':>9} {'p90':>9} {'p99':>9} {'p99.9':>9} {'max':>9}")
    rows = [("corrected", cor), ("uncorrected", unc)]
    if s_open(r):
        rows.append(("send lag", r.schedule.lag))
    if r.server and not r.server["error"]:
        rows.append(("server", r.server["latency_ms"]))  # its histogram: no max
    for name, p in rows:
        lines.append(
            f"  {name:<10}"
            + "".join(f"{_ms(p.get(k)):>10}" for k in ("p50", "p90", "p99", "p99.9", "max"))
        )
    if not s_open(r):
        lines.append("  (closed loop: no schedule, so both count from the actual send)")
    verdicts = "  ".join(f"{Verdict(k).name} {n:,}" for k, n in enumerate(c.verdicts) if n)
    lines.append(f"verdicts     {verdicts or 'none'}")
    lines.append(
        f"checks       {c.mismatches:,} mismatches, {c.busy:,} BUSY, "
        f"{c.error_count:,} errors{_errors(c.errors)}"
    )
    if r.server:
        lines.append(f"server       {server_line(r.server)}")
    w = r.warmup
    if w.requests or w.error_count:
        lines.append(
            f"warm-up      {w.requests:,} requests (not in the figures above), "
            f"{w.mismatches:,} mismatches, {w.busy:,} BUSY, {w.error_count:,} errors"
            f"{_errors(w.errors)}"
        )
    if r.ran_out and not s_open(r):
        lines.append(
            f"signed ahead all {r.presigned:,} requests were sent: the run ended with them"
        )
    sched = r.schedule
    message = sched.message()
    if message:
        head = "RATE NOT HELD" if s_open(r) else "GENERATOR-LIMITED"
        lines.append(f"{head}: {message}")
    elif s_open(r):
        lines.append(
            f"schedule     held: {sched.sent:,} of {sched.scheduled:,} requests sent, send lag "
            f"p99 {_ms(sched.lag.get('p99'))} ms (limit {sched.max_lag_ms:g} ms)"
        )
    if sched.stale_chunks:
        lines.append(
            f"note         {sched.stale_chunks} pooled chunks of presentations were thrown "
            "away unsent because they had grown too old"
        )
    if r.aborted:
        lines.append(f"ABORTED      {r.aborted}")
    for ex in r.mismatch_examples:
        reason = f" ({ex['reason']})" if ex.get("reason") else ""
        lines.append(
            f"  mismatch: request {ex['request_id']}: {ex['outcome']} presentation, expected "
            f"{ex['expected']}, got {ex['got']}{reason}"
        )
    for ex in r.error_examples[:5]:
        lines.append(f"  error: request {ex['request_id']}: {ex['error']}: {ex['message']}")
    hint = _pki_hint(r)
    if hint:
        lines.append(hint)
    lines.append(f"result       {verdict_word(r)}")
    return "\n".join(lines)


def server_line(sv: dict) -> str:
    """What the server counted between the scrapes, in one line (or why it could not)."""
    if sv["error"]:
        return f"metrics not read ({sv['error']})"
    cpu, busy = sv["cpu"], sv["busy"]
    reasons = ", ".join(f"{k} {v:,}" for k, v in busy["by_reason"].items())
    share = cpu["native_share"]
    per = cpu["us_per_presentation"]
    line = (
        f"{sv['requests']:,} requests, {sv['presentations']:,} presentations in "
        f"{sv['interval_s']:.2f} s between scrapes; BUSY {busy['total']:,}"
        f"{f' ({reasons})' if reasons else ''}; errors "
        f"{sum(sv['protocol_errors'].values()):,}{_errors(sv['protocol_errors'])}; CPU "
        f"{cpu['seconds']:,.2f} s ({cpu['cores'] or 0:.2f} cores"
        f"{f', {100 * share:.0f}% native verify' if share is not None else ''}"
        f"{f', {per:,.0f} us per presentation' if per is not None else ''})"
    )
    if sv["in_flight_at_start"]:
        line += f"; {sv['in_flight_at_start']:,} requests in flight at the first scrape"
    if sv["workers_missing"]:
        line += f"; workers left out (in one scrape only): {', '.join(sv['workers_missing'])}"
    return line


def s_open(r: RunResult) -> bool:
    return r.settings.open_loop


def verdict_word(r: RunResult) -> str:
    c, w = r.counts, r.warmup
    problems = []
    if c.mismatches + w.mismatches:
        problems.append(f"{c.mismatches + w.mismatches:,} verdict mismatches")
    if c.error_count + w.error_count:
        problems.append(f"{c.error_count + w.error_count:,} protocol errors")
    if r.aborted:
        problems.append("aborted")
    return "FAIL: " + ", ".join(problems) if problems else "PASS: every verdict as expected"


def _errors(errors: dict) -> str:
    if not errors:
        return ""
    return " (" + ", ".join(f"{k} {v:,}" for k, v in sorted(errors.items())) + ")"


def _pki_hint(r: RunResult) -> str | None:
    """Valid presentations refused as unknown or forged: most likely another PKI."""
    bad = {"UNKNOWN_ISSUER", "BAD_ISSUER_SIGNATURE"}
    examples = [e for e in r.mismatch_examples if e["expected"] == "OK" and e["got"] in bad]
    if examples and len(examples) == len([e for e in r.mismatch_examples if e["expected"] == "OK"]):
        return (
            "hint         valid presentations come back as unknown or forged: is the server "
            "serving the trust list of the PKI the corpus was made from?"
        )
    return None


# --- JSON -----------------------------------------------------------------------------------


def to_json(r: RunResult) -> dict:
    s = r.settings
    c = r.counts
    return {
        "tool": "essc-loadgen",
        "started_at": round(r.started_at, 3),
        "settings": {
            "target": f"{s.host}:{s.port}",
            "mode": "open" if s.open_loop else "closed",
            "rate": s.rate,
            "arrivals": s.arrivals if s.open_loop else None,
            "concurrency": s.concurrency,
            "duration_s": s.duration,
            "requests": s.requests,
            "warmup_s": s.warmup,
            "connections": s.connections,
            "pipeline": s.pipeline,
            "batch": r.batch,
            "workers": r.workers,
            "presigned": r.presigned,
            "ran_out": r.ran_out,
            "corpus": r.corpus,
            "outcomes": r.outcome_names,
        },
        "measured_s": round(r.measured_s, 3),
        "throughput": {
            "requests_per_s": round(c.requests / r.measured_s, 1),
            "presentations_per_s": round(c.presentations / r.measured_s, 1),
        },
        "latency_ms": {
            "corrected": stats.percentiles_ms(r.corrected),
            "uncorrected": stats.percentiles_ms(r.uncorrected),
        },
        "counts": c.to_json(),
        "warmup": r.warmup.to_json(),
        "schedule": {
            **{k: v for k, v in vars(r.schedule).items()},
            "message": r.schedule.message(),
        },
        "mismatch_examples": r.mismatch_examples,
        "error_examples": r.error_examples,
        "aborted": r.aborted,
        "failed": r.failed,
        "result": verdict_word(r),
        "intervals": [iv.to_json() for iv in r.intervals],
        "spectrum_ms": {
            "corrected": stats.spectrum_ms(r.corrected),
            "uncorrected": stats.spectrum_ms(r.uncorrected),
        },
        "server": r.server,
    }


def write_json(path: str, doc: dict) -> None:
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


# --- HdrHistogram percentile distributions ---------------------------------------------------

HGRM_SCALING = 1000  # microseconds recorded, milliseconds written (as wrk2 --latency)


def hgrm_paths(json_path: str) -> dict[str, str]:
    """load.json -> {"corrected": "load.corrected.hgrm", "uncorrected": ...}."""
    base = json_path[: -len(".json")] if json_path.endswith(".json") else json_path
    return {name: f"{base}.{name}.hgrm" for name in ("corrected", "uncorrected")}


def hgrm(hist) -> str:
    """The histogram's percentile distribution (.hgrm), as HdrHistogram's plotter reads it."""
    out = io.BytesIO()
    hist.output_percentile_distribution(out, HGRM_SCALING)
    text = out.getvalue().decode()
    # hdrhistogram (0.10) leaves the footer's standard deviation unscaled: microseconds
    # beside milliseconds.  HdrHistogram's Java original scales it like every value.
    sd, digits = hist.get_stddev(), hist.significant_figures
    wrong = f"StdDeviation   = {sd:12.{digits}f}"
    return text.replace(wrong, f"StdDeviation   = {sd / HGRM_SCALING:12.{digits}f}")


def write_hgrm(json_path: str, r: RunResult) -> dict[str, str]:
    """Writes the corrected and uncorrected distributions beside the JSON; their paths."""
    paths = hgrm_paths(json_path)
    for name, path in paths.items():
        with open(path, "w") as f:
            f.write(hgrm(getattr(r, name)))
    return paths


# --- HTML -----------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:980px;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:2em}
table{border-collapse:collapse}td,th{padding:2px 10px;text-align:right;border-bottom:1px solid #ddd}
th:first-child,td:first-child{text-align:left}
.bad{color:#b00;font-weight:bold}.ok{color:#070;font-weight:bold}
.note{background:#fff3cd;border:1px solid #e0c36a;padding:.6em}
svg text{font:11px system-ui,sans-serif}
"""
_COLORS = ("#1f77b4", "#d62728", "#7f7f7f", "#2ca02c", "#9467bd")


def _chart(
    series: list[tuple[str, list[tuple[float, float]], str, bool]],
    *,
    x_label: str,
    y_label: str,
    x_ticks: list[tuple[float, str]] | None = None,
    y_log: bool = False,
    shade: tuple[float, float] | None = None,
    hline: tuple[float, str] | None = None,
    width: int = 900,
    height: int = 300,
) -> str:
    """A line chart as inline SVG: series are (name, points, colour, dashed)."""
    left, right, top, bottom = 70, 20, 20, 45
    pts = [p for _, ps, _, _ in series for p in ps if p[1] is not None]
    if not pts:
        return "<p>(no data)</p>"
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts] + ([hline[0]] if hline else [])
    x0, x1 = min(xs), max(xs)
    if x1 <= x0:
        x1 = x0 + 1
    if y_log:
        lo = max(min(y for y in ys if y > 0) if any(y > 0 for y in ys) else 0.001, 0.001)
        y0, y1 = math.floor(math.log10(lo)), math.ceil(math.log10(max(ys) or 1))
        if y1 <= y0:
            y1 = y0 + 1
    else:
        y0, y1 = 0.0, (max(ys) or 1) * 1.08

    def sx(x):
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def sy(y):
        if y_log:
            y = math.log10(max(y, 10**y0))
        return top + (1 - (y - y0) / (y1 - y0)) * (height - top - bottom)

    out = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">']
    if shade:
        a, b = sx(max(shade[0], x0)), sx(min(shade[1], x1))
        if b > a:
            out.append(
                f'<rect x="{a:.1f}" y="{top}" width="{b - a:.1f}" height="{height - top - bottom}"'
                ' fill="#eee"/>'
            )
            out.append(f'<text x="{a + 4:.1f}" y="{top + 12}" fill="#888">warm-up</text>')
    # y grid
    if y_log:
        y_ticks = [(10.0**e, f"{10.0**e:g}") for e in range(int(y0), int(y1) + 1)]
    else:
        step = _nice_step(y1 / 5)
        y_ticks = [(k * step, f"{k * step:g}") for k in range(int(y1 / step) + 1)]
    for y, label in y_ticks:
        out.append(
            f'<line x1="{left}" x2="{width - right}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" '
            'stroke="#e5e5e5"/>'
        )
        out.append(f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{label}</text>')
    if x_ticks is None:
        step = _nice_step((x1 - x0) / 8)
        first = math.ceil(x0 / step)
        x_ticks = [(k * step, f"{k * step:g}") for k in range(first, int(x1 / step) + 1)]
    for x, label in x_ticks:
        if x0 <= x <= x1:
            out.append(
                f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{top}" y2="{height - bottom}" '
                'stroke="#f0f0f0"/>'
            )
            out.append(
                f'<text x="{sx(x):.1f}" y="{height - bottom + 15}" text-anchor="middle">'
                f"{html.escape(label)}</text>"
            )
    out.append(
        f'<rect x="{left}" y="{top}" width="{width - left - right}" '
        f'height="{height - top - bottom}" fill="none" stroke="#999"/>'
    )
    if hline:
        out.append(
            f'<line x1="{left}" x2="{width - right}" y1="{sy(hline[0]):.1f}" '
            f'y2="{sy(hline[0]):.1f}" stroke="#2ca02c" stroke-dasharray="2,3"/>'
        )
        out.append(
            f'<text x="{width - right - 4}" y="{sy(hline[0]) - 4:.1f}" text-anchor="end" '
            f'fill="#2ca02c">{html.escape(hline[1])}</text>'
        )
    for k, (name, ps, color, dashed) in enumerate(series):
        dash = ' stroke-dasharray="5,4"' if dashed else ""
        # No value (an interval without answers) breaks the line: nothing to join across.
        runs: list[list[str]] = [[]]
        for x, y in ps:
            if y is None:
                runs.append([])
            else:
                runs[-1].append(f"{sx(x):.1f},{sy(y):.1f}")
        for run in runs:
            if len(run) == 1:
                cx, cy = run[0].split(",")
                out.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{color}"/>')
            elif run:
                out.append(
                    f'<polyline points="{" ".join(run)}" fill="none" stroke="{color}" '
                    f'stroke-width="1.6"{dash}/>'
                )
        lx = left + 10 + k * 170
        out.append(
            f'<line x1="{lx}" x2="{lx + 22}" y1="{height - 8}" y2="{height - 8}" '
            f'stroke="{color}" stroke-width="2"{dash}/>'
        )
        out.append(f'<text x="{lx + 27}" y="{height - 4}">{html.escape(name)}</text>')
    out.append(
        f'<text x="14" y="{top + (height - top - bottom) / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + (height - top - bottom) / 2:.0f})">'
        f"{html.escape(y_label)}</text>"
    )
    out.append(
        f'<text x="{width - right}" y="{height - bottom + 30}" text-anchor="end" fill="#555">'
        f"{html.escape(x_label)}</text>"
    )
    out.append("</svg>")
    return "\n".join(out)


def _nice_step(raw: float) -> float:
    if raw <= 0:
        return 1.0
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _spectrum_points(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Percentile p -> x = log10(1 / (1 - p)), the usual HdrHistogram spectrum axis."""
    out = []
    for p, v in points:
        if p >= 100:
            p = 99.9999
        out.append((math.log10(100 / (100 - p)), v))
    return out


def html_report(r: RunResult, doc: dict | None = None) -> str:
    doc = doc or to_json(r)
    ivs = r.intervals
    t_of = [iv.t for iv in ivs]
    latency = _chart(
        [
            (
                "corrected max",
                [(t, iv.corrected_ms[2]) for t, iv in zip(t_of, ivs)],
                _COLORS[2],
                False,
            ),
            (
                "corrected p99",
                [(t, iv.corrected_ms[1]) for t, iv in zip(t_of, ivs)],
                _COLORS[1],
                False,
            ),
            (
                "corrected p50",
                [(t, iv.corrected_ms[0]) for t, iv in zip(t_of, ivs)],
                _COLORS[0],
                False,
            ),
            (
                "uncorrected p99",
                [(t, iv.uncorrected_ms[1]) for t, iv in zip(t_of, ivs)],
                _COLORS[4],
                True,
            ),
        ],
        x_label="seconds since start",
        y_label="latency, ms (log)",
        y_log=True,
        shade=(0, r.settings.warmup) if r.settings.warmup else None,
    )
    rate = _chart(
        [("answered requests/s", [(t, iv.rate) for t, iv in zip(t_of, ivs)], _COLORS[0], False)],
        x_label="seconds since start",
        y_label="requests/s",
        shade=(0, r.settings.warmup) if r.settings.warmup else None,
        hline=(r.settings.rate, "target") if r.settings.rate else None,
    )
    spec = doc["spectrum_ms"]
    ticks = [(math.log10(100 / (100 - p)), f"{p:g}%") for p in (0, 90, 99, 99.9, 99.99, 99.999)]
    spectrum = _chart(
        [
            ("corrected", _spectrum_points(spec["corrected"]), _COLORS[1], False),
            ("uncorrected", _spectrum_points(spec["uncorrected"]), _COLORS[4], True),
        ],
        x_label="percentile",
        y_label="latency, ms (log)",
        x_ticks=ticks,
        y_log=True,
    )
    c = r.counts
    verdict_rows = "".join(
        f"<tr><td>{Verdict(k).name}</td><td>{c.verdicts[k]:,}</td><td>{c.expected[k]:,}</td></tr>"
        for k in range(len(Verdict))
        if c.verdicts[k] or c.expected[k]
    )
    lat = doc["latency_ms"]
    lat_rows = ""
    sv = doc.get("server")
    server_row = [("server (its histogram)", sv["latency_ms"])] if sv and not sv["error"] else []
    for name, p in (
        ("corrected", lat["corrected"]),
        ("uncorrected", lat["uncorrected"]),
        ("send lag", doc["schedule"]["lag"]),
        *server_row,
    ):
        cells = "".join(f"<td>{_ms(p.get(k))}</td>" for k in ("p50", "p90", "p99", "p99.9", "max"))
        lat_rows += f"<tr><td>{name}</td>{cells}</tr>"
    message = r.schedule.message()
    notes = ""
    if message:
        head = "Rate not held." if r.settings.open_loop else "Generator-limited."
        notes += f'<p class="note"><b>{head}</b> {html.escape(message)}</p>'
    if r.aborted:
        notes += f'<p class="note"><b>Aborted:</b> {html.escape(r.aborted)}</p>'
    examples = "".join(
        f"<li>request {e['request_id']}: {html.escape(e['outcome'])} presentation, expected "
        f"{html.escape(e['expected'])}, got {html.escape(e['got'])}"
        f"{' (' + html.escape(e['reason']) + ')' if e.get('reason') else ''}</li>"
        for e in r.mismatch_examples
    )
    word = verdict_word(r)
    cls = "bad" if r.failed else "ok"
    when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(r.started_at))
    tp = doc["throughput"]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>e-SSC load report {html.escape(when)}</title>
<style>{_CSS}</style></head><body>
<h1>e-SSC verification engine: load report</h1>
<p>{html.escape(when)} &middot; {html.escape(describe_run(r))}</p>
<p class="{cls}">{html.escape(word)}</p>{notes}
<h2>Summary</h2>
<table>
<tr><td>throughput</td><td>{tp["requests_per_s"]:,.1f} requests/s</td>
<td>{tp["presentations_per_s"]:,.1f} presentations/s</td></tr>
<tr><td>answered</td><td>{c.requests:,} requests</td><td>{c.presentations:,} presentations in
{r.measured_s:.2f} s</td></tr>
<tr><td>mismatches / BUSY / errors</td><td>{c.mismatches:,} / {c.busy:,} / {c.error_count:,}</td>
<td>{html.escape(_errors(c.errors))}</td></tr>
</table>
<h2>Latency (ms)</h2>
<p>Corrected: from each request's intended send time on the schedule (includes time the
generator was held up); uncorrected: from the actual send. Warm-up excluded.</p>
<table><tr><th></th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>
{lat_rows}</table>
{_server_html(sv)}
<h2>Latency over time</h2>{latency}
<h2>Throughput over time</h2>{rate}
<h2>Percentile spectrum</h2>{spectrum}
<h2>Verdicts</h2>
<table><tr><th>verdict</th><th>answered</th><th>expected</th></tr>{verdict_rows}</table>
{"<h2>First mismatches</h2><ul>" + examples + "</ul>" if examples else ""}
</body></html>
"""


def _us(v) -> str:
    return "-" if v is None else f"{v:,.1f} us"


def _server_html(sv: dict | None) -> str:
    if not sv:
        return ""
    head = (
        "<h2>Server (from its metrics)</h2><p>What the server counted between scrapes of "
        f"{html.escape(sv['metrics_url'])} at the start of the measured phase and after "
        "the last answer; its latency is from arrival to the answer written, interpolated "
        "within the buckets of <code>essc_verify_latency_seconds</code>.</p>"
    )
    if sv["error"]:
        return head + f'<p class="note"><b>Metrics not read:</b> {html.escape(sv["error"])}</p>'
    cpu, busy = sv["cpu"], sv["busy"]
    rows = [
        ("interval", f"{sv['interval_s']:.2f} s", f"{sv['workers']} process(es)"),
        ("answered", f"{sv['requests']:,} requests", f"{sv['presentations']:,} presentations"),
        ("BUSY", f"{busy['total']:,}", _errors(busy["by_reason"])),
        ("errors", f"{sum(sv['protocol_errors'].values()):,}", _errors(sv["protocol_errors"])),
        ("CPU", f"{cpu['seconds']:,.2f} s", f"{cpu['cores'] or 0:.2f} cores"),
        (
            "native verify",
            f"{cpu['native_verify_seconds']:,.2f} s",
            "-" if cpu["native_share"] is None else f"{100 * cpu['native_share']:.0f}% of CPU",
        ),
        ("CPU per presentation", _us(cpu["us_per_presentation"]), ""),
    ]
    cells = "".join(
        f"<tr><td>{a}</td><td>{html.escape(b)}</td><td>{html.escape(c)}</td></tr>"
        for a, b, c in rows
    )
    return head + f"<table>{cells}</table>"


def write_html(path: str, r: RunResult, doc: dict | None = None) -> None:
    with open(path, "w") as f:
        f.write(html_report(r, doc))
