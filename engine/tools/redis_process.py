"""redis-server as a child process, the way the fleet runs it: standalone or a Cluster
of masters on loopback, no persistence, ``maxmemory-policy noeviction`` (a full Redis
answers errors, never forgets a nonce), always stopped.  `make fleet`
(engine/tools/fleet.py), the tests (tests/realservers.py) and the benchmarks
(bench/compare_fleet.py) all run Redis through this module.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import socket
import subprocess
from collections.abc import Iterator, Sequence

import hiredis

from engine.redis_replay.resp import pack
from engine.tools.processes import ProcessError, die_with_parent, find_program, free_port
from engine.tools.processes import wait_until as _wait_until

CLK_TCK = os.sysconf("SC_CLK_TCK")
MARKERS = "essc:marker*"  # the replay store's marker keys (engine/redis_replay/store.py)


class RedisProcess:
    """One redis-server on ``host:port`` (port None: a free one; ``prefix``: a command it
    runs under, such as taskset).  ``kill()`` ends it at once, as a crash does;
    ``start()`` again brings it back on the same port with no data."""

    def __init__(
        self,
        workdir: pathlib.Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        cluster: bool = False,
        prefix: Sequence[str] = (),
        extra: Sequence[str] = (),
    ):
        self.binary = find_program("redis-server")
        self.host = host
        self.port = port or free_port(host)
        # The cluster bus would be port + 10000 by default: any free port instead.
        self.bus_port = free_port(host) if cluster else 0
        self.workdir = workdir
        self.cluster = cluster
        self.prefix = list(prefix)
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 20.0) -> RedisProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            "--bind", self.host,
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--maxmemory-policy", "noeviction",
            "--dir", str(self.workdir),
            "--protected-mode", "no",
            "--loglevel", "warning",
            "--logfile", str(self.workdir / "redis.log"),
        ]  # fmt: skip
        if self.cluster:
            with contextlib.suppress(FileNotFoundError):
                (self.workdir / "nodes.conf").unlink()
            args += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(self.workdir / "nodes.conf"),
                "--cluster-node-timeout", "2000",
                "--cluster-port", str(self.bus_port),
            ]  # fmt: skip
        self.proc = subprocess.Popen(
            [*self.prefix, *args, *self.extra],
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # stopped as a group (a taskset prefix included)
            preexec_fn=die_with_parent,
        )
        _wait_until(self._answers, timeout, f"redis-server on {self.address}")
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            log = self.workdir / "redis.log"
            text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise ProcessError(f"redis-server exited with {self.proc.returncode}: {text}")
        try:
            return self.command_raw("PING") == b"PONG"
        except OSError:
            return False

    def command_raw(self, *args: str | bytes) -> object:
        """One command over a fresh connection (set-up and checks, never timed); the
        reply as hiredis gives it (bytes, int, list, None)."""
        reader = hiredis.Reader()
        with socket.create_connection((self.host, self.port), timeout=30) as s:
            s.sendall(pack(*(a.encode() if isinstance(a, str) else a for a in args)))
            while (reply := reader.gets()) is False:
                data = s.recv(65536)
                if not data:
                    raise ConnectionError("redis closed the connection")
                reader.feed(data)
        return reply

    def info(self, section: str) -> dict[str, str]:
        text = self.command_raw("INFO", section)
        assert isinstance(text, bytes)
        return dict(line.split(":", 1) for line in text.decode().splitlines() if ":" in line)

    def cpu_s(self) -> float:
        """User + system CPU seconds of the redis-server process."""
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def empty_keeping_markers(self) -> None:
        """Drops every key but the replay store's markers (between benchmark rounds, so
        memory stays bounded): the store sees its markers unchanged, no loss."""
        names = self.command_raw("KEYS", MARKERS)
        assert isinstance(names, list)
        values = [self.command_raw("GET", n) for n in names]
        self.command_raw("FLUSHALL", "SYNC")
        for n, v in zip(names, values):
            if isinstance(v, bytes):
                self.command_raw("SET", n, v)

    def kill(self) -> None:
        """SIGKILL: a crash; everything it held is gone."""
        self._signal_group(signal.SIGKILL)

    def stop(self) -> None:
        self._signal_group(signal.SIGTERM)

    def _signal_group(self, sig: signal.Signals) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None


class RedisClusterProcesses:
    """``masters`` redis-server nodes in Cluster mode, slots spread evenly, formed without
    redis-cli (CLUSTER ADDSLOTSRANGE, then MEET) and waited for until every node reports
    ``cluster_state:ok``."""

    node_type: type[RedisProcess] = RedisProcess

    def __init__(self, workdir: pathlib.Path, masters: int = 3, prefix: Sequence[str] = ()):
        self.nodes = [
            self.node_type(workdir / f"node{k}", cluster=True, prefix=prefix)
            for k in range(masters)
        ]

    @property
    def seeds(self) -> list[str]:
        return [n.address for n in self.nodes]

    def start(self, timeout: float = 30.0) -> RedisClusterProcesses:
        for node in self.nodes:
            node.start()
        per = 16384 // len(self.nodes)
        for k, node in enumerate(self.nodes):
            lo = k * per
            hi = 16383 if k == len(self.nodes) - 1 else lo + per - 1
            reply = node.command_raw("CLUSTER", "ADDSLOTSRANGE", str(lo), str(hi))
            if reply != b"OK":
                raise ProcessError(f"CLUSTER ADDSLOTSRANGE on {node.address}: {reply!r}")
        first = self.nodes[0]
        for node in self.nodes[1:]:
            reply = first.command_raw(
                "CLUSTER", "MEET", node.host, str(node.port), str(node.bus_port)
            )
            if reply != b"OK":
                raise ProcessError(f"CLUSTER MEET {node.address}: {reply!r}")
        _wait_until(self._ok, timeout, "cluster_state:ok on every node")
        return self

    def _ok(self) -> bool:
        for node in self.nodes:
            info = node.command_raw("CLUSTER", "INFO")
            if not isinstance(info, bytes) or b"cluster_state:ok" not in info:
                return False
            if b"cluster_known_nodes:%d" % len(self.nodes) not in info:
                return False
        return True

    def cpu_s(self) -> float:
        return sum(n.cpu_s() for n in self.nodes)

    def empty_keeping_markers(self) -> None:
        for n in self.nodes:
            n.empty_keeping_markers()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@contextlib.contextmanager
def redis_server(workdir: pathlib.Path, prefix: Sequence[str] = ()) -> Iterator[RedisProcess]:
    server = RedisProcess(workdir, prefix=prefix)
    try:
        yield server.start()
    finally:
        server.stop()


@contextlib.contextmanager
def redis_cluster(
    workdir: pathlib.Path, masters: int = 3, prefix: Sequence[str] = ()
) -> Iterator[RedisClusterProcesses]:
    cluster = RedisClusterProcesses(workdir, masters, prefix)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
