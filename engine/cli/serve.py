"""``python -m engine serve`` and ``python -m engine client``: run the server, talk to it."""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import ssl
import sys
import time
from typing import TYPE_CHECKING

from engine.cli.exit import CommandError
from engine.revocation import CARD, CREDENTIAL
from engine.wire import protocol as proto

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.server.config import Config
    from engine.wire.pool import Endpoint

# Flags that set one configuration value each: (flag, setting, type, help).
_SERVE_FLAGS = (
    ("--host", "server.host", str, "address to listen on (127.0.0.1)"),
    ("--port", "server.port", int, "port to listen on (7700; 0: any free port)"),
    ("--metrics-port", "metrics.port", int, "Prometheus port (9700; 0: off)"),
    ("--trust-list", "trust.trust_list", str, "signed trust list file"),
    ("--root-key", "trust.root_public_key", str, "pinned root public key, 64 hex"),
    ("--revocation", "revocation.snapshot", str, "revocation snapshot file"),
    ("--max-batch", "batching.max_batch", int, "presentations per native batch (128)"),
    ("--latency-budget-ms", "batching.latency_budget_ms", float, "batching wait bound (0: none)"),
    ("--workers", "batching.workers", int, "batches verified at once (0: one per core)"),
    (
        "--processes",
        "server.processes",
        int,
        "serving processes sharing the port under a supervisor (1: none; 0: one per core)",
    ),
    ("--log-level", "log.level", str, "debug, info, warning or error (info)"),
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the verification server",
        description="Serve the verification protocol (docs/PROTOCOL.md). Settings come from "
        "defaults, then --config FILE (TOML), then ESSC_SECTION_KEY environment variables, "
        "then flags; docs/OPERATIONS.md lists them all. SIGHUP reloads the trust list and "
        "revocation data; SIGTERM or SIGINT drains and exits 0. With --processes N a "
        "supervisor runs N serving processes on one port, restarts any that dies and "
        "forwards these signals to them all.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
    p.add_argument(
        "--demo",
        metavar="DIR",
        help="serve the demo trust material in DIR, creating it (and DIR/engine.toml) if absent",
    )
    for flag, setting, kind, text in _SERVE_FLAGS:
        p.add_argument(flag, dest=setting, type=kind, help=f"{text} [{setting}]")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="any other setting (repeatable)",
    )
    p.add_argument("--check", action="store_true", help="validate the configuration and exit")
    p.add_argument(
        "--allow-revocation-rollback",
        action="store_true",
        help="load revocation data older than the rollback state records, this start only "
        "(the state then records the data loaded) [revocation.allow_rollback]",
    )
    p.set_defaults(func=_serve)

    p = sub.add_parser(
        "fleet",
        help="run a fleet on this machine: Redis, three engine nodes, HAProxy (make fleet)",
        description="Run, on loopback, the demo fleet of docs/DEPLOYMENT.md: a Redis as "
        "the shared replay store (no persistence, noeviction), three engine nodes on "
        "127.0.0.1:7701-7703 (agents 7711-7713, metrics 9701-9703) sharing it, and "
        "HAProxy with deploy/haproxy.cfg on 127.0.0.1:7700 in front. Ctrl-C stops it "
        "all (the nodes drain). redis-server and haproxy come from Debian packages "
        "(scripts/require-packages.sh).",
    )
    p.add_argument(
        "--demo",
        metavar="DIR",
        default="demo",
        help="the demo trust material (created if absent; default demo)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="a setting for every node (repeatable)",
    )
    p.set_defaults(func=_fleet)

    p = sub.add_parser(
        "client",
        help="send requests to running servers",
        description="A client for trying and checking servers, through the FleetClient a "
        "payment network embeds (engine/wire/pool.py): requests go round-robin over the "
        "endpoints; BUSY answers, lost connections and silent servers are retried on "
        "another endpoint with back-off, within the deadline. A presentation without a "
        "verdict by then is reported BUSY with the reason. Exit status: 0 all OK, 1 some "
        "presentation not OK, 2 no server reachable or a bad argument.",
    )
    p.add_argument(
        "--endpoint",
        "--target",
        dest="endpoints",
        action="append",
        metavar="HOST:PORT",
        help="a server (repeatable, or a comma list; default 127.0.0.1:7700)",
    )
    p.add_argument(
        "--connections", type=int, default=1, metavar="N", help="connections per endpoint (1)"
    )
    p.add_argument(
        "--deadline-ms",
        type=float,
        default=2000.0,
        metavar="MS",
        help="time for each request, retries included (2000)",
    )
    p.add_argument(
        "--retries", type=int, default=6, metavar="N", help="retries per request at most (6)"
    )
    p.add_argument(
        "--tls-ca",
        metavar="FILE",
        help="speak TLS, trusting the servers' certificates issued by this PEM CA bundle",
    )
    p.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="client certificate chain (PEM) for mutual TLS; its key too unless --tls-key",
    )
    p.add_argument("--tls-key", metavar="FILE", help="the client certificate's private key (PEM)")
    csub = p.add_subparsers(dest="client_command", required=True, metavar="REQUEST")
    q = csub.add_parser(
        "ping", help="ping a server (any endpoint)", description="Send a ping to an endpoint."
    )
    q.set_defaults(func=_client, what="ping")
    q = csub.add_parser(
        "status",
        help="print a server's status (any endpoint)",
        description="Print the status of an endpoint.",
    )
    q.set_defaults(func=_client, what="status")
    q = csub.add_parser(
        "verify",
        help="verify presentation files",
        description="Verify presentation files as one verify_batch request. FILE - reads "
        "presentations from stdin, one hex string a line (as `python -m engine present` "
        "prints them).",
    )
    q.add_argument("files", nargs="+", metavar="FILE")
    q.set_defaults(func=_client, what="verify")
    q = csub.add_parser(
        "try",
        help="make fresh presentations from a wallet file and verify them",
        description="Make COUNT fresh presentations from a wallet file (python -m engine "
        "issue) and verify them as one verify_batch request.",
    )
    q.add_argument("--wallets", required=True, help="wallet file")
    q.add_argument("--count", type=int, default=5, help="presentations (5)")
    q.set_defaults(func=_client, what="try")
    q = csub.add_parser(
        "revocation-check",
        help="ask whether ids are revoked",
        description="IDs as card:<card-number> or credential:<serial-hex>.",
    )
    q.add_argument("ids", nargs="+", metavar="ID")
    q.set_defaults(func=_client, what="revocation-check")


