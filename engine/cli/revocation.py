"""``python -m engine revocation``: build, extend, inspect and query revocation files."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import TYPE_CHECKING

from engine.revocation.source import CARD

if TYPE_CHECKING:
    from engine.revocation.build import BuildResult

EXAMPLES = """\
input text: one `card <card-number>` or `credential <serial-hex>` per line; `#` starts a
comment. A wallet file written by `python -m engine issue` is recognised by itself.

examples:
  python -m engine revocation build --out var/rev.snap --sequence 7 revoked.txt
  python -m engine revocation delta --base var/rev.snap --out var/rev-8.delta --add new.txt
  python -m engine revocation check var/rev.snap --delta var/rev-8.delta card:G12345678
"""


def _seed(text: str) -> int:
    value = int(text, 0)
    if not 0 <= value < 1 << 64:
        raise ValueError("the seed is a 64-bit unsigned number")
    return value


def _report_skipped(result: BuildResult) -> None:
    if result.bad.count:
        print(
            f"skipped {result.bad.count} malformed line(s):\n{result.bad.describe()}",
            file=sys.stderr,
        )


def _build(args: argparse.Namespace) -> int:
    from engine.revocation.build import build_snapshot

    start = time.perf_counter()
    r = build_snapshot(
        args.out,
        args.inputs,
        fpr=args.fpr,
        sequence=args.sequence,
        created_at=args.created_at,
        seed=args.seed,
        by=args.by,
        skip_bad=args.skip_bad,
        progress=not args.quiet,
    )
    _report_skipped(r)
    h = r.header
    print(
        f"wrote {args.out}: snapshot {h.sequence}, {h.cards} cards and {h.credentials} "
        f"credentials ({r.read - h.entries} duplicates dropped), {h.file_size / 2**20:.1f} MiB, "
        f"in {time.perf_counter() - start:.1f} s"
    )
    return 0


def _delta(args: argparse.Namespace) -> int:
    from engine.revocation.build import build_delta

    r = build_delta(
        args.out,
        args.base,
        add=args.add,
        remove=args.remove,
        sequence=args.sequence,
        created_at=args.created_at,
        by=args.by,
        skip_bad=args.skip_bad,
        progress=not args.quiet,
    )
    _report_skipped(r)
    h = r.header
    print(
        f"wrote {args.out}: delta {h.sequence} on snapshot {h.base_sequence}, "
        f"adds {h.cards} cards and {h.credentials} credentials, "
        f"removes {h.removed_cards} cards and {h.removed_credentials} credentials"
    )
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from engine.tools.inspection import describe_revocation

    for path in args.files:
        doc = describe_revocation(path)
        if args.json:
            print(json.dumps({"path": os.fspath(path), **doc}, indent=2))
            continue
        print(path)
        for key, value in doc.items():
            if isinstance(value, float):
                value = f"{value:.6g}"
            elif isinstance(value, int) and key.endswith("bytes"):
                value = f"{value:,} ({value / 2**20:.1f} MiB)"
            print(f"  {key.replace('_', ' ')}: {value}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from engine.revocation.input import parse_id
    from engine.revocation.store import RevocationStore

    queries = [parse_id(text) for text in args.ids]
    store = RevocationStore(args.file, args.delta)
    for text, (kind, ident) in zip(args.ids, queries):
        revoked = store.is_revoked(kind, ident)
        print(f"{text}: {'revoked' if revoked else 'not revoked'}")
    print(
        f"(sequence {store.sequence}, data from "
        f"{time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(store.created_at))})",
        file=sys.stderr,
    )
    return 0


def _add_input_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--by",
        choices=["credential", "card"],
        default="credential",
        help="what a wallet file's credentials revoke: their serial (default) or their card",
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip malformed input lines (they are listed) instead of stopping",
    )
    p.add_argument(
        "--created-at",
        type=int,
        metavar="UNIX",
        help="creation time to record, unix seconds (default: now)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "revocation",
        help="build, extend, inspect and query revocation snapshots and deltas",
        description="Revocation files: snapshots (Bloom filter + exact tier) and deltas "
        "(added and reinstated ids), in the format of docs/FORMATS.md section 8.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="revocation_command", required=True, metavar="SUBCOMMAND")

    q = sub.add_parser(
        "build",
        help="build a snapshot from id lists and wallet files",
        description="Build a snapshot of every id in the inputs (duplicates are dropped). "
        "Input is streamed; memory peaks at about 35 bytes per id.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("--out", required=True, help="snapshot file to write (atomically)")
    q.add_argument(
        "--fpr", type=float, default=0.01, help="Bloom filter false-positive rate (0.01)"
    )
    q.add_argument("--sequence", type=int, default=1, help="snapshot sequence number (1)")
    q.add_argument("--seed", type=_seed, help="hash seed, for reproducible files (default: random)")
    _add_input_options(q)
    q.add_argument("inputs", nargs="+", metavar="INPUT", help="text list, wallet file, or -")
    q.set_defaults(func=_build)

    q = sub.add_parser(
        "delta",
        help="write a delta (added and reinstated ids) on top of a snapshot",
        description="Write a delta for snapshot BASE: ids from --add become revoked, ids "
        "from --remove are reinstated. Deltas for one snapshot are applied in sequence "
        "order, later ones winning.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("--base", required=True, metavar="SNAPSHOT", help="the snapshot it extends")
    q.add_argument("--out", required=True, help="delta file to write (atomically)")
    q.add_argument(
        "--add", action="append", default=[], metavar="INPUT", help="ids to revoke (repeatable)"
    )
    q.add_argument(
        "--remove",
        action="append",
        default=[],
        metavar="INPUT",
        help="ids to reinstate (repeatable)",
    )
    q.add_argument(
        "--sequence", type=int, help="delta sequence number (default: the snapshot's + 1)"
    )
    _add_input_options(q)
    q.set_defaults(func=_delta)

    q = sub.add_parser(
        "inspect",
        help="check revocation files and describe them",
        description="Check each file completely (header, layout, checksum) and print its "
        "counts, sizes, sequence, creation time, Bloom bits per entry and hash.",
    )
    q.add_argument("files", nargs="+", metavar="FILE")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=_inspect)

    q = sub.add_parser(
        "check",
        help="look ids up in a snapshot (and deltas)",
        description="Print whether each ID is revoked. IDs are card:NUMBER or "
        "credential:HEX (the 16-byte serial as 32 hex digits).",
    )
    q.add_argument("file", metavar="FILE", help="snapshot")
    q.add_argument(
        "--delta", action="append", default=[], metavar="FILE", help="delta (repeatable)"
    )
    q.add_argument("ids", nargs="+", metavar="ID", help=f"{CARD}:NUMBER or credential:HEX")
    q.set_defaults(func=_check)
