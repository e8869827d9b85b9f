"""``python -m engine revocation``: build, extend, inspect and query revocation files."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from engine.cli.exit import CommandError
from engine.revocation.source import CARD

if TYPE_CHECKING:
    from engine.formats.trustlist import PublisherKey
    from engine.revocation.build import BuildResult, Signer

EXAMPLES = """\
input text: one `card <card-number>` or `credential <serial-hex>` per line; `#` starts a
comment. A wallet file written by `python -m engine issue` is recognised by itself.

examples:
  python -m engine revocation build --out var/rev.snap --sequence 7 \
      --signing-key pki/revocation-publisher.key revoked.txt
  python -m engine revocation delta --base var/rev.snap --out var/rev-8.delta --add new.txt \
      --signing-key pki/revocation-publisher.key
  python -m engine revocation inspect --pki pki var/rev.snap var/rev-8.delta
  python -m engine revocation check var/rev.snap --delta var/rev-8.delta card:G12345678
  python -m engine revocation publish --dir pub --signing-key pki/revocation-publisher.key \
      --snapshot revoked.txt
  python -m engine revocation publish --dir pub --signing-key pki/revocation-publisher.key \
      --add new.txt --remove reinstated.txt
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


def _signer(args: argparse.Namespace, required: bool = False) -> Signer | None:
    from engine.revocation.build import Signer

    if not args.signing_key:
        if required:
            raise CommandError("--signing-key is required")
        return None
    return Signer.from_file(args.signing_key, args.expires_in)


def _signed_line(r: BuildResult) -> str:
    if r.manifest is None:
        return "unsigned (format version 1)"
    m = r.manifest
    return (
        f"signed by {m.publisher_key_id}, expires "
        f"{time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(m.expires_at))}"
    )


def _publishers(args: argparse.Namespace) -> Mapping[str, PublisherKey] | None:
    """The publisher keys of --pki's or --trust-list's trust list (None: neither given)."""
    from engine.formats.keys import parse_public_key
    from engine.formats.trustlist import TrustList
    from engine.tools.pki import Pki

    if args.pki:
        return Pki.open(args.pki).trust_list.publishers
    if args.trust_list:
        if not args.root_key:
            raise CommandError("--trust-list needs --root-key (the pinned root public key)")
        root = parse_public_key(args.root_key, "--root-key")
        return TrustList.load(args.trust_list, root).publishers
    return None


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
        signer=_signer(args),
    )
    _report_skipped(r)
    h = r.header
    print(
        f"wrote {args.out}: snapshot {h.sequence}, {h.cards} cards and {h.credentials} "
        f"credentials ({r.read - h.entries} duplicates dropped), {h.file_size / 2**20:.1f} MiB, "
        f"{_signed_line(r)}, in {time.perf_counter() - start:.1f} s"
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
        signer=_signer(args),
    )
    _report_skipped(r)
    h = r.header
    print(
        f"wrote {args.out}: delta {h.sequence} on snapshot {h.base_sequence}, "
        f"adds {h.cards} cards and {h.credentials} credentials, "
        f"removes {h.removed_cards} cards and {h.removed_credentials} credentials, "
        f"{_signed_line(r)}"
    )
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from engine.tools.inspection import describe_revocation

    publishers = _publishers(args)
    for path in args.files:
        doc = describe_revocation(path, publishers)
        if args.json:
            print(json.dumps({"path": os.fspath(path), **doc}, indent=2))
            continue
        print(path)
        _print_fields(doc, "  ")
    return 0


def _print_fields(doc: dict[str, object], indent: str) -> None:
    for key, value in doc.items():
        if isinstance(value, dict):
            print(f"{indent}{key.replace('_', ' ')}:")
            _print_fields(value, indent + "  ")
            continue
        if isinstance(value, float):
            value = f"{value:.6g}"
        elif isinstance(value, int) and key.endswith("bytes"):
            value = f"{value:,} ({value / 2**20:.1f} MiB)"
        print(f"{indent}{key.replace('_', ' ')}: {value}")


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


def _sign(args: argparse.Namespace) -> int:
    from engine.revocation.build import sign_file

    signer = _signer(args, required=True)
    assert signer is not None
    r = sign_file(args.file, args.out, signer, base=args.base)
    h = r.header
    print(f"wrote {args.out}: {h.kind} {h.sequence}, {_signed_line(r)}")
    return 0


