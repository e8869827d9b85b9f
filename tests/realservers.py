"""Real servers for the fleet's tests: redis-server (standalone and Cluster) and HAProxy,
started on free loopback ports with no persistence, and always stopped.

The programs come from Debian packages that ``scripts/require-packages.sh`` installs
(`make test` runs it).  Where a machine cannot provide one, ``require_program`` skips
the test with the reason, and fails it instead under CI (``CI=true``): CI must run
what these tests check.
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

import pytest

# Package that provides each program (for the message).
PACKAGES = {"redis-server": "redis-server", "redis-cli": "redis-tools", "haproxy": "haproxy"}


def require_program(name: str) -> str:
    """The path of program ``name``; skips (fails under CI) where it is missing."""
    path = shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/usr/bin") if (p := pathlib.Path(d, name)).exists()),
        None,
    )
    if path is None:
        why = (
            f"{name} is not installed (Debian package {PACKAGES.get(name, name)}; "
            "scripts/require-packages.sh installs it, as root)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.01, what: str = "") -> None:
    """Polls ``predicate`` until it is true (a condition, not a sleep: it returns as soon
    as the condition holds, and fails with ``what`` when it never does)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(interval)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


class RedisServer:
    """One redis-server on 127.0.0.1:port: no persistence, noeviction, in ``workdir``.

    ``kill()`` ends it at once (SIGKILL: what a crash looks like); ``start()`` again
    brings it back on the same port with empty data (a restart that lost everything).
    """

    def __init__(
        self,
        workdir: pathlib.Path,
        port: int | None = None,
        *,
        cluster: bool = False,
        extra: Sequence[str] = (),
    ):
        self.binary = require_program("redis-server")
        self.port = port or free_port()
        self.workdir = workdir
        self.cluster = cluster
        self.extra = list(extra)
        self.bus_port = free_port() if cluster else 0
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
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
            args += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(self.workdir / "nodes.conf"),
                "--cluster-node-timeout", "2000",
                # The bus port would be port + 10000 by default: any free one instead.
                "--cluster-port", str(self.bus_port),
            ]  # fmt: skip
            with contextlib.suppress(FileNotFoundError):
                (self.workdir / "nodes.conf").unlink()
        self.proc = subprocess.Popen(args + self.extra, stdin=subprocess.DEVNULL)
        wait_for(self._answers, what=f"redis-server on port {self.port}")
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(
                f"redis-server exited with {self.proc.returncode}: "
                + (self.workdir / "redis.log").read_text(errors="replace")
            )
        try:
            return self.command("PING") == "PONG"
        except OSError:
            return False

    def command(self, *args: str | bytes) -> object:
        """One command over a fresh connection (for set-up and checks)."""
        import hiredis

        reader = hiredis.Reader()
        parts = [a.encode() if isinstance(a, str) else a for a in args]
        out = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(out)
            while (reply := reader.gets()) is False:
                data = s.recv(65536)
                if not data:
                    raise ConnectionError("redis closed the connection")
                reader.feed(data)
        if isinstance(reply, bytes):
            return reply.decode()
        return reply

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


class RedisCluster:
    """``masters`` redis-server nodes in Cluster mode, slots spread evenly, waited for
    until every node reports ``cluster_state:ok``."""

    def __init__(self, workdir: pathlib.Path, masters: int = 3):
        self.nodes = [RedisServer(workdir / f"node{k}", cluster=True) for k in range(masters)]

    @property
    def seeds(self) -> list[str]:
        return [n.address for n in self.nodes]

    def start(self) -> RedisCluster:
        for node in self.nodes:
            node.start()
        # Slots first (each node its own range), then the nodes meet: the cluster is
        # formed without redis-cli's interactive tooling.
        per = 16384 // len(self.nodes)
        for k, node in enumerate(self.nodes):
            lo = k * per
            hi = 16383 if k == len(self.nodes) - 1 else lo + per - 1
            assert node.command("CLUSTER", "ADDSLOTSRANGE", str(lo), str(hi)) == "OK"
        for node in self.nodes[1:]:
            assert (
                self.nodes[0].command(
                    "CLUSTER", "MEET", "127.0.0.1", str(node.port), str(node.bus_port)
                )
                == "OK"
            )
        wait_for(self._ok, timeout=30, interval=0.05, what="cluster_state:ok on every node")
        return self

    def _ok(self) -> bool:
        for node in self.nodes:
            info = node.command("CLUSTER", "INFO")
            if not isinstance(info, str) or "cluster_state:ok" not in info:
                return False
            if f"cluster_known_nodes:{len(self.nodes)}" not in info:
                return False
        return True

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@contextlib.contextmanager
def redis_server(workdir: pathlib.Path) -> Iterator[RedisServer]:
    server = RedisServer(workdir).start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def redis_cluster(workdir: pathlib.Path, masters: int = 3) -> Iterator[RedisCluster]:
    cluster = RedisCluster(workdir, masters)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
