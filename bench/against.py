"""`python -m bench.against REF`: this tree against another commit, side by side.

For a change that must not cost speed (a restructuring, a refactor), the figure that
counts is the ratio of this tree to the tree before it, on the same machine, in the
same minutes.  Each tree is measured with its own benchmark code and its own native
build (the other commit is checked out under var/bench/trees/ and built there with
this environment's compiler and Python), in alternating rounds (A B B A ...), so a
drift in machine load falls on both alike.  The median over rounds of each figure is
compared; a ratio above 1 favours this tree.

    python -m bench.against HEAD~5 --rounds 4 --compare server --quick
    python -m bench.against main --suite bench/test_pipeline_bench.py
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
TREES = ROOT / "var" / "bench" / "trees"


def _git(*args: str, cwd: pathlib.Path = ROOT) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def checkout(ref: str) -> pathlib.Path:
    """A built checkout of ``ref`` (made once per commit, reused after)."""
    sha = _git("rev-parse", "--verify", f"{ref}^{{commit}}")
    tree = TREES / sha[:12]
    if not (tree / ".git").exists():
        TREES.mkdir(parents=True, exist_ok=True)
        _git("worktree", "add", "--detach", "--force", str(tree), sha)
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=tree,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return tree


def _env(tree: pathlib.Path) -> dict[str, str]:
    # PYTHONPATH comes before the editable install's finder: `engine` is this tree's.
    return {**os.environ, "PYTHONPATH": str(tree)}


def _compare_figures(tree: pathlib.Path, topics: str, quick: bool) -> dict[str, tuple[float, bool]]:
    """Both figures of every bench.compare row: {label: (value, higher_is_better)}."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, "-m", "bench.compare", "--only", topics, "--json", out.name]
        subprocess.run(
            cmd + (["--quick"] if quick else []),
            cwd=tree,
            env=_env(tree),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        rows = json.loads(pathlib.Path(out.name).read_text())["rows"]
    figures = {}
    for r in rows:
        # Labels quote measured rates ("p99 at 12,342 req/s"): those vary run to run.
        what = re.sub(r"\d[\d,.]*", "N", r["what"])
        higher = r["higher_is_better"]
        figures[f"{r['topic']}: {what} ({r['subject']}, {r['unit']})"] = (r["subject_rate"], higher)
        # The baseline's figure too: code both trees share, so its ratio shows the noise.
        figures[f"{r['topic']}: {what} ({r['baseline']}, {r['unit']})"] = (
            r["baseline_rate"],
            higher,
        )
    return figures


def _suite_figures(tree: pathlib.Path, suite: str, quick: bool) -> dict[str, tuple[float, bool]]:
    """Mean seconds of every pytest-benchmark case of ``suite`` (lower is better)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            suite,
            f"--benchmark-json={out.name}",
        ]
        env = _env(tree) | ({"ESSC_BENCH_QUICK": "1"} if quick else {})
        subprocess.run(cmd, cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
        doc = json.loads(pathlib.Path(out.name).read_text())
    return {
        f"{suite}::{b['name']} (mean s)": (b["stats"]["mean"], False) for b in doc["benchmarks"]
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.against", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("ref", help="the commit to compare against (e.g. HEAD~3, a tag)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per tree (default 3)")
    parser.add_argument("--compare", metavar="TOPICS", help="bench.compare topics, comma-separated")
    parser.add_argument("--suite", action="append", default=[], help="a pytest-benchmark file")
    parser.add_argument("--quick", action="store_true", help="quick sizes (as make bench-quick)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if not args.compare and not args.suite:
        parser.error("nothing to run: give --compare TOPICS and/or --suite FILE")
    trees = {"this tree": ROOT, args.ref: checkout(args.ref)}
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    better: dict[str, bool] = {}
    order = list(trees)
    for r in range(args.rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            figures: dict[str, tuple[float, bool]] = {}
            if args.compare:
                figures |= _compare_figures(trees[name], args.compare, args.quick)
            for suite in args.suite:
                figures |= _suite_figures(trees[name], suite, args.quick)
            for key, (value, higher) in figures.items():
                samples[name].setdefault(key, []).append(value)
                better[key] = higher
            print(f"round {r + 1}/{args.rounds}: {name} measured", file=sys.stderr, flush=True)
    head, base = samples["this tree"], samples[args.ref]
    results = []
    for key in sorted(set(head) & set(base)):
        h, b = statistics.median(head[key]), statistics.median(base[key])
        ratio = (h / b if better[key] else b / h) if h and b else float("nan")
        results.append({"figure": key, "this_tree": h, "base": b, "ratio": ratio})
        print(f"{ratio:6.3f}  {key}: {h:.6g} here, {b:.6g} at {args.ref}")
    only = sorted(set(head) ^ set(base))
    if only:
        print(f"(measured in one tree only: {len(only)} figures)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"ref": args.ref, "rounds": args.rounds, "figures": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