def _serve(args: argparse.Namespace) -> int:
    from engine.server import config, logs, server

    path = args.config
    if args.demo:
        from engine.tools import demo

        path = str(demo.prepare_serving(pathlib.Path(args.demo)))
        _stop_progress_monitor()
    overrides = []
    for _, setting, _, _ in _SERVE_FLAGS:
        value = getattr(args, setting)
        if value is not None:
            overrides.append((setting, str(value)))
    if args.allow_revocation_rollback:
        overrides.append(("revocation.allow_rollback", "true"))
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise CommandError(f"--set {item!r}: expected SECTION.KEY=VALUE")
        overrides.append((key, value))
    cfg = config.load(path, overrides=overrides).validate()
    if args.check:
        server.Server(cfg)  # opens and verifies every data file
        print("configuration OK")
        return 0
    logs.setup(cfg.log.level)
    announce = _demo_announcement(cfg, args.demo) if args.demo else None
    if cfg.server.processes != 1:
        from engine.server import supervisor

        return supervisor.supervise(cfg, ready=announce)
    if announce is None:
        return server.run(cfg)
    shown = announce
    return server.run(cfg, ready=lambda srv: shown(srv.port, srv.metrics_port))


def _fleet(args: argparse.Namespace) -> int:
    import signal
    import threading

    from engine.tools import demo
    from engine.tools.fleet import Fleet, FleetError, FleetLayout

    directory = pathlib.Path(args.demo)
    config = demo.prepare_serving(directory)
    layout = FleetLayout()
    fleet = Fleet(config, layout, directory / "fleet", settings=args.set)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        fleet.start()
    except FleetError as e:
        raise CommandError(str(e)) from None
    client = f".venv/bin/python -m engine client --endpoint {layout.host}:{layout.front_port}"
    print(
        f"\nthe fleet serves on {layout.host}:{layout.front_port} (HAProxy) with nodes on "
        f"{', '.join(str(p) for p in layout.node_ports)} and Redis on {layout.redis_port}; "
        f"logs in {directory / 'fleet'}\n"
        f"  {client} try --wallets {directory}/wallets.essc\n"
        "  make load        (through HAProxy)\n"
        "stop with Ctrl-C\n",
        flush=True,
    )
    try:
        while not stop.wait(1.0):
            for k, node in enumerate(fleet.nodes):
                if node is not None and node.poll() is not None:
                    raise CommandError(f"node {k + 1} exited with {node.returncode}")
    finally:
        fleet.stop()
    return 0


def _stop_progress_monitor() -> None:
    """Ends tqdm's monitor thread (started by the progress bars of making the demo): a
    supervisor forks its workers, which is only safe in a process with one thread."""
    from tqdm import tqdm

    monitor = tqdm.monitor
    if monitor is not None:
        monitor.exit()  # type: ignore[no-untyped-call]


