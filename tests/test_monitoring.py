"""The monitoring that ships with the engine, checked with the real tools
(docs/DEPLOYMENT.md, "Alerts"):

- deploy/prometheus/essc-alerts.yml passes `promtool check rules`, and its unit tests
  (deploy/prometheus/tests/) pass `promtool test rules`; every alert there is tested
  both firing and silent, and has `for`, a severity, a summary, a description and a
  runbook naming a section of the alerts documentation;
- the exposition of a running engine, scraped over HTTP from its metrics port, and the
  merged one of a supervisor with two workers pass `promtool check metrics`;
- deploy/grafana/essc-engine.json is a dashboard Grafana can load (panels with ids and
  grid positions, Prometheus targets on the ${datasource} variable, an instance
  variable, a row repeated per node), and every query in it parses (as a recording
  rule, through `promtool check rules`);
- every metric the rules and the dashboard name is one the engine exports (or `up`),
  so renaming a metric fails here.

promtool comes from Debian's prometheus package (`make packages` installs it); where it
is missing the tests skip, and fail under CI=true (tests/realservers.py).
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import re
import subprocess
import time
import urllib.request

import pytest
from realservers import free_port, redis_server, require_program
from serving import ServerThread, server_config
from test_supervisor import Fleet

from engine.redis_replay.store import init_store
from engine.verdicts import Verdict
from engine.wire.client import Client

ROOT = pathlib.Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "essc-alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "tests" / "essc-alerts-test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "essc-engine.json"
DEADLINE_S = 60.0

# Metrics the rules and the dashboard already use that the engine does not export yet:
# the name, and what brings it.  A name here that the engine does export fails the test
# (remove it then, so a later rename of it is caught like any other).
# Metrics the rules or the dashboard may name before the engine exports them (none now).
NOT_YET_EXPOSED: dict[str, str] = {}


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_program("promtool")


def _promtool(promtool: str, *args: str, stdin: str | None = None) -> str:
    """Runs promtool; its output, or a failure that shows it."""
    done = subprocess.run(
        [promtool, *args], input=stdin, capture_output=True, text=True, timeout=120
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)}: exit {done.returncode}\n{output}"
    return output


# --- the rules files, read without a YAML library ------------------------------------------
#
# Both files are written in one plain style (block mappings, one key a line, `expr: |`
# for multi-line queries); these readers take that style only.


def _alert_blocks() -> dict[str, str]:
    """Each alert's lines in the rules file, by name."""
    text = RULES.read_text()
    starts = list(re.finditer(r"^ *- alert: *(\S+) *$", text, re.M))
    blocks: dict[str, str] = {}
    for k, match in enumerate(starts):
        end = starts[k + 1].start() if k + 1 < len(starts) else len(text)
        following = re.search(r"^ *- name: ", text[match.end() : end], re.M)
        if following is not None:
            end = match.end() + following.start()
        assert match.group(1) not in blocks, f"alert {match.group(1)} defined twice"
        blocks[match.group(1)] = text[match.start() : end]
    return blocks


def _exprs(block: str) -> list[str]:
    """The `expr:` values of a piece of the rules file (inline, or `|` / `>-` blocks)."""
    lines = block.splitlines()
    found = []
    for k, line in enumerate(lines):
        match = re.match(r"^( *)(?:- )?expr: *(.*)$", line)
        if match is None:
            continue
        value = match.group(2).strip()
        if value not in ("|", "|-", ">", ">-"):
            found.append(value.strip("'\""))
            continue
        indent = len(match.group(1))
        body = []
        for following in lines[k + 1 :]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            body.append(following.strip())
        found.append(" ".join(body).strip())
    return found


def _rule_tests() -> list[tuple[str, bool]]:
    """(alertname, fires) for every alert_rule_test case of the unit tests."""
    cases = []
    text = RULE_TESTS.read_text()
    for match in re.finditer(
        r"^ *- eval_time: *\S+.*\n *alertname: *(\S+) *\n *exp_alerts: *(\[\])?", text, re.M
    ):
        cases.append((match.group(1), match.group(2) is None))
    assert len(cases) == text.count("alertname:"), "an alert_rule_test case not in the usual form"
    return cases


def _alerts_doc() -> str:
    """The "Alerts" section of docs/DEPLOYMENT.md."""
    deployment = (ROOT / "docs" / "DEPLOYMENT.md").read_text()
    match = re.search(r"^## Alerts *\n(.*?)(?=^## |\Z)", deployment, re.M | re.S)
    assert match is not None, 'docs/DEPLOYMENT.md has no "## Alerts" section'
    return match.group(0)


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_alert_rules_pass_promtool_check(promtool):
    output = _promtool(promtool, "check", "rules", str(RULES))
    assert f"SUCCESS: {len(_alert_blocks())} rules found" in output, output


def test_alert_rules_pass_their_unit_tests(promtool):
    output = _promtool(promtool, "test", "rules", str(RULE_TESTS))
    assert "SUCCESS" in output and "FAILED" not in output, output


def test_every_alert_is_tested_firing_and_silent():
    alerts = set(_alert_blocks())
    cases = _rule_tests()
    # A case naming no alert of the file passes promtool with exp_alerts: [] whatever
    # the rules say: every name must be one of the file's.
    assert {name for name, _ in cases} <= alerts
    assert sorted(alerts - {name for name, fires in cases if fires}) == [], "never fires"
    assert sorted(alerts - {name for name, fires in cases if not fires}) == [], "never silent"


def test_every_alert_has_for_severity_annotations_and_a_runbook_section():
    doc = _alerts_doc()
    sections = {_anchor(h): h for h in re.findall(r"^### +(.+?) *$", doc, re.M)}
    blocks = _alert_blocks()
    assert len(blocks) >= 15
    for name, block in blocks.items():
        assert re.search(r"^ +for: *\d+[smh] *$", block, re.M), f"{name}: no for:"
        assert re.search(r"^ +severity: *(critical|warning) *$", block, re.M), name
        for key in ("summary", "description"):
            assert re.search(rf"^ +{key}: *\S", block, re.M), f"{name}: no {key}"
        runbook = re.search(r'^ +runbook: *"docs/DEPLOYMENT\.md#([\w-]+)" *$', block, re.M)
        assert runbook is not None, f"{name}: no runbook into docs/DEPLOYMENT.md"
        assert sections.get(runbook.group(1)) == name, f"{name}: no section {name} in Alerts"
    assert sorted(set(sections.values()) - set(blocks)) == [], "sections for no alert"


# --- metric names in PromQL ---------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_NAME = re.compile(r"(?<![\w:.])[A-Za-z_:][\w:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
_KEYWORDS |= {"group_left", "group_right", "inf", "nan", "atan2"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, label names, keywords
    and durations left out)."""
    expr = _STRING.sub('""', expr)
    expr = _MATCHERS.sub("", expr)
    expr = _GROUPING.sub("", expr)
    expr = _RANGE.sub("", expr)
    names = set()
    for match in _NAME.finditer(expr):
        if expr[match.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        if match.group(0).lower() not in _KEYWORDS:
            names.add(match.group(0))
    return names


def test_metric_names_are_found_in_promql():
    expr = (
        'histogram_quantile(0.99, sum without (worker) (rate(a_bucket{le!="", x=~"1|2"}[5m])))'
        " > 0.005 and on (instance) b_total offset 15m or max_over_time(c[1h:1m]) - time()"
        " < bool 3 unless count by (kind) (d{kind='down'}) / ignoring(kind) group_left e"
        " or vector(0) + f:g"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c", "d", "e", "f:g"}


# --- the expositions of a running engine and of a supervisor ---------------------------


def now_ms() -> int:
    return int(time.time() * 1000)


async def _verify_some(port: int, scenarios) -> None:
    """A few verify requests on one connection, so the histograms and counters have
    samples: 4 OK, 1 EXPIRED, then 2 REPLAYED (through the shared store)."""
    async with await Client.connect("127.0.0.1", port) as client:
        batch = scenarios.presentations([Verdict.OK] * 4 + [Verdict.EXPIRED], now_ms())
        await client.verify_batch(batch)
        for p in batch[:2]:
            await client.verify(p)


# The last of _verify_some's answers counted (an answer goes out before its batch is
# counted): a scrape that shows it shows them all.
_COUNTED = r'^essc_verifications_total\{verdict="REPLAYED"(,worker="\d+")?\} 2\.0$'


def _scrape(address: str) -> str:
    """/metrics at ``address`` once it shows every verify of _verify_some counted."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=30) as response:
            text = response.read().decode()
        if re.search(_COUNTED, text, re.M) or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        init_store(redis_url=server.url)
        yield server.url


