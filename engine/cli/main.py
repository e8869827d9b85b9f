"""``python -m engine``: the engine's command line (every command has --help)."""

from __future__ import annotations

import argparse
import itertools
import pathlib
import sys
import time
from typing import Any

from engine import __version__
from engine.cli import replay_store, revocation, serve
from engine.cli.exit import CommandError, run_command


def _pki_init(args: argparse.Namespace) -> int:
    from engine.tools import pki

    created = pki.init(args.dir)
    t = created.trust_list
    print(
        f"created {args.dir}: root key, {len(t.issuers)} issuer keys, {len(t.channels)} channels, "
        f"revocation publisher key {created.publisher_key_path.name}, "
        f"trust list sequence {t.sequence} ({created.trust_list_path})"
    )
    print(
        f"root public key (pin this in the engine's configuration): {created.root_public_key.hex()}"
    )
    return 0


def _status_map(pairs: list[str], what: str) -> dict[str, Any]:
    from engine.formats.trustlist import Status

    out = {}
    for pair in pairs:
        name, _, status = pair.partition("=")
        try:
            out[name] = Status[status.upper()]
        except KeyError:
            raise CommandError(
                f"--{what}-status {pair!r}: expected ID=active|suspended|revoked"
            ) from None
    return out


def _pki_update(args: argparse.Namespace) -> int:
    from engine.tools import pki

    opened = pki.Pki.open(args.dir)
    trust = pki.update_trust_list(
        opened,
        issuer_status=_status_map(args.issuer_status, "issuer"),
        channel_status=_status_map(args.channel_status, "channel"),
        publisher_status=_status_map(args.publisher_status, "publisher"),
    )
    print(f"signed trust list sequence {trust.sequence} into {opened.trust_list_path}")
    return 0


def _issue(args: argparse.Namespace) -> int:
    from engine.tools import issuance, pki

    opened = pki.Pki.open(args.pki)
    start = time.perf_counter()
    n = issuance.issue_to_file(
        opened,
        args.count,
        args.out,
        validity_days=args.validity_days,
        rng_seed=args.seed,
        progress=not args.quiet,
    )
    print(f"issued {n} credentials into {args.out} in {time.perf_counter() - start:.1f} s")
    return 0


def _present(args: argparse.Namespace) -> int:
    from engine.formats import wallets
    from engine.formats.credentials import Purpose
    from engine.tools import holder

    wallet = None
    if args.index >= 0:
        wallet = next(itertools.islice(wallets.read(args.wallets), args.index, None), None)
    if wallet is None:
        raise CommandError(f"{args.wallets} has no wallet with index {args.index}")
    try:
        nonce = bytes.fromhex(args.nonce) if args.nonce else None
    except ValueError:
        nonce = b""
    if nonce is not None and len(nonce) != 16:
        raise CommandError("--nonce must be 32 hex characters (16 bytes)")
    data = holder.present(
        wallet.credential,
        wallet.holder_seed,
        timestamp_ms=args.time_ms,
        nonce=nonce,
        purpose=Purpose[args.purpose.upper().replace("-", "_")],
    )
    if args.out == "-":
        print(data.hex())
    else:
        pathlib.Path(args.out).write_bytes(data)
        print(f"wrote a {len(data)}-byte presentation to {args.out}")
    return 0


def _root_key(args: argparse.Namespace) -> bytes | None:
    from engine.formats import keys
    from engine.tools import pki

    if getattr(args, "root_key", None):
        return keys.parse_public_key(args.root_key, "--root-key")
    if getattr(args, "pki", None):
        return pki.Pki.open(args.pki).root_public_key
    return None


def _inspect(args: argparse.Namespace) -> int:
    from engine.tools import inspection

    root = _root_key(args)
    for path in args.files:
        print(inspection.to_json(inspection.describe_file(path, root)))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from engine.tools.pki import Pki
    from engine.verifier import Verifier

    opened = Pki.open(args.pki)
    batch = [pathlib.Path(p).read_bytes() for p in args.files]
    results = Verifier(opened.trust_list).verify(batch, args.now_ms)
    for path, r in zip(args.files, results):
        print(f"{path}: {r.verdict.name} ({int(r.verdict)}){': ' + r.reason if r.reason else ''}")
    return 0 if all(r.verdict == 0 for r in results) else 1