def _publish(args: argparse.Namespace) -> int:
    from engine.revocation.publication import publish

    if args.snapshot and (args.add or args.remove):
        raise CommandError("--snapshot publishes a snapshot; --add/--remove a delta: not both")
    signer = _signer(args, required=True)
    assert signer is not None
    done = publish(
        args.dir,
        signer,
        snapshot=args.snapshot or None,
        add=args.add,
        remove=args.remove,
        fpr=args.fpr,
        by=args.by,
        progress=not args.quiet,
    )
    e, index = done.entry, done.index
    print(
        f"published {e.kind} {e.sequence} ({e.name}, {e.size:,} bytes) in {args.dir}: the index "
        f"names snapshot {index.snapshot.sequence} and {len(index.deltas)} delta(s)"
        + (f"; removed {', '.join(done.removed)}" if done.removed else "")
    )
    return 0


def _add_signing_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--signing-key",
        metavar="FILE",
        help="revocation publisher key file (pki init writes revocation-publisher.key); "
        "without it the file is unsigned (format version 1), which engines refuse unless "
        "revocation.require_signature = false",
    )
    p.add_argument(
        "--expires-in",
        type=int,
        default=2 * 86400,
        metavar="SECONDS",
        help="signed data is stale this long after its creation, whatever the engine's "
        "revocation.max_age_s (default 172800: two days)",
    )


def _add_trust_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pki", metavar="DIR", help="check signatures against this PKI's trust list")
    p.add_argument("--trust-list", metavar="FILE", help="... or against this trust list")
    p.add_argument(
        "--root-key", metavar="HEX", help="the root public key --trust-list is checked with"
    )


def _add_delta_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--add", action="append", default=[], metavar="INPUT", help="ids to revoke (repeatable)"
    )
    p.add_argument(
        "--remove",
        action="append",
        default=[],
        metavar="INPUT",
        help="ids to reinstate (repeatable)",
    )


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
    _add_signing_options(q)
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
    _add_delta_inputs(q)
    q.add_argument(
        "--sequence", type=int, help="delta sequence number (default: the snapshot's + 1)"
    )
    _add_input_options(q)
    _add_signing_options(q)
    q.set_defaults(func=_delta)

    q = sub.add_parser(
        "inspect",
        help="check revocation files and describe them",
        description="Check each file completely (header, layout, checksum) and print its "
        "counts, sizes, sequence, creation time, Bloom bits per entry and hash.",
    )
    q.add_argument("files", nargs="+", metavar="FILE")
    q.add_argument("--json", action="store_true", help="print JSON")
    _add_trust_options(q)
    q.set_defaults(func=_inspect)

    q = sub.add_parser(
        "sign",
        help="write a signed copy of an unsigned (format version 1) file",
        description="Write a signed copy of FILE (same data, header and creation time, with "
        "a manifest): for moving files built without a key to signed data. A delta needs "
        "--base, the signed copy of its snapshot.",
    )
    q.add_argument("file", metavar="FILE", help="the unsigned snapshot or delta")
    q.add_argument("--out", required=True, help="signed file to write (atomically)")
    q.add_argument("--base", metavar="SNAPSHOT", help="a delta's signed snapshot")
    _add_signing_options(q)
    q.set_defaults(func=_sign)

    q = sub.add_parser(
        "publish",
        help="the national platform's side: publish the next snapshot or delta, signed, "
        "with the signed index",
        description="Build the next file (a snapshot of --snapshot's inputs, else a delta "
        "on the current snapshot with --add/--remove; neither: an empty delta, saying the "
        "data is still current), sign it, write it into the publication directory DIR and "
        "replace DIR/index.essc last. Any static web server can serve DIR; engines poll "
        "it (revocation.source_url). Sequences follow the index by themselves.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("--dir", required=True, help="the publication directory")
    q.add_argument(
        "--snapshot",
        action="append",
        default=[],
        metavar="INPUT",
        help="publish a snapshot of these ids (repeatable)",
    )
    _add_delta_inputs(q)
    q.add_argument(
        "--fpr", type=float, default=0.01, help="a snapshot's Bloom false-positive rate (0.01)"
    )
    q.add_argument(
        "--by",
        choices=["credential", "card"],
        default="credential",
        help="what a wallet file's credentials revoke: their serial (default) or their card",
    )
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_signing_options(q)
    q.set_defaults(func=_publish)

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