@pytest.fixture(scope="module")
def engine_exposition(pki, scenarios, redis_url) -> str:
    """/metrics of an engine serving in this process (with the shared replay store, so
    its metrics are there too) after a few verifies."""
    port = free_port()
    cfg = server_config(
        pki,
        **{"metrics.port": port, "replay.redis_url": redis_url, "batching.workers": 1},
    )
    srv = ServerThread(cfg)
    try:
        asyncio.run(asyncio.wait_for(_verify_some(srv.port, scenarios), DEADLINE_S))
        return _scrape(f"127.0.0.1:{port}")
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def supervisor_exposition(pki, scenarios, redis_url, tmp_path_factory) -> str:
    """The supervisor's merged /metrics (two workers) after a few verifies."""
    metrics_port = free_port()
    node = Fleet(
        pki,
        tmp_path_factory.mktemp("supervised"),
        "--set",
        f"replay.redis_url={redis_url}",
        "--set",
        "batching.workers=1",
        metrics_port=metrics_port,
    )
    try:
        asyncio.run(asyncio.wait_for(_verify_some(node.port, scenarios), DEADLINE_S))
        return _scrape(f"127.0.0.1:{metrics_port}")
    finally:
        node.stop()


def _families(exposition: str) -> dict[str, str]:
    """Metric family name -> type, from the TYPE lines."""
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.M))


def _exported(exposition: str) -> set[str]:
    """The series names an exposition offers a query (a histogram's _bucket, _sum and
    _count), declared families without samples yet included."""
    names = set(re.findall(r"^([A-Za-z_:][\w:]*)[{ ]", exposition, re.M))
    for family, kind in _families(exposition).items():
        if kind in ("histogram", "summary"):
            names |= {f"{family}_sum", f"{family}_count"}
            names |= {f"{family}_bucket"} if kind == "histogram" else set()
        else:
            names.add(family)
    return names


def test_engine_exposition_passes_promtool_check_metrics(promtool, engine_exposition):
    assert 'essc_verifications_total{verdict="OK"} 4.0' in engine_exposition
    assert re.search(_COUNTED, engine_exposition, re.M)
    assert "essc_replay_store_masters_up 1.0" in engine_exposition
    assert _promtool(promtool, "check", "metrics", stdin=engine_exposition).strip() == ""


def test_supervisor_exposition_passes_promtool_check_metrics(
    promtool, engine_exposition, supervisor_exposition
):
    for k in (0, 1):
        assert f'essc_supervisor_worker_up{{worker="{k}"}} 1.0' in supervisor_exposition
    # Every worker metric is there, labelled with its worker.
    assert set(_families(engine_exposition)) <= set(_families(supervisor_exposition))
    assert re.search(_COUNTED, supervisor_exposition, re.M)
    assert _promtool(promtool, "check", "metrics", stdin=supervisor_exposition).strip() == ""


# --- the dashboard --------------------------------------------------------------------------


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _query_panels(dashboard: dict) -> list[dict]:
    """Every panel with queries (rows included in collapsed rows' panels)."""
    panels = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            panels += panel.get("panels", [])
        else:
            panels.append(panel)
    return panels


# Grafana's variables, as a query sees them once Grafana has put values in.
_GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "${instance}": "node-1:9700",
    "$instance": "node-1:9700",
}


def _as_prometheus_sees_it(expr: str) -> str:
    for variable, value in _GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a Grafana variable the test does not know: {expr}"
    return expr


