"""A whole fleet on one machine: a Redis (the shared replay store), engine nodes and
HAProxy in front, each a real process on loopback (`make fleet`; the fleet tests).

    fleet = Fleet(config, FleetLayout())      # config: an engine TOML (the demo's)
    fleet.start()                             # Redis, its marker, the nodes, HAProxy
    ... clients connect to 127.0.0.1:7700 ...
    fleet.restart_node(1)                     # SIGTERM (drain), then start it again
    fleet.stop()

The nodes run ``python -m engine serve --config FILE`` with what the fleet needs on
top (docs/DEPLOYMENT.md): their own port, agent port and metrics port, the PROXY
protocol from the balancer, and ``replay.redis_url``.  HAProxy runs the shipped
``deploy/haproxy.cfg`` unchanged, its addresses given through FLEET_* variables.
Redis runs without persistence and with ``maxmemory-policy noeviction``: a full
Redis answers errors (BUSY), never forgets a nonce.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from engine.redis_replay.store import init_store

# deploy/haproxy.cfg of the source tree this module belongs to.
HAPROXY_CFG = pathlib.Path(__file__).resolve().parents[2] / "deploy" / "haproxy.cfg"
BACKEND = "essc"
SERVER_NAMES = ("e1", "e2", "e3")  # the backend's servers in deploy/haproxy.cfg
# The health check's request and the engine's answer (deploy/haproxy.cfg).
PING = bytes.fromhex("0000000f82a2696401a474797065a470696e67")
PONG = bytes.fromhex("0000000b82a2696401a4706f6e67c3")
# A PROXY protocol v2 LOCAL header (a connection of the balancer's own, as its health
# checks send): the nodes take PROXY headers from the fleet's host, so pings carry one.
PROXY_LOCAL = b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20, 0x00, 0x00, 0x00])


class FleetError(Exception):
    """A part of the fleet did not start or stop as it should; the message says which."""


def find_program(name: str) -> str:
    path = shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/usr/bin") if (p := pathlib.Path(d, name)).exists()),
        None,
    )
    if path is None:
        raise FleetError(
            f"{name} is not installed: scripts/require-packages.sh redis-server haproxy "
            "installs it (make fleet runs it)"
        )
    return path


def wait_until(ok: Callable[[], bool], timeout: float, what: str) -> None:
    """Polls ``ok`` until it holds (returns at once when it does); FleetError after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise FleetError(f"timed out waiting for {what}")
        time.sleep(0.02)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def pings(host: str, port: int, *, proxy_header: bool = False) -> bool:
    """Whether an engine answers the health check's ping with its pong (``proxy_header``:
    behind a LOCAL PROXY header, as the balancer sends it)."""
    try:
        with socket.create_connection((host, port), timeout=1) as s:
            s.sendall((PROXY_LOCAL if proxy_header else b"") + PING)
            got = b""
            while len(got) < len(PONG):
                chunk = s.recv(64)
                if not chunk:
                    return False
                got += chunk
            return got == PONG
    except OSError:
        return False


@dataclasses.dataclass(frozen=True)
class FleetLayout:
    """Every address of the fleet (``make fleet``'s defaults; tests pass free ports)."""

    host: str = "127.0.0.1"
    front_port: int = 7700
    node_ports: tuple[int, ...] = (7701, 7702, 7703)
    agent_ports: tuple[int, ...] = (7711, 7712, 7713)
    metrics_ports: tuple[int, ...] = (9701, 9702, 9703)
    redis_port: int = 7720
    stats_socket: str = ""  # HAProxy's admin socket; empty: in the fleet's directory
    check_inter: str = "1s"
    agent_inter: str = "500ms"

    @classmethod
    def free(cls, nodes: int = 3) -> FleetLayout:
        """Free loopback ports for everything (short check intervals: tests)."""
        return cls(
            front_port=free_port(),
            node_ports=tuple(free_port() for _ in range(nodes)),
            agent_ports=tuple(free_port() for _ in range(nodes)),
            metrics_ports=tuple(free_port() for _ in range(nodes)),
            redis_port=free_port(),
            check_inter="200ms",
            agent_inter="100ms",
        )

    @property
    def redis_url(self) -> str:
        return f"redis://{self.host}:{self.redis_port}/0"


