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

import dataclasses
import os
import pathlib
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence

from engine.redis_replay.store import init_store
from engine.tools.haproxy_process import SERVERS as SERVER_NAMES
from engine.tools.haproxy_process import HAProxyProcess
from engine.tools.processes import ProcessError, die_with_parent, free_ports, wait_until
from engine.tools.redis_process import RedisProcess

FleetError = ProcessError  # what start and stop raise

# The health check's request and the engine's answer (deploy/haproxy.cfg).
PING = bytes.fromhex("0000000f82a2696401a474797065a470696e67")
PONG = bytes.fromhex("0000000b82a2696401a4706f6e67c3")
# A PROXY protocol v2 LOCAL header (a connection of the balancer's own, as its health
# checks send): the nodes take PROXY headers from the fleet's host, so pings carry one.
PROXY_LOCAL = b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20, 0x00, 0x00, 0x00])


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
    check_inter: str = "1s"
    agent_inter: str = "500ms"

    @classmethod
    def free(cls, nodes: int = 3) -> FleetLayout:
        """Free loopback ports for everything, all distinct (short check intervals:
        tests)."""
        p = free_ports(2 + 3 * nodes)
        return cls(
            front_port=p[0],
            node_ports=tuple(p[2 : 2 + nodes]),
            agent_ports=tuple(p[2 + nodes : 2 + 2 * nodes]),
            metrics_ports=tuple(p[2 + 2 * nodes :]),
            redis_port=p[1],
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
        self.redis: RedisProcess | None = None
        self.nodes: list[subprocess.Popen[bytes] | None] = [None] * len(layout.node_ports)
        self.haproxy: HAProxyProcess | None = None
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
        if self.haproxy is not None:
            self.haproxy.stop()
            self.haproxy = None
        for k in range(len(self.nodes)):
            self.stop_node(k)
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    @property
    def server_names(self) -> tuple[str, ...]:
        return SERVER_NAMES[: len(self.nodes)]

    # --- Redis --------------------------------------------------------------------------

    def start_redis(self, timeout: float = 30.0) -> None:
        lay = self.layout
        self.redis = RedisProcess(self.workdir / "redis", host=lay.host, port=lay.redis_port)
        self.redis.start(timeout)

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
                preexec_fn=die_with_parent,
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

    def start_haproxy(self, timeout: float = 30.0) -> None:
        lay = self.layout
        self.haproxy = HAProxyProcess(
            self.workdir / "haproxy",
            list(zip(lay.node_ports, lay.agent_ports)),
            host=lay.host,
            port=lay.front_port,
            check_inter=lay.check_inter,
            agent_inter=lay.agent_inter,
        )
        self.haproxy.start(timeout)

    def status(self) -> dict[str, str]:
        """The balancer's view of each node: UP, DOWN, DRAIN, ... (``show stat``)."""
        assert self.haproxy is not None, "the balancer is not running"
        return {k: v for k, v in self.haproxy.status().items() if k in self.server_names}

    def wait_status(self, want: dict[str, str], timeout: float = 30.0) -> None:
        assert self.haproxy is not None, "the balancer is not running"
        self.haproxy.wait_status(want, timeout)


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