def test_dashboard_has_the_structure_grafana_needs():
    dashboard = _dashboard()
    assert dashboard["title"] and dashboard["uid"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    instance = variables["instance"]
    assert instance["type"] == "query" and instance["datasource"]["uid"] == "${datasource}"
    assert instance["multi"] and instance["includeAll"]
    assert re.fullmatch(r"label_values\(\w+, *instance\)", instance["query"]["query"])

    everything = dashboard["panels"] + [
        p for row in dashboard["panels"] if row["type"] == "row" for p in row.get("panels", [])
    ]
    ids = [p["id"] for p in everything]
    assert all(isinstance(i, int) and i > 0 for i in ids) and len(ids) == len(set(ids))
    cells: dict[tuple[int, int], int] = {}
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert set(pos) == {"h", "w", "x", "y"}, panel["title"]
        assert pos["h"] > 0 and pos["w"] > 0 and pos["x"] >= 0 and pos["x"] + pos["w"] <= 24
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps panel {cells[x, y]}"
                cells[x, y] = panel["id"]
    rows = [p for p in dashboard["panels"] if p["type"] == "row"]
    assert any(row.get("repeat") == "instance" for row in rows), "no row per node"

    panels = _query_panels(dashboard)
    assert len(panels) >= 20
    for panel in panels:
        assert panel["title"] and panel["type"] in ("timeseries", "stat", "table", "gauge")
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for t in panel["targets"]:
            assert t["expr"].strip() and t["datasource"]["uid"] == "${datasource}"
    titles = " ".join(p["title"] for p in panels).lower()
    for subject in ("verdict", "latency", "batch", "busy", "in flight", "trust list"):
        assert subject in titles, subject
    for subject in ("revocation", "poll", "cpu", "replay-store", "event-loop"):
        assert subject in titles, subject


def test_every_dashboard_query_parses(promtool, tmp_path):
    rules = []
    for panel in _query_panels(_dashboard()):
        for t in panel["targets"]:
            expr = _as_prometheus_sees_it(t["expr"])
            rules.append({"record": f"dashboard:panel_{panel['id']}_{t['refId']}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"  # JSON is YAML
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}, indent=1))
    output = _promtool(promtool, "check", "rules", str(path))
    assert f"SUCCESS: {len(rules)} rules found" in output, output


# --- every metric named is exported --------------------------------------------------------


def _referenced() -> dict[str, set[str]]:
    """Metric name -> where the rules or the dashboard use it."""
    where: dict[str, set[str]] = {}
    for name, block in _alert_blocks().items():
        for expr in _exprs(block):
            for metric in metric_names(expr):
                where.setdefault(metric, set()).add(f"alert {name}")
    dashboard = _dashboard()
    for panel in _query_panels(dashboard):
        for t in panel["targets"]:
            for metric in metric_names(_as_prometheus_sees_it(t["expr"])):
                where.setdefault(metric, set()).add(f"panel {panel['title']!r}")
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            metric = re.fullmatch(r"label_values\((\w+),.*\)", query)
            assert metric is not None, query
            where.setdefault(metric.group(1), set()).add(f"variable {variable['name']}")
    return where


def test_rules_and_dashboard_name_only_exported_metrics(engine_exposition, supervisor_exposition):
    referenced = _referenced()
    assert len(_exprs(RULES.read_text())) == len(_alert_blocks())
    assert {"essc_verify_latency_seconds_bucket", "up", "process_cpu_seconds_total"} <= set(
        referenced
    )
    exported = _exported(engine_exposition) | _exported(supervisor_exposition) | {"up"}
    families = set(_families(engine_exposition)) | set(_families(supervisor_exposition))
    for family in NOT_YET_EXPOSED:
        assert family not in families, f"{family} is exported now: drop it from NOT_YET_EXPOSED"
    missing = {name: sorted(where) for name, where in referenced.items() if name not in exported}
    pending = {
        name
        for name in missing
        if any(name == f or name.startswith(f"{f}_") for f in NOT_YET_EXPOSED)
    }
    unknown = {name: where for name, where in missing.items() if name not in pending}
    assert unknown == {}, "metrics the engine does not export"
    if pending:
        pytest.xfail(
            "not exported yet: "
            + "; ".join(f"{f}: {what}" for f, what in NOT_YET_EXPOSED.items())
            + f" ({', '.join(sorted(pending))})"
        )
