"""Real servers for the fleet's tests: redis-server (standalone and Cluster), HAProxy
and nginx (a static publication directory over HTTP), started on free loopback ports
with no persistence, and always stopped.

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
import socket
import time
from collections.abc import Iterator

import pytest

from engine.tools.nginx_process import NginxProcess
from engine.tools.redis_process import RedisClusterProcesses, RedisProcess

# Package that provides each program (for the message).
PACKAGES = {
    "redis-server": "redis-server",
    "redis-cli": "redis-tools",
    "haproxy": "haproxy",
    "nginx": "nginx",
    "promtool": "prometheus",
}


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


class RedisServer(RedisProcess):
    """One redis-server on 127.0.0.1 (engine.tools.redis_process), skipped (failed under
    CI) where the machine has none; ``command`` answers bytes as str."""

    def __init__(self, workdir: pathlib.Path, port: int | None = None, **kwargs):
        require_program("redis-server")
        super().__init__(workdir, port=port, **kwargs)

    def command(self, *args: str | bytes) -> object:
        """One command over a fresh connection (for set-up and checks)."""
        reply = self.command_raw(*args)
        return reply.decode() if isinstance(reply, bytes) else reply


class RedisCluster(RedisClusterProcesses):
    """A 3-master Redis Cluster of RedisServer nodes."""

    node_type = RedisServer


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
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


class NginxServer(NginxProcess):
    """nginx serving a directory (engine.tools.nginx_process), skipped (failed under CI)
    where the machine has none."""

    def __init__(self, workdir: pathlib.Path, root: pathlib.Path, **kwargs):
        require_program("nginx")
        super().__init__(workdir, root, **kwargs)


@contextlib.contextmanager
def nginx_server(workdir: pathlib.Path, root: pathlib.Path, **kwargs) -> Iterator[NginxServer]:
    with NginxServer(workdir, root, **kwargs) as server:
        yield server
