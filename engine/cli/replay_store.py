"""`python -m engine replay-store`: the fleet's shared replay store (Redis or a Cluster).

    python -m engine replay-store init   --redis-url redis://10.0.0.5:6379/0
    python -m engine replay-store status --cluster-node 10.0.0.5:7000 --cluster-node ...

``init`` marks a new, empty store as new (a marker key on every master), so that the
nodes do not take it for a store that lost its data (docs/OPERATIONS.md, "Shared replay
store"); it refuses a store that already has a marker or holds nonces.  ``status``
reads (and never writes) every master: version, run id, eviction policy, marker, key
count; exit status 1 when a node could not use it.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from engine.cli.exit import CommandError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "replay-store",
        help="initialise or inspect the fleet's shared replay store (Redis)",
        description="The shared one-time-nonce store of a fleet (replay.redis_url or "
        "replay.redis_cluster_nodes).",
    )
    sub = p.add_subparsers(dest="replay_store_command", required=True, metavar="SUBCOMMAND")
    for name, text in (
        ("init", "mark a new, empty store as new (before the first node uses it)"),
        ("status", "reach every master and print the store's state as JSON"),
    ):
        q = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        where = q.add_mutually_exclusive_group(required=True)
        where.add_argument(
            "--redis-url", metavar="URL", help="redis://HOST:PORT/DB, rediss://, unix://"
        )
        where.add_argument(
            "--cluster-node",
            action="append",
            metavar="HOST:PORT",
            help="a Redis Cluster seed node (repeatable)",
        )
        q.add_argument("--timeout-ms", type=float, default=1000.0, help="per round trip (1000)")
        q.set_defaults(func=_init if name == "init" else _status)


def _store_call(fn: Any, args: argparse.Namespace) -> Any:
    """``fn`` on the store the arguments name; its failures as the command's errors."""
    from engine.redis_replay.resp import StoreFailure

    try:
        return fn(
            redis_url=args.redis_url or "",
            seeds=args.cluster_node or (),
            timeout_ms=args.timeout_ms,
        )
    except (StoreFailure, ValueError) as e:
        raise CommandError(str(e)) from None


def _init(args: argparse.Namespace) -> int:
    from engine.redis_replay.store import init_store

    for address in _store_call(init_store, args):
        print(f"marked {address} as a new replay store")
    return 0


def _status(args: argparse.Namespace) -> int:
    from engine.redis_replay.store import inspect_store

    status = _store_call(inspect_store, args)
    status["checked_at_ms"] = int(time.time() * 1000)
    print(json.dumps(status, indent=2))
    return 0 if status["usable"] else 1