def _demo_announcement(cfg: Config, demo: str) -> Callable[[int, int | None], None]:
    """What ``--demo`` prints once it serves: where, and commands to try it with."""

    def announce(port: int, metrics_port: int | None) -> None:
        client = f".venv/bin/python -m engine client --endpoint {cfg.server.host}:{port}"
        print(
            f"\nserving the demo on {cfg.server.host}:{port}; metrics on "
            f"http://{cfg.metrics.host}:{metrics_port}/metrics\n"
            "try it from another terminal:\n"
            f"  {client} try --wallets {demo}/wallets.essc\n"
            f"  {client} status\n"
            "stop with Ctrl-C (drains in-flight requests, exits 0)\n",
            flush=True,
        )

    return announce


def _client(args: argparse.Namespace) -> int:
    from engine.wire.pool import Endpoint

    ctx = _tls_context(args)
    endpoints = []
    for item in args.endpoints or ["127.0.0.1:7700"]:
        for text in item.split(","):
            try:
                endpoints.append(Endpoint.parse(text, ctx))
            except ValueError:
                raise CommandError(f"--endpoint {text!r}: expected HOST:PORT") from None
    if args.connections < 1 or args.retries < 0 or not args.deadline_ms > 0:
        raise CommandError("--connections >= 1, --retries >= 0 and --deadline-ms > 0 expected")
    return asyncio.run(_client_main(args, endpoints))


def _tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not (args.tls_ca or args.tls_cert):
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=args.tls_ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if args.tls_cert:
            ctx.load_cert_chain(args.tls_cert, args.tls_key)
    except ssl.SSLError as e:
        raise CommandError(f"--tls-cert {args.tls_cert}: {e}") from None
    return ctx


def _presentations(files: list[str]) -> tuple[list[bytes], list[str]]:
    batch, labels = [], []
    for name in files:
        if name != "-":
            batch.append(pathlib.Path(name).read_bytes())
            labels.append(name)
            continue
        for n, line in enumerate(sys.stdin, 1):
            if line.strip():
                try:
                    batch.append(bytes.fromhex(line.strip()))
                except ValueError:
                    raise CommandError(f"stdin line {n}: not a hex presentation") from None
                labels.append(f"stdin:{n}")
    if not batch:
        raise CommandError("no presentations given")
    return batch, labels


async def _client_main(args: argparse.Namespace, endpoints: list[Endpoint]) -> int:
    from engine.wire.pool import FleetClient

    fleet = FleetClient(
        endpoints,
        connections=args.connections,
        deadline=args.deadline_ms / 1000,
        retries=args.retries,
    )
    async with fleet:
        if args.what == "ping":
            start = time.perf_counter()
            await fleet.request(proto.PING)
            print(f"pong in {(time.perf_counter() - start) * 1000:.2f} ms")
            return 0
        if args.what == "status":
            print(json.dumps((await fleet.request(proto.STATUS))["status"], indent=2))
            return 0
        if args.what == "revocation-check":
            from engine.revocation.input import parse_id

            parsed = [parse_id(item) for item in args.ids]
            answer = await fleet.request(
                proto.REVOCATION_CHECK,
                cards=[v.decode("ascii") for k, v in parsed if k == CARD],
                credentials=[v for k, v in parsed if k == CREDENTIAL],
            )
            answers = {CARD: iter(answer["cards"]), CREDENTIAL: iter(answer["credentials"])}
            for item, (kind, _) in zip(args.ids, parsed):
                print(f"{item}: {'REVOKED' if next(answers[kind]) else 'not revoked'}")
            return 0
        if args.what == "verify":
            batch, labels = _presentations(args.files)
        else:
            batch, labels = _fresh_presentations(args.wallets, args.count)
        results = await fleet.verify_batch(batch)
        if fleet.counters.answered == 0:  # no server reached: that is no answer at all
            raise CommandError(results[0].reason or "no server answered")
        for label, r in zip(labels, results):
            detail = r.reason or ""
            if r.claims:
                detail = f"card {r.claims['card_number']} region {r.claims['region']}"
            if r.repeat:
                detail += " (repeat: a retry of a presentation this network already had OK)"
            print(f"{label}: {r.verdict.name} ({int(r.verdict)}) {detail}")
        return 0 if all(r.verdict == 0 for r in results) else 1


def _fresh_presentations(path: str, count: int) -> tuple[list[bytes], list[str]]:
    import itertools

    from engine.formats import wallets
    from engine.tools import holder

    chosen = list(itertools.islice(wallets.read(path), count))
    if not chosen:
        raise CommandError(f"{path}: no wallets")
    out = [holder.present(w.credential, w.holder_seed) for w in chosen]
    return out, [f"wallet {i}" for i in range(len(out))]
