"""`python -m bench.compare`: every side-by-side comparison, one table of ratios."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

from bench.harness import Row, format_table, machine

# Each topic is a module bench/compare_<topic>.py with run(quick: bool) -> list[Row].
TOPICS: list[str] = ["sigverify", "revocation", "server", "overload", "fleet", "distribution"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compare",
        description="Run the side-by-side benchmarks and print ratios against baselines "
        "measured in the same run.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, few rounds (CI)")
    parser.add_argument(
        "--only", default="", help=f"comma-separated topics (default all: {', '.join(TOPICS)})"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    topics = [t for t in args.only.split(",") if t] or TOPICS
    unknown = sorted(set(topics) - set(TOPICS))
    if unknown:
        parser.error(f"unknown topic(s): {', '.join(unknown)}")
    info = machine()
    print(" | ".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    rows: list[Row] = []
    elapsed: dict[str, float] = {}
    for topic in topics:
        module = importlib.import_module(f"bench.compare_{topic}")
        start = time.monotonic()
        rows += module.run(args.quick)
        elapsed[topic] = round(time.monotonic() - start, 1)
        print(f"{topic}: done in {elapsed[topic]:.0f} s", file=sys.stderr, flush=True)
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "machine": info,
                    "quick": args.quick,
                    "elapsed_s": elapsed,
                    "rows": [dict(vars(r), ratio=r.ratio) for r in rows],
                },
                f,
                indent=2,
            )
    invalid = [f"{r.topic} / {r.what}" for r in rows if not r.valid]
    if invalid:
        # Timings are never asserted, but a comparison with wrong answers is no comparison.
        print(f"invalid measurements: {'; '.join(invalid)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