def _vectors(args: argparse.Namespace) -> int:
    from engine.tools import testvectors

    text = testvectors.dumps(args.set)
    if args.out == "-":
        sys.stdout.write(text)
    else:
        pathlib.Path(args.out).write_text(text)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from engine.tools import demo

    return 1 if demo.run(args.dir) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine",
        description="e-SSC verification engine: trust material, issuance, inspection, demo.",
    )
    parser.add_argument("--version", action="version", version=f"essc-engine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("pki", help="create or update demo trust material")
    psub = p.add_subparsers(dest="pki_command", required=True, metavar="SUBCOMMAND")
    q = psub.add_parser(
        "init",
        help="create a root key, 31 provincial issuer keys, a revocation publisher key, "
        "channels and a signed trust list",
        description="Create demo trust material in DIR: national root key, one issuer key per "
        "province-level region, the revocation publisher key (revocation-publisher.key, "
        "certified in the trust list), channels and a signed trust list. Private keys go to "
        "files with mode 0600 and are never printed.",
    )
    q.add_argument("dir", help="directory to create (must not already hold a PKI)")
    q.set_defaults(func=_pki_init)
    q = psub.add_parser(
        "update",
        help="sign the next trust list with changed issuer or channel statuses",
        description="Sign and install the next trust list (sequence + 1).",
    )
    q.add_argument("dir", help="PKI directory")
    q.add_argument(
        "--issuer-status",
        action="append",
        default=[],
        metavar="KEY_ID=STATUS",
        help="active, suspended or revoked (repeatable)",
    )
    q.add_argument(
        "--channel-status",
        action="append",
        default=[],
        metavar="CHANNEL=STATUS",
        help="active, suspended or revoked (repeatable)",
    )
    q.add_argument(
        "--publisher-status",
        action="append",
        default=[],
        metavar="KEY_ID=STATUS",
        help="a revocation publisher key: active, suspended or revoked (repeatable)",
    )
    q.set_defaults(func=_pki_update)

    p = sub.add_parser(
        "issue",
        help="issue credentials for N synthetic cardholders into a wallet file",
        description="Issue credentials for N synthetic cardholders (realistic region, card "
        "number and channel mix) with their holder key pairs, into a wallet file (mode 0600).",
    )
    p.add_argument("--pki", required=True, help="PKI directory (holds the issuer keys)")
    p.add_argument("--count", type=int, required=True, help="number of credentials")
    p.add_argument("--out", required=True, help="wallet file to write")
    p.add_argument("--validity-days", type=int, default=365, help="credential lifetime (365)")
    p.add_argument("--seed", type=int, help="make the population reproducible (tests)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_issue)

    p = sub.add_parser(
        "present",
        help="make a presentation (QR payload) from a wallet",
        description="Make a presentation of wallet INDEX of a wallet file, signed by its holder "
        "key. Time, nonce and purpose can be set for tests.",
    )
    p.add_argument("--wallets", required=True, help="wallet file written by `issue`")
    p.add_argument("--index", type=int, default=0, help="which wallet (0)")
    p.add_argument("--time-ms", type=int, help="timestamp, unix ms (default: now)")
    p.add_argument("--nonce", help="16-byte nonce as hex (default: random)")
    p.add_argument(
        "--purpose",
        default="payment",
        choices=["identity", "medical-settlement", "payment", "benefit-collection"],
    )
    p.add_argument("--out", default="-", help="file to write, or - for hex on stdout (default)")
    p.set_defaults(func=_present)

    p = sub.add_parser(
        "inspect",
        help="decode and pretty-print any e-SSC file as JSON",
        description="Decode trust lists, credentials, presentations, wallet files and key "
        "files; print JSON. Private keys are redacted.",
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--root-key", help="root public key (hex) to check trust-list signatures")
    p.add_argument("--pki", help="take the root public key from this PKI directory")
    p.set_defaults(func=_inspect)

    p = sub.add_parser(
        "verify",
        help="verify presentation files in process and print their verdicts",
        description="Verify presentation files against a PKI directory's trust list (no "
        "revocation data); exit 0 only if all are OK.",
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--pki", required=True, help="PKI directory")
    p.add_argument("--now-ms", type=int, help="verification time, unix ms (default: now)")
    p.set_defaults(func=_verify)

    p = sub.add_parser(
        "vectors",
        help="write the format test vectors (JSON)",
        description="Write the fixed-key test vectors of docs/FORMATS.md.",
    )
    p.add_argument("--out", default="-", help="file, or - for stdout")
    p.add_argument(
        "--set",
        type=int,
        choices=[1, 2],
        default=1,
        help="1: credentials, presentations, trust list v1 (essc_v1.json); 2: trust list "
        "v2 and signed revocation files (essc_v2.json)",
    )
    p.set_defaults(func=_vectors)

    p = sub.add_parser(
        "demo",
        help="in-process demo: every verdict class in one batch",
        description="Create demo trust material if absent, issue a few credentials, verify a "
        "batch with a presentation of every verdict class and print a table.",
    )
    p.add_argument("--dir", default="demo", help="demo directory (default: demo)")
    p.set_defaults(func=_demo)

    revocation.register(sub)
    replay_store.register(sub)
    serve.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args.func, args)