class Fleet:
    """Redis, ``len(layout.node_ports)`` engine nodes (at most 3: the shipped
    HAProxy configuration's servers) and HAProxy, as child processes."""

    def __init__(
        self,
        config: pathlib.Path,
        layout: FleetLayout,
        workdir: pathlib.Path,
        *,
        settings: Sequence[str] = (),
        python: str = sys.executable,
        env: dict[str, str] | None = None,
    ):
        if not 1 <= len(layout.node_ports) <= len(SERVER_NAMES):
            raise FleetError(f"1 to {len(SERVER_NAMES)} nodes (deploy/haproxy.cfg's servers)")
        self.config = config
        self.layout = layout
        self.workdir = workdir
        self.settings = list(settings)
        self.python = python
        self.env = {**os.environ, **(env or {})}
        self.redis: subprocess.Popen[bytes] | None = None
        self.nodes: list[subprocess.Popen[bytes] | None] = [None] * len(layout.node_ports)
        self.haproxy: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    # --- the whole fleet ----------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        try:
            self.start_redis(timeout)
            init_store(redis_url=self.layout.redis_url)
            for k in range(len(self.nodes)):
                self.start_node(k, wait=False)
            for k in range(len(self.nodes)):
                self.wait_node(k, timeout)
            self.start_haproxy(timeout)
            self.wait_status({name: "UP" for name in self.server_names}, timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Every process, the balancer first (no new connections), then the nodes
        (each drains), then Redis."""
        _terminate(self.haproxy)
        self.haproxy = None
        for k in range(len(self.nodes)):
            self.stop_node(k)
        _terminate(self.redis)
        self.redis = None

    @property
    def server_names(self) -> tuple[str, ...]:
        return SERVER_NAMES[: len(self.nodes)]

    # --- Redis --------------------------------------------------------------------------

    def start_redis(self, timeout: float = 30.0) -> None:
        lay = self.layout
        args = [
            find_program("redis-server"),
            "--bind", lay.host,
            "--port", str(lay.redis_port),
            "--save", "",
            "--appendonly", "no",
            "--maxmemory-policy", "noeviction",
            "--protected-mode", "no",
            "--dir", str(self.workdir),
            "--logfile", str(self.workdir / "redis.log"),
        ]  # fmt: skip
        self.redis = subprocess.Popen(args, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        wait_until(
            lambda: _alive(self.redis, "redis-server") and _connects(lay.host, lay.redis_port),
            timeout,
            f"redis-server on {lay.host}:{lay.redis_port}",
        )

    # --- engine nodes -------------------------------------------------------------------

    def node_args(self, k: int) -> list[str]:
        lay = self.layout
        sets = [
            f"server.host={lay.host}",
            f"server.port={lay.node_ports[k]}",
            f"server.agent_port={lay.agent_ports[k]}",
            f"server.proxy_protocol_from={lay.host}",
            f"metrics.host={lay.host}",
            f"metrics.port={lay.metrics_ports[k]}",
            f"replay.redis_url={lay.redis_url}",
            *self.settings,
        ]
        args = [self.python, "-m", "engine", "serve", "--config", str(self.config)]
        for s in sets:
            args += ["--set", s]
        return args

    def start_node(self, k: int, *, wait: bool = True, timeout: float = 60.0) -> None:
        log = open(self.workdir / f"node{k + 1}.log", "ab")  # noqa: SIM115 (the child owns it)
        try:
            self.nodes[k] = subprocess.Popen(
                self.node_args(k),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self.env,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()
        if wait:
            self.wait_node(k, timeout)

    def wait_node(self, k: int, timeout: float = 60.0) -> None:
        lay = self.layout
        wait_until(
            lambda: (
                _alive(self.nodes[k], f"node {k + 1}", self.workdir / f"node{k + 1}.log")
                and pings(lay.host, lay.node_ports[k], proxy_header=True)
            ),
            timeout,
            f"engine node {k + 1} on {lay.host}:{lay.node_ports[k]}",
        )

    def stop_node(self, k: int, timeout: float = 60.0) -> int | None:
        """SIGTERM (the node drains: its agent says ``drain`` first); its exit status."""
        proc, self.nodes[k] = self.nodes[k], None
        return _terminate(proc, timeout)

    def kill_node(self, k: int) -> None:
        """SIGKILL: a crash, nothing answered, nothing drained."""
        proc, self.nodes[k] = self.nodes[k], None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)

    def restart_node(self, k: int, timeout: float = 60.0) -> None:
        """A rolling restart's step: drain and stop node k, start it again, and wait
        until the balancer has it UP."""
        status = self.stop_node(k, timeout)
        if status != 0:
            raise FleetError(f"node {k + 1} exited {status} on SIGTERM")
        self.start_node(k, timeout=timeout)
        self.wait_status({self.server_names[k]: "UP"}, timeout)

    # --- HAProxy ------------------------------------------------------------------------

    @property
    def stats_socket(self) -> pathlib.Path:
        return pathlib.Path(self.layout.stats_socket or self.workdir / "haproxy.sock")

    def start_haproxy(self, timeout: float = 30.0, config: pathlib.Path = HAPROXY_CFG) -> None:
        lay = self.layout
        env = dict(self.env)
        env.update(
            FLEET_BIND=f"{lay.host}:{lay.front_port}",
            FLEET_STATS_SOCKET=str(self.stats_socket),
            FLEET_CHECK_INTER=lay.check_inter,
            FLEET_AGENT_INTER=lay.agent_inter,
        )
        for k, name in enumerate(SERVER_NAMES):
            # Servers beyond the fleet's nodes point at a port nobody listens on: DOWN.
            port = lay.node_ports[k] if k < len(lay.node_ports) else free_port()
            agent = lay.agent_ports[k] if k < len(lay.agent_ports) else free_port()
            env[f"FLEET_{name.upper()}"] = f"{lay.host}:{port}"
            env[f"FLEET_{name.upper()}_AGENT"] = str(agent)
        log = open(self.workdir / "haproxy.log", "ab")  # noqa: SIM115 (the child owns it)
        try:
            self.haproxy = subprocess.Popen(
                [find_program("haproxy"), "-db", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()
        wait_until(
            lambda: (
                _alive(self.haproxy, "haproxy", self.workdir / "haproxy.log")
                and self.stats_socket.exists()
                and _connects(lay.host, lay.front_port)
            ),
            timeout,
            f"haproxy on {lay.host}:{lay.front_port}",
        )

    def haproxy_command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(self.stats_socket))
            s.sendall(line.encode() + b"\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return out.decode()

    def status(self) -> dict[str, str]:
        """The balancer's view of each node: UP, DOWN, DRAIN, ... (``show stat``)."""
        rows = csv.DictReader(io.StringIO(self.haproxy_command("show stat").lstrip("# ")))
        return {
            r["svname"]: r["status"]
            for r in rows
            if r["pxname"] == BACKEND and r["svname"] in self.server_names
        }

    def wait_status(self, want: dict[str, str], timeout: float = 30.0) -> None:
        seen: dict[str, str] = {}

        def ok() -> bool:
            seen.update(self.status())
            return all(seen.get(k, "").startswith(v) for k, v in want.items())

        wait_until(ok, timeout, f"haproxy status {want} (last seen {seen})")


def _die_with_parent() -> None:
    """In each child before exec: SIGTERM when the fleet's process dies, however it
    dies (Linux prctl PR_SET_PDEATHSIG), so no node or server outlives it."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _alive(
    proc: subprocess.Popen[bytes] | None, what: str, log: pathlib.Path | None = None
) -> bool:
    if proc is None or proc.poll() is not None:
        tail = ""
        if log is not None and log.exists():
            tail = ": " + log.read_text(errors="replace")[-2000:]
        code = None if proc is None else proc.returncode
        raise FleetError(f"{what} exited ({code}){tail}")
    return True


def _connects(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _terminate(proc: subprocess.Popen[bytes] | None, timeout: float = 60.0) -> int | None:
    if proc is None:
        return None
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode
