"""redis-server for the benchmarks: standalone or a Cluster of masters, on free loopback
ports, no persistence, ``noeviction``, always stopped (the approach of
tests/realservers.py, without pytest: the benchmarks do not import from tests/).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence

import hiredis

CLK_TCK = os.sysconf("SC_CLK_TCK")


def redis_binary() -> str | None:
    return shutil.which("redis-server") or next(
        (p for p in ("/usr/sbin/redis-server", "/usr/bin/redis-server") if os.path.exists(p)),
        None,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


class RedisProcess:
    """One redis-server on 127.0.0.1 (``prefix``: a command it runs under, e.g. taskset)."""

    def __init__(
        self,
        workdir: pathlib.Path,
        *,
        cluster: bool = False,
        prefix: Sequence[str] = (),
        extra: Sequence[str] = (),
    ):
        binary = redis_binary()
        if binary is None:
            raise RuntimeError("redis-server is not installed (Debian package redis-server)")
        self.binary = binary
        self.port = free_port()
        self.bus_port = free_port() if cluster else 0
        self.workdir = workdir
        self.cluster = cluster
        self.prefix = list(prefix)
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            "--bind", "127.0.0.1",
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
            [*self.prefix, *args, *self.extra], stdin=subprocess.DEVNULL, start_new_session=True
        )
        _wait(self._answers, 20, f"redis-server on port {self.port}")
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            log = self.workdir / "redis.log"
            text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {text}")
        try:
            return self.command("PING") == b"PONG"
        except OSError:
            return False

    def command(self, *args: str | bytes) -> object:
        """One command over a fresh connection (set-up and checks, never timed)."""
        reader = hiredis.Reader()
        parts = [a.encode() if isinstance(a, str) else a for a in args]
        out = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            s.sendall(out)
            while (reply := reader.gets()) is False:
                data = s.recv(65536)
                if not data:
                    raise ConnectionError("redis closed the connection")
                reader.feed(data)
        return reply

    def info(self, section: str) -> dict[str, str]:
        text = self.command("INFO", section)
        assert isinstance(text, bytes)
        return dict(line.split(":", 1) for line in text.decode().splitlines() if ":" in line)

    def cpu_s(self) -> float:
        """User + system CPU seconds of the redis-server process."""
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def empty_keeping_markers(self) -> None:
        """Drops every key but the replay store's markers (between timed rounds, so that
        memory stays bounded): the store then sees its marker unchanged, no loss."""
        names = self.command("KEYS", "essc:marker*")
        assert isinstance(names, list)
        values = [self.command("GET", n) for n in names]
        self.command("FLUSHALL", "SYNC")
        for n, v in zip(names, values):
            if isinstance(v, bytes):
                self.command("SET", n, v)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None


class RedisClusterProcesses:
    """``masters`` redis-server nodes in Cluster mode, slots spread evenly, waited for
    until every node reports ``cluster_state:ok``."""

    def __init__(self, workdir: pathlib.Path, masters: int = 3, prefix: Sequence[str] = ()):
        self.nodes = [
            RedisProcess(workdir / f"node{k}", cluster=True, prefix=prefix) for k in range(masters)
        ]

    @property
    def seeds(self) -> list[str]:
        return [n.address for n in self.nodes]

    def start(self) -> RedisClusterProcesses:
        for node in self.nodes:
            node.start()
        per = 16384 // len(self.nodes)
        for k, node in enumerate(self.nodes):
            lo = k * per
            hi = 16383 if k == len(self.nodes) - 1 else lo + per - 1
            assert node.command("CLUSTER", "ADDSLOTSRANGE", str(lo), str(hi)) == b"OK"
        for node in self.nodes[1:]:
            reply = self.nodes[0].command(
                "CLUSTER", "MEET", "127.0.0.1", str(node.port), str(node.bus_port)
            )
            assert reply == b"OK", reply
        _wait(self._ok, 30, "cluster_state:ok on every node")
        return self

    def _ok(self) -> bool:
        for node in self.nodes:
            info = node.command("CLUSTER", "INFO")
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
